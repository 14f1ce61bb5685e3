"""Run-to-run noise: where an interval's noise comes from, per arm and size.

Every multiplier and LEV-over-control interval must include the scatter a rerun with another
seed would show (SCIENCE.md §3). Three sources, in this order:
- `seeds`: the sweep's own seeds. Each (arm, size)'s relative deviations from its mean (scaled
  by sqrt(n / (n - 1))) give that size's sample variance on n - 1 degrees of freedom; an arm's
  level at each size then follows `fit.noise_model` (SCIENCE.md §7: a 421M run is not as noisy as
  a 60M one, and with seeds tapered toward small sizes one pooled level is the small models'):
  - `loglinear` (default): log sd linear in log N, fitted by maximum likelihood over the sizes'
    chi-square variances (each with its own degrees of freedom); every replicate draws the line
    from its own uncertainty (the fit's information matrix), so a size the seeds barely inform
    (the largest, with two seeds) gets a level with the degrees of freedom that really inform
    it, 2 / var(log sd^2) at that size; a size with one seed reads the line;
  - `per_size`: each size its own seeds' level (3 or more seeds at every size), drawn from a
    scaled inverse chi-square on its own degrees of freedom;
  - `pooled`: one level per arm over its sizes (what the platform did before).
  Not across arms: a 150-layer Leviathan may be noisier than Dense. An arm with one seed
  everywhere borrows a given level (fit.seed_noise) or, failing that, the other arms' pooled
  level, and the summary says so.
- `given`: one seed, and a noise level measured elsewhere: `fit.seed_noise.<arm>` (relative
  standard deviation of the final loss; `fit.seed_noise.all` for every arm not named), or
  `--noise-from <pilot sweep or runs.csv>`, which measures it from a pilot sweep's seeds.
- `fit`: neither: the bootstrap can only resample the Dense sizes, so both arms move together
  through the curve and their ratio barely moves; such an interval is labelled "fit only
  (excludes run-to-run noise)" and the headline shows no LEV/control interval.

Seeds a pair shares (Leviathan and its control at one size and seed see the same data order:
data.seed follows seed) are drawn correlated, with the correlation their deviations show (a
paired bootstrap: the noise they share cancels in their ratio); with independent data it is 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from analysis.config import FitConfigError
from analysis.laws.bootstrap import seed_deviations
from analysis.laws.lr_miss import unswept_miss

SOURCES = ("seeds", "given", "fit")
FIT_ONLY = "fit only (excludes run-to-run noise)"
LABELS = {"seeds": "run-to-run noise from the sweep's seeds (per arm)",
          "given": "run-to-run noise from a level measured elsewhere (fit.seed_noise / "
                   "--noise-from)",
          "fit": FIT_ONLY}


@dataclass(frozen=True)
class Noise:
    """The noise every replicate of a run's loss is drawn with."""

    source: str  # seeds | given | fit (SOURCES)
    levels: dict = field(default_factory=dict)  # arm -> relative sd of one run's loss
    notes: tuple[str, ...] = ()  # borrowed levels, missing arms
    dof: dict = field(default_factory=dict)  # arm -> degrees of freedom of its level (inf:
    #   given, known)
    lr_miss: float = 0.0  # the largest sd of the LR rule's miss drawn for a group (relative)
    unswept: tuple[str, ...] = ()  # the groups ("arm|size") whose miss each replicate draws
    model: str = "pooled"  # how an arm's level depends on size: fit.noise_model, or given
    by_size: dict = field(default_factory=dict)  # "arm|size" -> (sd, dof) at that size
    slope: dict = field(default_factory=dict)  # arm -> d log sd / d log N (loglinear)
    corr: dict = field(default_factory=dict)  # control -> its runs' correlation with
    #   Leviathan's of the same seed (paired draws)

    def first(self) -> Noise:
        """This Noise of one ladder (M = 1): floats in place of (1,) arrays."""
        def one(v) -> float:
            return float(np.asarray(v).ravel()[0])

        return replace(self, levels={a: one(v) for a, v in self.levels.items()},
                       by_size={g: (one(sd), float(d)) for g, (sd, d) in self.by_size.items()},
                       slope={a: one(v) for a, v in self.slope.items()},
                       corr={a: one(v) for a, v in self.corr.items()})

    @property
    def label(self) -> str:
        return LABELS[self.source]


