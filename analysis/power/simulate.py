"""Will the grid answer the question? Simulated ladders through the real analysis, before launch.

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
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.config import FIT_DELTA, lr_rule_miss
from analysis.laws.bootstrap import dense_draws, percentile_interval
from analysis.laws.powerlaw import fit_power_law, x_eff
from analysis.readings.lr_selection import keep_batch, mean_over, pooled_choice
from analysis.readings.noise import batch_replicates

CONTROL_ARMS = ("factorized", "dense_untied")
Z95, Z80 = 1.959964, 0.841621
POWER_COLUMNS = ["quantity", "arm", "size", "truth", "estimate", "half_width", "empirical",
                 "check", "coverage", "bias", "detectable", "interval"]


@dataclass
class PowerModel:
    """The stated truth and noise model of a simulation."""

    noise: dict = field(default_factory=lambda: {"all": 0.01})  # arm -> relative sd of a run
    effect: float = 1.10  # true LEV over its control (N_eff ratio); over Dense without one
    control_worth: float = 1.0  # the control's N_eff / N by total parameters
    alpha: float = 0.34  # Dense exponent
    b: float = 1.69  # asymptote (the fit's b)
    top_loss: float = 3.5  # loss of the smallest Dense model
    lr_curvature: float = 0.01  # relative loss per (log2 of LR / optimum)^2
    lr_optimum: dict = field(default_factory=dict)  # arm -> log2 of its true optimum / rule's LR
    lr_spread: float = 0.5  # sd (octaves) of each (arm, size)'s true optimum around that, drawn
    #   per ladder: the LR rule is not exact, so a size without an LR sweep pays for it
    lr_estimator: str = "mean"  # the analysis's LR rule (fit.lr_estimator: mean | pooled)
    ladders: int = 200  # M simulated ladders
    bootstrap: int = 200  # replicates per ladder for the printed intervals
    seed: int = 0

    def sd(self, arm: str) -> float:
        return float(self.noise.get(arm, self.noise.get("all", 0.01)))


@dataclass(frozen=True)
class Cell:
    """One (arm, size) of a design."""

    arm: str
    size: str
    params: float  # total parameters
    seeds: int
    lrs: tuple[float, ...]  # LR multipliers of the rule's LR
    gpu_hours: float  # per run

    @property
    def runs(self) -> int:
        return self.seeds * len(self.lrs)


def design_cost(cells: list[Cell]) -> float:
    return float(sum(c.runs * c.gpu_hours for c in cells))


def _truth(cells: list[Cell], model: PowerModel) -> tuple[np.ndarray, float, dict]:
    """Clean loss per cell, the Dense scale A, and arm -> worth (N_eff / N)."""
    arms = {c.arm for c in cells}
    control = next((a for a in CONTROL_ARMS if a in arms), None)
    worth = {"dense": 1.0, "leviathan": model.effect * (model.control_worth if control else 1.0)}
    if control:
        worth[control] = model.control_worth
    x_min = min(c.params for c in cells if c.arm == "dense")
    a = (model.top_loss - model.b) * x_min ** model.alpha
    clean = np.array([model.b + a * (worth[c.arm] * c.params) ** -model.alpha for c in cells])
    return clean, a, worth


def _simulate_kept(cells: list[Cell], model: PowerModel, rng: np.random.Generator):
    """(kept losses (M, n), arm per run, cell index per run): every run of every ladder after
    the LR rule (model.lr_estimator), seeds kept."""
    clean, _, _ = _truth(cells, model)
    m = model.ladders
    grids = []
    for i, c in enumerate(cells):
        opt = model.lr_optimum.get(c.arm, 0.0) + model.lr_spread * rng.standard_normal((m, 1, 1))
        u = np.log2(np.asarray(c.lrs, float))[None, None, :] - opt  # (M, 1, K)
        level = clean[i] * (1.0 + model.lr_curvature * u ** 2)
        grids.append(level * (1.0 + model.sd(c.arm)
                              * rng.standard_normal((m, c.seeds, len(c.lrs)))))
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
    arms = [c.arm for c in cells for _ in range(c.seeds)]
    cell_of = [i for i, c in enumerate(cells) for _ in range(c.seeds)]
    return np.concatenate(losses, axis=1), np.array(arms), np.array(cell_of)


def simulate(cells: list[Cell], model: PowerModel, *, level: float = 0.95) -> pd.DataFrame:
    """The power table (POWER_COLUMNS) of a design under `model` (module docstring)."""
    rng = np.random.default_rng(model.seed)
    clean, a_true, worth = _truth(cells, model)
    loss, arms, cell_of = _simulate_kept(cells, model, rng)
    m, r = model.ladders, model.bootstrap
    groups = np.array([f"{cells[i].arm}|{cells[i].size}" for i in cell_of])
    seeded = any(c.seeds >= 2 for c in cells)
    given = None if seeded else {a: model.sd(a) for a in set(arms)}
    swept = np.array([len(cells[i].lrs) > 1 for i in cell_of])
    miss = lr_rule_miss(model.lr_curvature, model.lr_spread)  # the analysis's fit.lr_miss
    reps, noise = batch_replicates(loss, arms, groups, given, r, rng,
                                   ~swept if swept.any() else None, miss)  # (M, R, n)
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
    rows = [_row("multiplier", arm, size, worth[arm], n_eff[(arm, size)] / params[(arm, size)],
                 n_boot[(arm, size)] / params[(arm, size)], level, noise.source,
                 _welch_dof([(parts[(arm, size)][0], noise.dof.get(arm, math.inf)),
                             (parts[(arm, size)][1], dense_dof)]))
            for arm, size in n_eff]
    rows += _ratio_rows(n_eff, n_boot, worth, level, noise, parts)
    return pd.DataFrame(rows, columns=POWER_COLUMNS)


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


def _ratio_rows(n_eff: dict, n_boot: dict, worth: dict, level: float, noise,
                parts: dict) -> list:
    control = next((a for a in CONTROL_ARMS if a in worth), None)
    if control is None:
        return []
    source = noise.source
    nu = {a: noise.dof.get(a, math.inf) for a in ("leviathan", control, "dense")}
    sizes = [s for (a, s) in n_eff if a == "leviathan" and (control, s) in n_eff]

    def split(ss: list) -> list:  # LEV's mean, the control's, the Dense fit: apart
        lev = np.mean([parts[("leviathan", s)][0] for s in ss], axis=0)
        ctl = np.mean([parts[(control, s)][0] for s in ss], axis=0)
        fit = np.mean([parts[("leviathan", s)][1] - parts[(control, s)][1] for s in ss], axis=0)
        return [(lev, nu["leviathan"]), (ctl, nu[control]), (fit, nu["dense"])]

    truth = worth["leviathan"] / worth[control]
    rows, logs, logs_boot = [], [], []
    for s in sizes:
        est = n_eff[("leviathan", s)] / n_eff[(control, s)]
        boot = n_boot[("leviathan", s)] / n_boot[(control, s)]
        rows.append(_row("lev_over_control", control, s, truth, est, boot, level, source,
                         _welch_dof(split([s]))))
        logs.append(np.log(est))
        logs_boot.append(np.log(boot))
    if sizes:
        rows.append(_row("lev_over_control_pooled", control, "pooled", truth,
                         np.exp(np.mean(logs, axis=0)), np.exp(np.mean(logs_boot, axis=0)),
                         level, source, _welch_dof(split(sizes))))
    return rows


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


def cells_from_plan(frame: pd.DataFrame) -> list[Cell]:
    """A sweep plan's cells (plan.csv columns: arm, size, params_total, seed, lr_scale,
    gpu_hours, branch_of; a main run's cooldown branches count in its cost, not as cells)."""
    main = frame[frame["branch_of"].isna()]
    cells = []
    for (arm, size), g in main.groupby(["arm", "size"], sort=False):
        per_run = float(frame.loc[g.index.union(frame.index[frame["branch_of"].isin(g["run"])]),
                                  "gpu_hours"].sum()) / len(g)
        cells.append(Cell(arm=str(arm), size=str(size), params=float(g["params_total"].mean()),
                          seeds=int(g["seed"].nunique()),
                          lrs=tuple(sorted(float(v) for v in g["lr_scale"].unique())),
                          gpu_hours=per_run))
    return cells


