"""Three matchings: the Dense model each non-Dense arm is worth, by three yardsticks.

For each basis X the Dense ladder is fitted as L(X) = A·X^-alpha + b and every (arm, size)
reads its Dense-equivalent X_eff off that curve from its mean loss over seeds; the multiplier
is X_eff / X. Each answers its own question:
- params: X = total parameters, the paper's — what a memory budget buys;
- body: X = body parameters (all but the input table/LEV and the head) — is the gain in the
  architecture, or only parameters moved out of the table into depth. It answers that only when
  the Dense runs of the arms' body sizes trained on the arms' token counts: a ladder whose
  budgets follow total parameters (20·N_total) trains the Dense model of Leviathan's body on
  ~3x its tokens, so a body multiplier there mixes body with tokens. Such a family gets no body
  column, with the reason (`token_mismatch`); isobody and the factorized control answer it;
- compute: X = training FLOPs of the run (the platform's exact count), X_eff / X the compute
  multiplier — what the same training cost buys.
Intervals: every run's loss redrawn with run-to-run noise (analysis.readings.noise: from the sweep's
own seeds, per arm; or from a level given with fit.seed_noise / --noise-from) and refitted through
the Dense curve; with neither, case resampling of the Dense sizes, labelled "fit only (excludes
run-to-run noise)". An X_eff outside the fitted Dense points is marked `extrapolated`, with the
factor by which it lies outside; beyond EXTRAPOLATION it is not reported at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.laws.bootstrap import dense_draws, percentile_interval, resample_counts
from analysis.laws.extrapolation import EXTRAPOLATION
from analysis.laws.powerlaw import FitError, degenerate, fit_power_law, x_eff
from analysis.readings.noise import Noise, replicates

BASES = ("params", "body", "compute")
COLUMN = {"params": "params_total", "body": "params_body", "compute": "flops"}
LABEL = {"params": "total parameters", "body": "body parameters", "compute": "training compute"}
SOURCE = {"params": "params", "body": "body_params (MLflow n_params/body)",
          "compute": "flops (MLflow plan.flops_per_token x tokens)"}
LEAST_SQUARES = 1e9  # a Huber delta no log residual reaches: plain least squares
ROW_COLUMNS = ["arm", "size", "basis", "params", "x", "tokens", "loss", "n_seeds", "dense_loss",
               "n_eff", "n_eff_lo", "n_eff_hi", "multiplier", "multiplier_lo", "multiplier_hi",
               "interval", "extrapolated", "extrapolation", "b_min", "b_max", "multiplier_ls",
               "drop_min", "drop_max", "reason"]


@dataclass(frozen=True)
class Matching:
    rows: pd.DataFrame  # ROW_COLUMNS, one row per (arm, size, basis)
    interval: str  # "seeds" | "given" (run-to-run noise included) | "fit" (the fit's spread)
    noise: Noise = field(default_factory=lambda: Noise("fit"))  # where the noise came from
    fits: dict = field(default_factory=dict)  # basis -> Dense PowerLaw
    samples: dict = field(default_factory=dict)  # basis -> (R, 2) bootstrap (A, alpha)
    draws: dict = field(default_factory=dict)  # (basis, arm, size) -> (R,) multiplier samples
    off: dict = field(default_factory=dict)  # basis -> why it is switched off
    lack_of_fit: dict = field(default_factory=dict)  # basis -> {F, p, df_lof, df_pe}


def token_mismatch(dense: pd.DataFrame, arms: pd.DataFrame, tol: float) -> str | None:
    """Why the body matching cannot answer its question here (None when it can): the Dense
    ladder's token budget at each arm's body size (log tokens linear in log body over the Dense
    runs) differs from the arm's own tokens by more than `tol`."""
    db, dt = dense["params_body"].to_numpy(float), dense["tokens"].to_numpy(float)
    ab, at = arms["params_body"].to_numpy(float), arms["tokens"].to_numpy(float)
    ok, aok = (db > 0) & (dt > 0), (ab > 0) & (at > 0)  # NaN compares False
    if np.unique(db[ok]).size < 2 or not aok.any():
        return None
    slope, icpt = np.polyfit(np.log(db[ok]), np.log(dt[ok]), 1)
    ratio = np.exp(icpt + slope * np.log(ab[aok])) / at[aok]
    if np.abs(np.log(ratio)).max() <= math.log1p(tol):
        return None
    return (f"not token-matched: the Dense runs of the arms' body sizes trained on "
            f"{ratio.min():.2g}–{ratio.max():.2g}x the arms' tokens (the ladder's budgets follow "
            "total parameters), so a body multiplier would mix body with tokens; it needs a "
            "token-matched Dense fit (L(N_body, D) over a Dense N x D grid); isobody and the "
            "factorized control answer whether the gain is in the architecture")