def arm_levels(table: pd.DataFrame) -> dict[str, float]:
    """arm -> relative sd of one run's final loss, from the seeds of each (arm, size), pooled
    over sizes; arms with one seed everywhere are left out. (What --noise-from measures.)"""
    out = {}
    for arm, g in table.groupby("arm", sort=True):
        dev = seed_deviations(g["loss"].to_numpy(float), g["size"].astype(str).to_numpy())
        if dev.size >= 2:
            out[str(arm)] = float(np.sqrt(np.mean(dev ** 2)))
    return out


def _given(arm: str, seed_noise: dict | None) -> float | None:
    if not seed_noise:
        return None
    v = seed_noise.get(arm, seed_noise.get("all"))
    return None if v is None else float(v)


def replicates(both: pd.DataFrame, seed_noise: dict | None, n_rep: int,
               rng: np.random.Generator, lr_miss=0.0, noise_model: str = "pooled"
               ) -> tuple[np.ndarray | None, Noise]:
    """(n_rep, n) replicate losses of every run of `both` (arm, size, loss, params; seed: which
    runs share their data; lr_key: its group in the LR model, analysis/laws/lr_miss.py), and
    the Noise used; None with source `fit` when there is no noise to draw from
    (batch_replicates, one ladder). lr_miss: the LR model (an LrMiss: each replicate draws the
    miss of the groups it corrected), or a relative sd (float) drawn for the runs whose
    `lr_swept` is false while others swept (the zero-mean miss of before)."""
    groups = (both["arm"].astype(str) + "|" + both["size"].astype(str)).to_numpy()
    miss, miss_groups, miss_sd = None, (), 0.0
    if hasattr(lr_miss, "replicate_factors") and "lr_key" in both:
        f = lr_miss.replicate_factors(both["lr_key"].to_numpy(object), n_rep, rng)
        if f is not None:
            hit = both["lr_key"].isin(set(lr_miss.dev) | set(
                lr_miss.groups.loc[lr_miss.groups["how"] == "fallback", "key"]))
            miss, miss_sd = f[None], float(lr_miss.groups["sd"].max())
            miss_groups = tuple(sorted(set(groups[hit.to_numpy(bool)])))
    elif isinstance(lr_miss, int | float) and lr_miss > 0 and "lr_swept" in both \
            and both["lr_swept"].any():
        unswept = ~both["lr_swept"].fillna(False).to_numpy(bool)
        miss = unswept_miss(groups, unswept, float(lr_miss), n_rep, rng)[None]
        miss_groups = tuple(sorted({str(x) for x in groups[unswept]}))
        miss_sd = float(lr_miss)
    pairs = None
    if "seed" in both and both["seed"].astype(str).ne("").all():
        pairs = (both["size"].astype(str) + "|" + both["seed"].astype(str)).to_numpy()
    reps, noise = batch_replicates(both["loss"].to_numpy(float)[None, :],
                                   both["arm"].astype(str).to_numpy(), groups, seed_noise,
                                   n_rep, rng, noise_model=noise_model,
                                   n_of=both["params"].to_numpy(float) if "params" in both
                                   else None, pairs=pairs, miss=miss, miss_groups=miss_groups,
                                   miss_sd=miss_sd)
    return (None if reps is None else reps[0]), noise.first()