def power_md(table: pd.DataFrame, cells: list[Cell], model: PowerModel) -> str:
    """The dry run's power section: one line per headline number."""
    src = table["interval"].iloc[0] if len(table) else "fit"
    how = ("run-to-run noise from the design's own seeds" if src == "seeds" else
           "one seed: the printed intervals need a noise level (fit.seed_noise / --noise-from); "
           "these widths assume it is given (without it the LEV/control interval is not shown)")
    out = [f"Power analysis ({model.ladders} simulated ladders through the analysis, "
           f"{model.bootstrap} bootstrap replicates each; truth: LEV over its control "
           f"{model.effect:g}, noise {_noise_txt(model)}, LR curvature "
           f"{model.lr_curvature:g} per octave^2, true optimum ±{model.lr_spread:g} octave "
           f"around the rule's; {how}); GPU-hours ~{design_cost(cells):.4g}:",
           "", "| number | arm | size | truth | ±95% half-width (predicted) | simulated spread "
           "(x t) | coverage | detects |", "|---|---|---|---|---|---|---|---|"]
    for r in table.itertuples(index=False):
        out.append(f"| {r.quantity} | {r.arm} | {r.size} | {r.truth:.3g} | ±{r.half_width:.1%} "
                   f"| ±{r.empirical:.1%} | {r.coverage:.0%} | {r.detectable:.3g}x |")
    bad = table[(table["check"] > 0.2) & (table["half_width"] < table["empirical"])]
    wide = table[(table["check"] > 0.2) & (table["half_width"] >= table["empirical"])]
    if len(bad):
        out.append(f"\nCheck failed: the printed intervals are narrower than the estimates' "
                   f"spread by more than 20% for {', '.join(bad['quantity'] + ' ' + bad['size'])}"
                   ": they would claim more than they hold.")
    if len(wide):
        out.append(f"\nCheck: the printed intervals are wider than the spread by more than 20% "
                   f"(conservative) for {len(wide)} numbers.")
    if not len(bad) and not len(wide):
        out.append("\nCheck: every predicted half-width is within 20% of the simulated spread.")
    return "\n".join(out)