def _range_fits(x, loss, sizes, b, cfg) -> dict:
    """Dense refits that show how a multiplier moves: 'b' (b over cfg.b_grid), 'ls' (least
    squares), 'drop' (each Dense size left out once). name -> list of PowerLaw."""
    out = {"b": [], "ls": [], "drop": []}

    def fit(mask, b_, delta):
        if np.unique(x[mask]).size >= 2:
            try:
                f = fit_power_law(x[mask], loss[mask], b=b_, delta=delta)
                return None if degenerate(f) else f
            except FitError:
                return None
        return None

    out["b"] = [fit(loss > bb, bb, cfg.delta) for bb in cfg.b_grid]
    out["ls"] = [fit(np.ones(x.size, bool), b, LEAST_SQUARES)]
    out["drop"] = [fit(sizes != s, b, cfg.delta) for s in np.unique(sizes)]
    return out


def pure_error(loss, groups) -> tuple[float, int]:
    """(SS, df) of log losses around their group means: the seeds' own scatter."""
    y = pd.Series(np.log(np.asarray(loss, float)))
    dev = y - y.groupby(np.asarray(groups)).transform("mean")
    sizes = pd.Series(np.asarray(groups)).value_counts()
    return float((dev ** 2).sum()), int((sizes - 1).sum())


def lack_of_fit(loss, sizes, fit, x, pe: tuple[float, int]) -> dict | None:
    """The classical lack-of-fit F test with replicates: the size means' scatter around the
    fitted Dense curve against the seeds' scatter (pure error, pooled over the family's arms).
    A small p: the power law in this basis does not fit within seed noise, and intervals made
    of seed noise understate how uncertain the multipliers are."""
    from scipy.special import fdtrc  # F survival function (scipy.stats imports slowly)

    ss_pe, df_pe = pe
    y = pd.Series(np.log(loss))
    g = pd.Series(np.asarray(sizes))
    mean, count = y.groupby(g).mean(), y.groupby(g).size()
    pred = pd.Series(np.log(fit.predict(x))).groupby(g).mean()
    df_lof = len(mean) - (2 if fit.b_fixed else 3)
    if df_lof < 1 or df_pe < 1 or ss_pe <= 0:
        return None
    f_stat = float((count * (mean - pred) ** 2).sum() / df_lof / (ss_pe / df_pe))
    return {"F": f_stat, "p": float(fdtrc(df_lof, df_pe, f_stat)), "df_lof": df_lof,
            "df_pe": df_pe}


def _spread(fits, loss, x) -> tuple[float, float]:
    vals = [float(f.inverse(loss)) / x for f in fits if f is not None]
    vals = [v for v in vals if np.isfinite(v)]
    return (min(vals), max(vals)) if vals else (math.nan, math.nan)


def _reason(loss, n_eff, fit, lo, hi) -> str:
    if not loss > fit.b:
        return f"loss {loss:.4f} <= b = {fit.b:.3g}: X_eff undefined"
    if degenerate(fit):
        return f"Dense fit degenerate (alpha = {fit.alpha:.3g}): no power law to read"
    if not np.isfinite(n_eff) or n_eff <= 0:
        return f"X_eff overflows (alpha = {fit.alpha:.3g}): the Dense fit does not reach this loss"
    if not lo / EXTRAPOLATION <= n_eff <= hi * EXTRAPOLATION:
        return (f"X_eff = {n_eff:.3g} is over {EXTRAPOLATION:g}x outside the Dense points "
                f"({lo:.3g}..{hi:.3g}): not extrapolated")
    return ""