def batch_replicates(loss: np.ndarray, arms: np.ndarray, groups: np.ndarray,
                     seed_noise: dict | None, n_rep: int, rng: np.random.Generator,
                     *, n_of: np.ndarray | None = None, noise_model: str = "pooled",
                     pairs: np.ndarray | None = None, miss: np.ndarray | None = None,
                     miss_groups: tuple = (), miss_sd: float = 0.0
                     ) -> tuple[np.ndarray | None, Noise]:
    """(M, n_rep, n) replicate losses of M ladders of the same runs (loss (M, n); arms, groups,
    n_of, pairs (n,): each run's arm, (arm, size) group, parameter count and (size, seed) key),
    and the Noise (levels: arm -> (M,) sd; by_size: group -> (M,) sd).

    Each run's loss is its group mean x (1 + sigma z), z standard normal (correlated across the
    arms of a pair, module docstring), sigma its (arm, size)'s level under `noise_model`, each
    replicate drawing the level from its own uncertainty; a given level is known (no draw).
    `miss` (M, n_rep, n): what each replicate also multiplies each run by, the LR rule's miss
    of its size's optimum drawn again (analysis/laws/lr_miss.py; shared by a group's seeds);
    miss_groups, miss_sd: those groups and the largest sd, for the summary."""
    loss = np.atleast_2d(np.asarray(loss, float))
    m, n = loss.shape
    if n_of is None and noise_model == "loglinear":  # no sizes to regress on
        noise_model = "pooled"
    names, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    onehot = np.eye(counts.size)[inverse]  # (n, G)
    means = (loss @ onehot / counts) @ onehot.T  # (M, n)
    dev = (loss / means - 1.0) * np.sqrt(counts / np.maximum(counts - 1, 1))[inverse]
    var_g = (dev ** 2 @ onehot) / counts  # (M, G): each group's sample variance (n >= 2)
    nu_g = (counts - 1).astype(float)
    arm_g = np.array([str(g).split("|", 1)[0] for g in names])
    n_g = (np.asarray(n_of, float) @ onehot / counts) if n_of is not None else np.ones(len(names))
    have = {a: (np.sqrt((var_g[:, (arm_g == a)] * nu_g[arm_g == a]).sum(1)
                        / nu_g[arm_g == a].sum()), float(nu_g[arm_g == a].sum()))
            for a in np.unique(arms) if nu_g[arm_g == a].sum() > 0}
    if not have and not seed_noise:
        return None, Noise("fit")
    sd_rep = np.empty((m, n_rep, len(names)))  # each group's level, per replicate
    levels, dofs, by_size, notes, slopes = {}, {}, {}, [], {}
    for a in np.unique(arms):
        cols = np.flatnonzero(arm_g == a)
        if a in have:
            fitted = _arm_levels(noise_model, var_g[:, cols], nu_g[cols], np.log(n_g[cols]),
                                 n_rep, rng, a, names[cols], notes)
            sd_rep[:, :, cols], sd_pt, dof_pt, slope = fitted
            if slope is not None:
                slopes[a] = slope
        else:
            sd, dof, note = _arm_level(a, have, seed_noise)
            notes += [note] if note else []
            sd = np.broadcast_to(np.asarray(sd, float), (m,))
            chi = np.sqrt(dof / rng.chisquare(dof, (m, n_rep, 1))) if np.isfinite(dof) else 1.0
            sd_rep[:, :, cols] = sd[:, None, None] * chi
            sd_pt, dof_pt = np.repeat(sd[:, None], len(cols), 1), np.full(len(cols), dof)
        levels[a], dofs[a] = have.get(a, (sd_pt[:, 0], float(dof_pt[0])))
        for j, g in enumerate(names[cols]):
            by_size[str(g)] = (sd_pt[:, j], float(np.median(dof_pt[..., j])))
    z = rng.standard_normal((m, n_rep, n))
    corr = _pair(z, dev, arms, pairs, rng) if pairs is not None else {}
    out = means[:, None, :] * (1.0 + sd_rep[:, :, inverse] * z)
    if miss is not None:
        out *= miss
    return out, Noise("seeds" if have else "given", levels, tuple(notes), dofs,
                      miss_sd if miss is not None else 0.0, tuple(miss_groups),
                      noise_model if have else "given", by_size, slopes, corr)