def _noise_txt(model: PowerModel) -> str:
    return ", ".join(f"{a} {v:.2%}" for a, v in sorted(model.noise.items()))


def model_from_grid(power: dict) -> PowerModel:
    """The PowerModel of a grid's `power` section (leviathan.sweep.grid.PowerSpec)."""
    keys = ("noise", "effect", "control_worth", "lr_curvature", "lr_spread", "ladders",
            "bootstrap", "lr_estimator")
    return PowerModel(**{k: power[k] for k in keys if k in power})


def report_plan(frame: pd.DataFrame, grid: dict, sweep_dir) -> str:
    """The dry run's power analysis: simulate the plan under the grid's `power` model, write
    sweep_dir/power.csv, return the printed section."""
    from pathlib import Path

    from leviathan.errors import LeviathanError

    cells = cells_from_plan(frame)
    model = model_from_grid(grid.get("power", {}))
    try:
        table = simulate(cells, model)
    except LeviathanError as e:  # e.g. one size: no power law to fit, nothing to predict
        return (f"\nPower analysis: not possible for this plan ({e}); "
                "grid.power.enabled=false leaves it out")
    path = Path(sweep_dir) / "power.csv"
    table.assign(gpu_hours=design_cost(cells)).to_csv(path, index=False)
    return "\n" + power_md(table, cells, model) + f"\n(written to {path})"


def _quantile(level: float, dof: float) -> float:
    """The two-sided `level` quantile of Student's t on `dof` (the normal's when infinite)."""
    from scipy import stats

    p = (1 + level) / 2
    return float(stats.norm.ppf(p) if not math.isfinite(dof) else stats.t.ppf(p, dof))