def match_all(dense: pd.DataFrame, arms: pd.DataFrame, cfg, rng, lr_miss=None) -> Matching:
    """Every (arm, size) of `arms` against the Dense ladder `dense`, in every basis with data.

    dense, arms: usable runs of one family on the L(N) token budget (several seeds allowed);
    lr_miss: the LR model their losses were corrected by (its miss drawn in every replicate;
    None: fit.lr_miss's zero-mean miss on the runs whose lr_swept is false).
    """
    dense, arms = dense.reset_index(drop=True), arms.reset_index(drop=True)
    both = pd.concat([dense, arms], ignore_index=True)
    groups = (both["arm"] + "|" + both["size"]).to_numpy()
    reps, noise = replicates(both, cfg.seed_noise, cfg.bootstrap, rng,
                             cfg.lr_miss if lr_miss is None else lr_miss,
                             cfg.noise_model)
    nd = len(dense)
    fits, samples, draws_of, off, lof = {}, {}, {}, {}, {}
    counts = resample_counts(dense["size"].to_numpy(), cfg.bootstrap, rng) if reps is None \
        else np.ones((cfg.bootstrap, nd))
    pe = pure_error(both["loss"], groups)
    rows = []
    for basis in BASES:
        col = COLUMN[basis]
        dx = dense[col].to_numpy(float)
        ok = np.isfinite(dx) & (dx > 0)
        if np.unique(dx[ok]).size < 2:
            off[basis] = (f"needs {SOURCE[basis]} for two or more Dense sizes; found "
                              f"{np.unique(dx[ok]).size}")
            continue
        unmatched = token_mismatch(dense, arms, cfg.budget_tol) if basis == "body" else None
        if unmatched:
            off[basis] = unmatched
            continue
        x, loss, sizes = dx[ok], dense["loss"].to_numpy(float)[ok], dense["size"].to_numpy()[ok]
        try:
            fit = fit_power_law(x, loss, b=cfg.b, delta=cfg.delta)
        except FitError as err:
            off[basis] = str(err)
            continue
        fits[basis] = fit
        lof[basis] = lack_of_fit(loss, sizes, fit, x, pe)
        y = np.log(loss) if reps is None else np.log(reps[:, :nd][:, ok])
        samples[basis] = dense_draws(x, y, counts[:, ok], [fit.A, fit.alpha], fit.b,
                                         cfg.delta)
        a_s, alpha_s = samples[basis].T
        spread = _range_fits(x, loss, sizes, fit.b, cfg)
        lo_x, hi_x = float(x.min()), float(x.max())
        dense_loss = dense.groupby("size")["loss"].mean()
        ax = arms[col].to_numpy(float)
        for (arm, size), g in arms[np.isfinite(ax) & (ax > 0)].groupby(["arm", "size"],
                                                                       sort=False):
            gx = g[col].to_numpy(float)
            idx = nd + g.index.to_numpy()  # this group's columns in `reps`
            lbar, xbar = float(g["loss"].mean()), float(gx.mean())
            l_rep = lbar if reps is None else reps[:, idx].mean(axis=1)
            n_eff = float(fit.inverse(lbar))
            draws = x_eff(a_s, alpha_s, fit.b, l_rep) / xbar
            reason = _reason(lbar, n_eff, fit, lo_x, hi_x)
            lo, hi = percentile_interval(draws * xbar, cfg.level) if not reason else (
                math.nan, math.nan)
            far = max(n_eff / hi_x, lo_x / n_eff, 1.0) if np.isfinite(n_eff) and n_eff > 0 \
                else math.nan
            b_min, b_max = _spread(spread["b"], lbar, xbar)
            d_min, d_max = _spread(spread["drop"], lbar, xbar)
            rows.append({
                "arm": arm, "size": size, "basis": basis,
                "params": float(g["params_total"].mean()), "x": xbar,
                "tokens": float(g["tokens"].mean()), "loss": lbar, "n_seeds": len(g),
                "dense_loss": float(dense_loss.get(size, math.nan)),
                "n_eff": math.nan if reason else n_eff, "n_eff_lo": float(lo),
                "n_eff_hi": float(hi),
                "multiplier": math.nan if reason else n_eff / xbar,
                "multiplier_lo": float(lo) / xbar, "multiplier_hi": float(hi) / xbar,
                "interval": noise.source, "extrapolated": bool(far > 1.0) and not reason,
                "extrapolation": far, "b_min": b_min, "b_max": b_max,
                "multiplier_ls": _spread(spread["ls"], lbar, xbar)[0],
                "drop_min": d_min, "drop_max": d_max, "reason": reason})
            draws_of[(basis, arm, size)] = np.where(reason == "", draws, np.nan)
    return Matching(rows=pd.DataFrame(rows, columns=ROW_COLUMNS) if rows
                    else pd.DataFrame(columns=ROW_COLUMNS), interval=noise.source, noise=noise,
                    fits=fits, samples=samples, draws=draws_of, off=off, lack_of_fit=lof)