def _arm_levels(model: str, var: np.ndarray, nu: np.ndarray, u: np.ndarray, n_rep: int,
                rng: np.random.Generator, arm: str, names: np.ndarray, notes: list):
    """One arm's level at each of its sizes (var (M, G) sample variances on nu (G,) degrees
    of freedom, u (G,) log N): (per-replicate sd (M, R, G), point sd (M, G), dof (M, G) or
    (G,), loglinear slope of sd in log N (M,) or None)."""
    m = var.shape[0]
    informed = nu > 0
    if model == "per_size":
        thin = [str(g).split("|", 1)[1] for g, k in zip(names, nu, strict=True) if k < 2]
        if thin:
            raise FitConfigError(f"fit.noise_model=per_size: {arm} has fewer than 3 seeds at "
                                 f"{', '.join(thin)}; use fit.noise_model=loglinear")
        sd = np.sqrt(var)
        chi = np.sqrt(nu / rng.chisquare(np.broadcast_to(nu, (m, n_rep, nu.size))))
        return sd[:, None, :] * chi, sd, nu, None
    if model == "loglinear" and np.unique(u[informed]).size >= 2:
        theta, cov = _loglinear(var[:, informed], nu[informed], u[informed])
        x = np.column_stack([np.ones_like(u), u])  # (G, 2)
        eta = theta @ x.T  # (M, G): log sd^2
        draws = theta[:, None, :] + rng.standard_normal((m, n_rep, 2)) @ np.linalg.cholesky(
            cov).T
        dof = 2.0 / np.einsum("gi,ij,gj->g", x, cov, x)
        return np.exp(draws @ x.T / 2), np.exp(eta / 2), dof, theta[:, 1] / 2
    if model == "loglinear":
        notes.append(f"{arm}: seeds at one size only: one level for all its sizes")
    pooled_var = (var[:, informed] * nu[informed]).sum(1) / nu[informed].sum()
    dof = float(nu[informed].sum())
    chi = np.sqrt(dof / rng.chisquare(dof, (m, n_rep, 1)))
    sd = np.sqrt(pooled_var)
    return (sd[:, None, None] * chi) * np.ones((1, 1, nu.size)), \
        np.repeat(sd[:, None], nu.size, 1), np.full(nu.size, dof), None


def _loglinear(var: np.ndarray, nu: np.ndarray, u: np.ndarray, iters: int = 50):
    """Maximum-likelihood (M, 2) intercept and slope of log sd^2 = c + d (u - mean u), from
    sample variances var (M, G) on nu (G,) degrees of freedom (var ~ sd^2 chi2_nu / nu), and the
    (2, 2) covariance of the estimate (the inverse expected information); returned in u."""
    u0 = float(np.average(u, weights=nu))
    x = np.column_stack([np.ones_like(u), u - u0])  # (G, 2)
    var = np.maximum(var, 1e-16)
    theta = np.column_stack([np.log((var * nu).sum(1) / nu.sum()), np.zeros(var.shape[0])])
    for _ in range(iters):
        w = var * np.exp(-(theta @ x.T))  # (M, G): s^2 / sd^2
        grad = ((1.0 - w) * nu / 2) @ x  # (M, 2)
        hess = np.einsum("mg,gi,gj->mij", w * nu / 2, x, x)
        step = np.linalg.solve(hess + 1e-12 * np.eye(2), grad[..., None])[..., 0]
        theta = theta - np.clip(step, -2.0, 2.0)
        if np.abs(step).max() < 1e-10:
            break
    info = (x * (nu / 2)[:, None]).T @ x
    cov_c = np.linalg.inv(info)
    shift = np.array([[1.0, -u0], [0.0, 1.0]])  # back to c + d u
    return theta @ shift.T, shift @ cov_c @ shift.T


def _pair(z: np.ndarray, dev: np.ndarray, arms: np.ndarray, pairs: np.ndarray,
          rng: np.random.Generator) -> dict:
    """Correlate each control run's draw with the Leviathan run of its (size, seed), in place,
    by the correlation their deviations show (pooled over sizes, >= 4 pairs), each replicate
    drawing it from its own uncertainty (Fisher's z: atanh(rho) ~ N(., 1 / (pairs - 3))); a
    correlation estimated from few pairs must not narrow an interval on its own; control -> (M,)
    the estimate."""
    from analysis.inputs.runs import CONTROLS

    lev = {k: i for i, (a, k) in enumerate(zip(arms, pairs, strict=True)) if a == "leviathan"}
    out = {}
    for c in CONTROLS:
        idx = [(lev[k], i) for i, (a, k) in enumerate(zip(arms, pairs, strict=True))
               if a == c and k in lev]
        if len(idx) < 4:
            continue
        li, ci = (np.array(v) for v in zip(*idx, strict=True))
        dl, dc = dev[:, li], dev[:, ci]
        with np.errstate(all="ignore"):
            rho = (dl * dc).sum(1) / np.sqrt((dl ** 2).sum(1) * (dc ** 2).sum(1))
        rho = np.clip(np.nan_to_num(rho), -0.99, 0.99)
        r = np.tanh(np.arctanh(rho)[:, None] + rng.standard_normal(z.shape[:2])
                    / np.sqrt(len(idx) - 3))[..., None]  # (M, R, 1)
        z[:, :, ci] = r * z[:, :, li] + np.sqrt(1 - r ** 2) * z[:, :, ci]
        out[c] = rho
    return out


