"""The one simulator: synthetic runs from a stated truth (analysis.power.model.PowerModel).

Will the grid answer the question? Simulated ladders through the real analysis, before launch.

A design is its cells: one (arm, size) with its parameter count, seeds, LR variants and cost per
run (`Cell`, from a sweep plan or a candidate of the design search). A stated truth and noise
model (`PowerModel`: the grid's `power` defaults, overridable) makes M synthetic ladders at once:
Dense L(N) = b + A·N^-alpha; the control worth `control_worth` Dense parameters per parameter
and Leviathan `effect` times its control (the true LEV over its control); each run's loss times
(1 + curvature·(log2 LR - the arm's true optimum)^2) for its LR, times (1 + sigma_arm z) for its
seed. Each ladder then goes through the analysis's own pieces, all ladders and all bootstrap
replicates at once: the LR rule (analysis.readings.lr_selection.keep_batch), the run-to-run noise
(analysis.readings.noise.batch_replicates: the design's seeds, or with one seed the model's noise
level given as fit.seed_noise), the Dense refits (analysis.laws.bootstrap.dense_draws) and the
effective sizes (x_eff), by total parameters. Out come, per headline number (multiplier per arm and
size, LEV over its control per size and pooled), the truth, the median printed 95% half-width
(predicted), the empirical half-width of the estimates over the ladders (their sd times the level's
quantile of Student's t on the Welch-Satterthwaite degrees of freedom of the number's noise sources,
each arm's level and the Dense fit's, z for given levels: an interval whose noise is measured from
few seeds must be that much wider; the check: the two agree within 20%), the coverage of the printed
intervals, the bias, and the smallest effect the number detects (a true ratio that a 95% interval
excludes 1 for, 80% of the time: 2.8 standard errors).

The same truth draws a toy world's runs as a runs.csv table (`toy_world`, `data_world`: the worlds
and their ladders are analysis/power/worlds.py), for the analysis to read back what was put in.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.config import FIT_DELTA, lr_rule_miss
from analysis.laws.bootstrap import dense_draws, percentile_interval
from analysis.laws.lr_curve import correct_batch, run_factors
from analysis.laws.powerlaw import fit_power_law, x_eff
from analysis.power.model import CONTROL_ARMS, Cell, PowerModel
from analysis.power.worlds import (
    BASIS_COLUMN,
    DATA_B,
    DATA_BETA,
    WIDE_CONTROLS,
    data_ladder,
    shapes,
)
from analysis.readings.lr_selection import keep_batch, mean_over, pooled_choice
from analysis.readings.noise import batch_replicates

Z95, Z80 = 1.959964, 0.841621
POWER_COLUMNS = ["quantity", "arm", "size", "truth", "estimate", "half_width", "empirical",
                 "check", "coverage", "bias", "detectable", "interval"]


def _truth(cells: list[Cell], model: PowerModel) -> tuple[np.ndarray, float, dict, dict]:
    """Clean loss per cell, the Dense scale A, (arm, size) -> true multiplier N_eff / N, and
    size -> (N / the smallest paired size's N, its position 0..1 on the ladder by log N). Each
    arm is worth its factor (analysis.power.worlds.worth) of its size's Dense N, not of its own
    parameters: the truth of LEV over its control is the stated effect at every size, however
    many parameters the control has (dense_untied: 1.3-1.6x Leviathan's)."""
    from analysis.power.worlds import worth

    arms = {c.arm for c in cells}
    dense_n = {c.size: c.params for c in cells if c.arm == "dense"}
    paired = [dense_n[c.size] for c in cells if c.arm != "dense" and c.size in dense_n]
    n_min = min(paired) if paired else min(dense_n.values())
    span = math.log(max(dense_n.values()) / n_min) or 1.0
    where = {s: (n / n_min, math.log(n / n_min) / span) for s, n in dense_n.items()}
    a = model.scale(n_min)
    controls = arms & set(CONTROL_ARMS)
    true_x = [worth(c.arm, model, where[c.size][0], controls) * dense_n[c.size] for c in cells]
    clean = np.array([model.loss(x, a) for x in true_x])
    mult = {(c.arm, c.size): x / c.params for c, x in zip(cells, true_x, strict=True)}
    return clean, a, mult, where


def _simulate_kept(cells: list[Cell], model: PowerModel, rng: np.random.Generator):
    """(kept losses (M, n), arm per run, cell index per run): every run of every ladder after
    the LR rule (model.lr_estimator), seeds kept."""
    clean, _, _, where = _truth(cells, model)
    m = model.ladders
    grids, z = [], {}
    for i, c in enumerate(cells):
        rel, frac = where[c.size]
        opt = model.lr_offset(c.arm, frac) + model.lr_spread * rng.standard_normal((m, 1, 1))
        u = np.log2(np.asarray(c.lrs, float))[None, None, :] - opt  # (M, 1, K)
        level = clean[i] * (1.0 + model.lr_curvature * u ** 2)
        zi = rng.standard_normal((m, c.seeds, len(c.lrs)))
        lev = z.get(("leviathan", c.size))
        if c.arm in CONTROL_ARMS and lev is not None and model.seed_corr:  # a shared data order
            k, j = min(c.seeds, lev.shape[1]), min(len(c.lrs), lev.shape[2])
            zi[:, :k, :j] = model.seed_corr * lev[:, :k, :j] + math.sqrt(
                1 - model.seed_corr ** 2) * zi[:, :k, :j]
        z[(c.arm, c.size)] = zi
        grids.append(level * (1.0 + model.sd(c.arm, rel) * zi))
    keep = [keep_batch(g)[1] for g in grids]  # (M, S) each: the seed-mean rule
    if model.lr_estimator == "pooled":
        groups: dict = {}
        for i, c in enumerate(cells):
            if len(c.lrs) > 1:
                groups.setdefault((c.arm, c.lrs), []).append(i)
        for members in groups.values():
            if len(members) < 2:
                continue
            means = np.stack([mean_over(grids[i], np.arange(cells[i].seeds))
                              for i in members], axis=1)  # (M, P, K)
            for i, k in zip(members, np.moveaxis(pooled_choice(means), 1, 0), strict=True):
                keep[i] = np.repeat(k[:, None], cells[i].seeds, axis=1)
    losses = [np.take_along_axis(g, k[..., None], axis=-1)[..., 0]
              for g, k in zip(grids, keep, strict=True)]
    seeded = any(c.seeds >= 2 for c in cells)
    given = {} if seeded else {c.arm: model.sd(c.arm) for c in cells}
    fallback = lr_rule_miss(model.lr_curvature, model.lr_spread)  # an arm without a sweep
    losses, factors = correct_batch(grids, losses, cells, given, model.lr_spread, fallback,
                                    model.bootstrap, rng, model.lr_estimator)  # LR model
    arms = [c.arm for c in cells for _ in range(c.seeds)]
    cell_of = [i for i, c in enumerate(cells) for _ in range(c.seeds)]
    seed_of = [k for c in cells for k in range(c.seeds)]
    miss = run_factors(factors, [c.seeds for c in cells], model.ladders, model.bootstrap)
    return np.concatenate(losses, axis=1), *map(np.array, (arms, cell_of, seed_of)), miss


def simulate(cells: list[Cell], model: PowerModel, *, level: float = 0.95) -> pd.DataFrame:
    """The power table (POWER_COLUMNS) of a design under `model` (module docstring)."""
    rng = np.random.default_rng(model.seed)
    clean, a_true, mult, where = _truth(cells, model)
    loss, arms, cell_of, seed_of, miss = _simulate_kept(cells, model, rng)
    m, r = model.ladders, model.bootstrap
    groups = np.array([f"{cells[i].arm}|{cells[i].size}" for i in cell_of])
    seeded = any(c.seeds >= 2 for c in cells)
    given = None if seeded else {a: model.sd(a) for a in set(arms)}
    reps, noise = batch_replicates(
        loss, arms, groups, given, r, rng, miss=miss,
        n_of=np.array([cells[i].params for i in cell_of]), noise_model=model.noise_model,
        pairs=np.array([f"{cells[i].size}|{k}" for i, k in zip(cell_of, seed_of, strict=True)]))
    dense = arms == "dense"
    x = np.array([cells[i].params for i in cell_of])
    start = fit_power_law(x[dense], np.repeat(clean, [c.seeds for c in cells])[dense],
                          b=model.b, delta=FIT_DELTA)
    point = dense_draws(x[dense], np.log(loss[:, dense]), np.ones((m, dense.sum())),
                        [start.A, start.alpha], model.b, FIT_DELTA)  # (M, 2)
    boot = dense_draws(x[dense], np.log(reps[:, :, dense].reshape(m * r, -1)),
                       np.ones((m * r, dense.sum())), np.repeat(point, r, axis=0), model.b,
                       FIT_DELTA).reshape(m, r, 2)
    n_eff, n_boot, parts = {}, {}, {}
    for i, c in enumerate(cells):
        cols = cell_of == i
        if c.arm == "dense":
            continue
        mean = loss[:, cols].mean(axis=1)
        n_eff[(c.arm, c.size)] = x_eff(point[:, 0], point[:, 1], model.b, mean)
        n_boot[(c.arm, c.size)] = x_eff(boot[..., 0], boot[..., 1], model.b,
                                        reps[:, :, cols].mean(axis=2))
        with np.errstate(all="ignore"):  # the replicates' two sources apart: (M, R) each
            parts[(c.arm, c.size)] = (
                np.log(x_eff(point[:, :1], point[:, 1:], model.b, reps[:, :, cols].mean(axis=2))),
                np.log(x_eff(boot[..., 0], boot[..., 1], model.b, mean[:, None])))
    params = {(c.arm, c.size): c.params for c in cells}
    dense_dof = noise.dof.get("dense", math.inf)
    rows = [_row("multiplier", arm, size, mult[(arm, size)],
                 n_eff[(arm, size)] / params[(arm, size)],
                 n_boot[(arm, size)] / params[(arm, size)], level, noise.source,
                 _welch_dof([(parts[(arm, size)][0], _dof(noise, arm, size)),
                             (parts[(arm, size)][1], dense_dof)]))
            for arm, size in n_eff]
    rows += _ratio_rows(n_eff, n_boot, model, where, level, noise, parts, params)
    return pd.DataFrame(rows, columns=POWER_COLUMNS)


def _dof(noise, arm: str, size: str) -> float:
    """The degrees of freedom of an (arm, size)'s noise level (its arm's without per-size)."""
    return noise.by_size.get(f"{arm}|{size}", (None, noise.dof.get(arm, math.inf)))[1]


def _welch_dof(parts: list[tuple[np.ndarray, float]]) -> float:
    """Welch-Satterthwaite degrees of freedom of a sum of independent parts, each (its (M, R)
    replicates, the dof of the noise level it was drawn with): (sum v)^2 / sum v^2 / dof, v the
    replicates' variance per ladder; the median over the ladders."""
    with np.errstate(all="ignore"):
        v = [np.nanvar(np.where(np.isfinite(x), x, np.nan), axis=1) for x, _ in parts]
        den = sum(vi * vi / d for vi, (_, d) in zip(v, parts, strict=True) if math.isfinite(d))
        if not isinstance(den, np.ndarray):
            return math.inf
        dof = sum(v) ** 2 / den
    dof = dof[np.isfinite(dof)]
    return float(np.median(dof)) if dof.size else math.inf


def _ratio_rows(n_eff: dict, n_boot: dict, model: PowerModel, where: dict, level: float,
                noise, parts: dict, params: dict) -> list:
    arms = {a for a, _ in n_eff}
    control = next((a for a in CONTROL_ARMS if a in arms), None)
    if control is None:
        return []
    source = noise.source
    sizes = sorted((s for (a, s) in n_eff if a == "leviathan" and (control, s) in n_eff),
                   key=lambda s: where[s][0])

    def split(ss: list) -> list:  # LEV's mean, the control's, the Dense fit: apart
        lev = np.mean([parts[("leviathan", s)][0] for s in ss], axis=0)
        ctl = np.mean([parts[(control, s)][0] for s in ss], axis=0)
        fit = np.mean([parts[("leviathan", s)][1] - parts[(control, s)][1] for s in ss], axis=0)
        return [(lev, min(_dof(noise, "leviathan", s) for s in ss)),
                (ctl, min(_dof(noise, control, s) for s in ss)),
                (fit, noise.dof.get("dense", math.inf))]

    rows, logs, logs_boot, truths = [], [], [], []
    for s in sizes:
        est = n_eff[("leviathan", s)] / n_eff[(control, s)]
        boot = n_boot[("leviathan", s)] / n_boot[(control, s)]
        truth = model.ratio(where[s][0])
        rows.append(_row("lev_over_control", control, s, truth, est, boot, level, source,
                         _welch_dof(split([s]))))
        logs.append(np.log(est))
        logs_boot.append(np.log(boot))
        truths.append(math.log(truth))
    if sizes:
        rows.append(_row("lev_over_control_pooled", control, "pooled", math.exp(np.mean(truths)),
                         np.exp(np.mean(logs, axis=0)), np.exp(np.mean(logs_boot, axis=0)),
                         level, source, _welch_dof(split(sizes))))
    if len(sizes) >= 2:
        x = np.log([params[("leviathan", s)] for s in sizes])
        rows.append(_slope_row(control, model.effect_slope, x, np.stack(logs, axis=-1),
                               np.stack(logs_boot, axis=-1), level, source))
    return rows


def _slope_row(control: str, truth: float, x: np.ndarray, est: np.ndarray, boot: np.ndarray,
               level: float, source: str) -> dict:
    """The trend's row: the slope of ln(LEV over its control) on ln N over the M ladders (est
    (M, S), boot (M, R, S) log ratios), on the additive scale: half-width, spread, coverage,
    bias and the smallest slope it detects (80% of the time excluding 0)."""
    xc = (x - x.mean()) / ((x - x.mean()) @ (x - x.mean()))
    with np.errstate(all="ignore"):
        s_est = est @ xc  # (M,)
        s_boot = boot @ xc  # (M, R)
    lo, hi = (np.nanpercentile(s_boot, q, axis=1) for q in (50 * (1 - level),
                                                            50 * (1 + level)))
    half = float(np.nanmedian((hi - lo) / 2))
    ok = np.isfinite(s_est)
    emp = float(Z95 * np.std(s_est[ok], ddof=1)) if ok.sum() > 2 else math.nan
    return {"quantity": "lev_over_control_trend", "arm": control, "size": "slope",
            "truth": truth, "estimate": float(np.median(s_est[ok])), "half_width": half,
            "empirical": emp, "check": abs(half / emp - 1) if emp > 0 else math.nan,
            "coverage": float(np.mean((lo <= truth) & (truth <= hi))),
            "bias": float(np.median(s_est[ok]) - truth),
            "detectable": half * (Z95 + Z80) / Z95, "interval": source}


def _row(quantity: str, arm: str, size: str, truth: float, est: np.ndarray, boot: np.ndarray,
         level: float, source: str, dof: float = math.inf) -> dict:
    """One headline number over the M ladders: est (M,), boot (M, R) its replicates; dof: the
    degrees of freedom of the noise level its interval is drawn with (inf: a given level)."""
    lo, hi = percentile_interval(boot, level, axis=1)  # (M,)
    with np.errstate(all="ignore"):
        half = np.nanmedian((np.log(hi) - np.log(lo)) / 2)
        le = np.log(est[np.isfinite(est) & (est > 0)])
    # the estimates' own spread over the ladders, on the interval's scale: q x their sd, q the
    # level's quantile of Student's t on the noise level's degrees of freedom (z for a given
    # level): an interval whose noise level is measured from few seeds must be that much wider
    # than one that knew it (the replicates draw the level from its own uncertainty); the sd's
    # sampling error over 200 ladders is ~5%, a 2.5% quantile's would be ~15%
    z = _quantile(level, dof)
    emp = float(z * np.std(le, ddof=1)) if le.size > 2 else math.nan
    return {"quantity": quantity, "arm": arm, "size": size, "truth": truth,
            "estimate": float(np.exp(np.median(le))) if le.size else math.nan,
            "half_width": float(np.expm1(half)), "empirical": float(np.expm1(emp)),
            "check": abs(half / emp - 1) if emp > 0 else math.nan,
            "coverage": float(np.mean((lo <= truth) & (truth <= hi))),
            "bias": float(np.expm1(np.median(le) - math.log(truth))) if le.size else math.nan,
            "detectable": float(np.exp(half * (Z95 + Z80) / Z95)), "interval": source}


def _quantile(level: float, dof: float) -> float:
    """The two-sided `level` quantile of Student's t on `dof` (the normal's when infinite)."""
    from scipy import stats

    p = (1 + level) / 2
    return float(stats.norm.ppf(p) if not math.isfinite(dof) else stats.t.ppf(p, dof))


def toy_world(basis: str = "body", worth: dict | None = None, *, seeds: int = 3,
              noise: float = 0.005, seed: int = 0, alpha: float = PowerModel.alpha,
              arms: tuple[str, ...] | None = None, b: float = PowerModel.b,
              data: tuple[float, float] | None = None, tokens_per: str = "size",
              ladder: str = "v1") -> pd.DataFrame:
    """A runs.csv table (analysis/inputs/csv_input.py columns) of one toy world.

    L = b + A·(w_arm·X)^-alpha [+ B_D·D^-beta with data = (B_D, beta)]; tokens_per: "size"
    (every arm of a size trains 20x that size's Dense total parameters, as the real grids) or
    "body" (each run 20x its own body parameters); arms: those of the ladder (None: all, the
    WIDE_CONTROLS only where `worth` names them)."""
    worth = {"dense": 1.0, **(worth or {})}
    s = shapes(ladder).copy()
    if tokens_per == "body":
        s["tokens"] = 20.0 * s["body_params"]
        s["flops"] = s["flops_per_token"] * s["tokens"]
    arms = arms or [a for a in s["arm"].unique() if a not in WIDE_CONTROLS or a in worth]
    s = s[s["arm"].isin(arms)].reset_index(drop=True)
    x = s[BASIS_COLUMN[basis]].to_numpy(float) * s["arm"].map(worth).fillna(1.0).to_numpy()
    model = PowerModel(alpha=alpha, b=b)
    clean = model.loss(x, model.scale(s.loc[s["arm"] == "dense", BASIS_COLUMN[basis]].min()))
    if data is not None:
        clean = clean + data[0] * s["tokens"].to_numpy(float) ** -data[1]
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(seeds):
        loss = clean * np.exp(rng.normal(0.0, noise, clean.size)) if noise else clean
        rows.append(s.assign(seed=k, loss=loss, pair=s["size"] + f"-s{k}"))
    out = pd.concat(rows, ignore_index=True)
    out.insert(0, "run", [f"{a}-{z}-s{k}" for a, z, k in zip(out["arm"], out["size"],
                                                             out["seed"], strict=True)])
    return out[["run", "arm", "size", "pair", "seed", "params", "body_params", "flops", "tokens",
                "loss"]]


def data_world(worth: float = 2.0, *, sizes: tuple[str, ...] | None = None,
               budgets: tuple[float, ...] | None = None, seeds: int = 1, noise: float = 0.0,
               seed: int = 0, alpha: float = PowerModel.alpha, beta: float = DATA_BETA
               ) -> pd.DataFrame:
    """A runs.csv table of a data-scaling world: Dense and Leviathan (isoparametric, the real
    v1 counts) at each size and budget (x Dense's parameters), L = b + A·N^-alpha +
    B_D·(w·D)^-beta with N the Dense count of the size (Leviathan matches it) and w = `worth`
    for Leviathan, 1 for Dense; log-normal seed noise. Sizes and budgets: the data-scaling
    grid's (analysis.power.worlds.data_ladder) unless given."""
    from leviathan.config import ladder_config
    from leviathan.models.accounting import count_params, resolve_model_config

    model = PowerModel(alpha=alpha)
    scale = model.scale(float(shapes()["params"].min()))  # toy_world's A
    sizes, budgets = sizes or data_ladder()[0], budgets or data_ladder()[1]
    rng = np.random.default_rng(seed)
    rows = []
    for size in sizes:
        dense = ladder_config("v1", size)
        n = float(count_params(dense).total)
        counts = {"dense": count_params(dense),
                  "leviathan": count_params(resolve_model_config(dense.replace(arm="leviathan")))}
        for k, per in ((k, p) for k in range(seeds) for p in budgets):
            d = per * n
            for arm, w in (("dense", 1.0), ("leviathan", worth)):
                loss = model.loss(n, scale) + DATA_B * (w * d) ** -beta
                if noise:
                    loss *= float(np.exp(rng.normal(0.0, noise)))
                rows.append({"run": f"{arm}-{size}-{per:g}N-s{k}", "arm": arm, "size": size,
                             "pair": f"{size}-{per:g}N-s{k}", "seed": k,
                             "params": float(counts[arm].total),
                             "body_params": float(counts[arm].body), "tokens": d, "loss": loss})
    return pd.DataFrame(rows)