def _arm_level(arm: str, have: dict, seed_noise: dict | None):
    """(sd, degrees of freedom, a note or None) of one run's relative noise in `arm` without
    seeds of its own: a given level (known: infinite dof), else the other arms' pooled (noted)."""
    given = _given(arm, seed_noise)
    if given is not None:
        note = (f"{arm}: one seed per size; its noise level {given:g} is given "
                "(fit.seed_noise)") if have else None
        return given, math.inf, note
    if have:
        dof = sum(d for _, d in have.values())
        sd = np.sqrt(sum(s * s * d for s, d in have.values()) / dof)
        return sd, dof, (f"{arm}: one seed per size and no fit.seed_noise.{arm}: its noise is "
                         "borrowed from the other arms' seeds")
    raise_missing(arm, seed_noise)
    return math.nan, math.nan, None  # unreachable: raise_missing raises


def raise_missing(arm: str, seed_noise: dict) -> None:
    raise FitConfigError(f"fit.seed_noise: no level for arm {arm!r} (given: "
                         f"{', '.join(sorted(seed_noise))}); add fit.seed_noise.{arm}=<relative "
                         "sd> or fit.seed_noise.all=<relative sd>")


# ---- the headline's noise for the secondary readings (issue 37.5) ----------------------------
# The data multipliers, the b check, the joint law, the per-run table and the per-bucket ratios
# draw their run-to-run noise here, through the headline's own `replicates`: the same source
# (the sweep's seeds per arm under fit.noise_model, a given fit.seed_noise / --noise-from level,
# or none: FIT_ONLY), the same pairing of seeds and the same LR-rule miss per (arm, size).


def reading_replicates(runs: pd.DataFrame, cfg, n_rep: int, rng: np.random.Generator, *,
                       within: str | None = None, lr_miss=None,
                       context: pd.DataFrame | None = None) -> tuple[np.ndarray | None, Noise]:
    """(n_rep, n) replicate losses of the n runs of `runs` (arm, size, loss; params, seed,
    lr_swept / lr_key where known) drawn exactly as the headline's (`replicates`, with cfg's
    seed_noise and noise_model), and the Noise; (None, Noise('fit')) without seeds or a given
    level. `context`: the family's other runs the headline reads its noise from (an arm without
    seeds borrows the others' level; those in `runs`, by run_id, are not added twice).
    `within`: a column whose values split each (arm, size) into groups that do not share a mean
    (the data multipliers' token budget; its pairs too). `lr_miss`: the LR model the headline
    was given (None: cfg.lr_miss, as match_all)."""
    n = len(runs)
    both = runs.reset_index(drop=True)
    if context is not None and len(context):
        extra = context
        if "run_id" in context and "run_id" in runs:
            extra = context[~context["run_id"].isin(runs["run_id"])]
        both = pd.concat([both, extra], ignore_index=True)
    if within is not None:
        both = both.assign(size=both["size"].astype(str) + "|" + both[within].astype(str))
    reps, noise = replicates(both, cfg.seed_noise, n_rep, rng,
                             lr_miss=cfg.lr_miss if lr_miss is None else lr_miss,
                             noise_model=cfg.noise_model)
    return (None if reps is None else reps[:, :n]), noise


def one_run_draws(loss: np.ndarray, reps: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Replicates of readings of single runs: each run's own loss times its replicate's relative
    draw (reps / its group's mean loss): one seed's run-to-run noise (and its group's LR-rule
    miss) around what that run measured, not around its group's mean. loss (n,) or (M, n),
    reps (R, n) or (M, R, n)."""
    loss = np.asarray(loss, float)
    _, inverse, counts = np.unique(np.asarray(groups), return_inverse=True, return_counts=True)
    onehot = np.eye(counts.size)[inverse]  # (n, G)
    means = (loss @ onehot / counts) @ onehot.T
    rel = loss / means
    return (rel[..., None, :] if reps.ndim > loss.ndim else rel) * reps
