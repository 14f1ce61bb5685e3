"""The design search: the allocation of a GPU-hour budget that answers the question best.

A family's grid fixes the arms, the candidate sizes and the Dense-only rungs; the search varies
how the budget is spent (SCIENCE.md §4: seeds where the noise is, an LR sweep where the optimum
is uncertain, Dense rungs at one LR):
- seeds on Leviathan and its control (the arms whose ratio is the question): 1 to 12 at every
  size, or tapered (`taper` 0.5: the Neyman allocation, seeds at each size proportional to its
  run-to-run sd over sqrt(its cost per run), the sd the power model's at that size,
  noise_slope: 2 to 24 at the smallest size, at least one at any): where a run costs 49 times
  more at the same noise, 7 times fewer seeds; where its noise is 5x larger, 5 times more;
- seeds on Dense (1 or 2);
- which sizes sweep the grid's LR variants: every size, the smallest and largest, or those and
  the one nearest the ladder's middle in log N (the others run the rule's LR; the analysis
  corrects them for its expected miss from a line through the swept optima, and the truth
  model's `lr_spread` and per-arm `lr_drift` make that cost what it costs). Never none:
  each arm gets its own tuned LR from the same sweep (SCIENCE.md §1), and an arm whose optimum
  sits away from the rule is seen only where the LR is swept;
- the Dense-only rungs always kept, at one LR (an effective size is read by interpolation, not
  beyond the largest Dense point: SCIENCE.md §3; the power model does not see that risk, so the
  search may not trade it away);
- the largest paired size kept (design.keep_largest_pair, the default: the question is asked up
  to that size, and the power model does not see what dropping it costs: a shorter lever on the
  exponents, an extrapolation for anyone who wants the answer at the top) or also dropped.
Tokens per parameter stay the grid's (a change would need the truth model's L(N, D)).
Every candidate within the budget is simulated (analysis.power.simulate, fewer ladders), the best
few again at full size; the target is one headline number's predicted half-width (default: the
pooled LEV over its control).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace

import pandas as pd

from analysis.power.model import (
    CONTROL_ARMS,
    Cell,
    PowerModel,
    cells_from_plan,
    design_cost,
    model_from_grid,
)
from analysis.power.simulate import simulate
from leviathan.errors import LeviathanError

TARGETS = ("lev_over_control_pooled", "multiplier", "slope")
MIN_COVERAGE = 0.90  # a design whose simulated coverage of its target is below this never ranks
SEARCH_LADDERS, SEARCH_BOOTSTRAP = 80, 80
LR_SWEEPS = ("all", "ends", "ends+middle")  # which paired sizes sweep the grid's LR variants


class DesignError(LeviathanError, ValueError):
    """A design search cannot run: the message names the key (design.<key>)."""


@dataclass
class Candidate:
    knobs: dict  # the allocation's choices
    cells: list  # analysis.power.simulate.Cell
    cost: float  # GPU-hours
    width: float = math.nan  # predicted 95% half-width of the target
    table: pd.DataFrame | None = None


def _target_rows(table: pd.DataFrame, target: str) -> pd.DataFrame:
    if target == "multiplier":
        return table[(table["quantity"] == "multiplier") & (table["arm"] == "leviathan")]
    quantity = "lev_over_control_trend" if target == "slope" else target
    return table[table["quantity"] == quantity]


def _target_width(table: pd.DataFrame, target: str, col: str = "half_width") -> float:
    """The target's half-width (for `multiplier`, the widest size's; for `slope`, the trend's
    in slope units)."""
    rows = _target_rows(table, target)
    if not len(rows):
        return math.nan
    return float(rows[col].max()) if target == "multiplier" else float(rows[col].iloc[0])


def _fmt(width: float, target: str) -> str:
    """A target's half-width as printed: a slope in its units, a ratio in percent."""
    return f"{width:.3f}" if target == "slope" else f"{width:.1%}"


def _covers(table: pd.DataFrame, target: str) -> bool:
    """Whether the target's printed intervals cover its truth often enough (MIN_COVERAGE)."""
    rows = _target_rows(table, target)
    return bool(len(rows)) and bool((rows["coverage"] >= MIN_COVERAGE).all())


def _score(table: pd.DataFrame, target: str) -> float:
    """What the search minimises: the larger of the predicted half-width and the simulated
    spread, so a design whose intervals would claim more than they hold does not win by it."""
    return max(_target_width(table, target), _target_width(table, target, "empirical"))


def candidates(base: list[Cell], lrs: tuple[float, ...], keep_largest_pair: bool = True,
               noise_slope: float = 0.0) -> list[Candidate]:
    """Every allocation of the search space (module docstring) over the base cells (one seed,
    the rule's LR; Dense-only rungs are the Dense cells at sizes no other arm has); the taper
    weighs each size's cost by its noise, sd proportional to (N / N_smallest)^noise_slope."""
    arms = {c.arm for c in base}
    paired = sorted({c.size for c in base if c.arm != "dense"},
                    key=lambda s: next(c.params for c in base if c.size == s))
    out = []
    params = {c.size: c.params for c in base if c.arm != "dense"}
    # Neyman: seeds proportional to sd / sqrt(cost); expressed as a cost ratio to taper by
    lev_cost = {c.size: c.gpu_hours * (params[paired[0]] / params[c.size]) ** (2 * noise_slope)
                for c in base if c.arm != "dense"}
    choices = [(t, s) for t in (0.0, 0.5) for s in (range(1, 13) if t == 0 else range(2, 25))]
    for (taper, seeds), dense_seeds, sweep, rungs, top in itertools.product(
            choices, (1, 2), LR_SWEEPS, (True,),
            (True,) if keep_largest_pair else (True, False)):
        sizes = paired if top else paired[:-1]
        swept = {"all": set(sizes), "ends": {sizes[0], sizes[-1]},
                 "ends+middle": {sizes[0], _middle(sizes, params), sizes[-1]}}[sweep]
        if sweep == "ends+middle" and len(sizes) < 4:
            continue  # the same as all
        per_size = {s: max(1, round(seeds * (lev_cost[sizes[0]] / lev_cost[s]) ** taper))
                    for s in sizes}
        cells = []
        for c in base:
            is_rung = c.size not in paired
            if (is_rung and not rungs) or (not is_rung and c.size not in sizes):
                continue
            n = 1 if is_rung else min(dense_seeds if c.arm == "dense" else seeds,
                                      per_size[c.size])
            cells.append(replace(c, seeds=n, lrs=lrs if c.size in swept else (1.0,)))
        if len({c.size for c in cells if c.arm == "dense"}) < 3:
            continue
        knobs = {"seeds": seeds, "dense_seeds": dense_seeds, "lr_sweep": sweep,
                 "dense_rungs": rungs, "largest_pair": top, "sizes": sizes,
                 "lr_sizes": sorted(swept, key=paired.index), "taper": taper,
                 "seeds_by_size": {s: n for s, n in per_size.items() if n < seeds}}
        out.append(Candidate(knobs, cells, design_cost(cells)))
    return out if arms else []


def _middle(sizes: list[str], params: dict) -> str:
    """The size between the ends nearest the ladder's middle in log N: where a line through the
    ends' LR optima is least informed (a size there inherits half of each end's scatter)."""
    mid = (math.log(params[sizes[0]]) + math.log(params[sizes[-1]])) / 2
    return min(sizes[1:-1], key=lambda s: abs(math.log(params[s]) - mid))


def search(base: list[Cell], lrs: tuple[float, ...], budget: float, model: PowerModel,
           target: str = "lev_over_control_pooled", top: int = 5,
           keep_largest_pair: bool = True) -> list[Candidate]:
    """The best `top` allocations within `budget` GPU-hours, best first (width: the target's
    predicted half-width at the model's full ladders and bootstrap)."""
    if target not in TARGETS:
        raise DesignError(f"design.target: {target!r} is not a headline number; allowed: "
                          f"{', '.join(TARGETS)}")
    if target != "multiplier" and not any(c.arm in CONTROL_ARMS for c in base):
        raise DesignError(f"design.target: {target!r} needs a control arm ("
                          f"{', '.join(CONTROL_ARMS)}); this family has "
                          f"{', '.join(sorted({c.arm for c in base}))}: use design.target="
                          "multiplier")
    pool = candidates(base, lrs, keep_largest_pair, model.noise_slope)
    fits = [c for c in pool if c.cost <= budget]
    admissible = [c for c in pool if _admissible(c, target)]
    if not [c for c in fits if _admissible(c, target)]:
        cheapest = min(c.cost for c in admissible)
        raise DesignError(f"design.budget_gpu_h: {budget:g} GPU-hours is below the cheapest "
                          f"admissible design ({cheapest:.4g} GPU-hours: the smallest budget "
                          f"that works for design.target={target})")
    fits = _frontier([c for c in fits if _admissible(c, target)])
    quick = replace(model, ladders=min(model.ladders, SEARCH_LADDERS),
                    bootstrap=min(model.bootstrap, SEARCH_BOOTSTRAP))
    for c in fits:
        c.width = _score(simulate(c.cells, quick), target)
    best = sorted(fits, key=lambda c: (c.width, c.cost))[: top * 2]
    for c in best:
        c.table = simulate(c.cells, model)
        c.width = _score(c.table, target)
    covered = [c for c in best if _covers(c.table, target)]
    if not covered:
        raise DesignError(f"design.target: no design within {budget:g} GPU-hours covers "
                          f"{target}'s truth in {MIN_COVERAGE:.0%} of its simulated ladders "
                          "(see grid.power): a larger budget, or another target")
    return sorted(covered, key=lambda c: (c.width, c.cost))[:top]


def _admissible(c: Candidate, target: str) -> bool:
    """The target has an interval: run-to-run noise from the design's own seeds."""
    return c.knobs["seeds"] >= 2 or target == "multiplier" and c.knobs["dense_seeds"] >= 2


def _frontier(cands: list[Candidate]) -> list[Candidate]:
    """Per structural choice (everything but the Leviathan/control seeds), only the most seeds
    the budget allows: more seeds there never widen the target."""
    best: dict = {}
    for c in cands:
        key = tuple((k, str(v)) for k, v in c.knobs.items() if k not in ("seeds", "seeds_by_size"))
        if key not in best or c.knobs["seeds"] > best[key].knobs["seeds"]:
            best[key] = c
    return list(best.values())


def cells_for_grid(base: list[Cell], grid: dict) -> list[Cell]:
    """The cells a grid's own allocation gives (seeds, seeds_by_arm, lr, lr_sizes) from the base
    cells (one per arm and size: parameters and cost per run)."""
    by_name = {s.rsplit("/", 1)[-1]: s for s in [*grid["sizes"], *grid.get("dense_sizes", [])]}
    lr_sizes = grid.get("lr_sizes")
    cap = grid.get("seeds_by_size") or {}
    out = []
    for c in base:
        seeds = grid.get("seeds_by_arm", {}).get(c.arm, grid["seeds"])
        seeds = seeds[:cap.get(by_name.get(c.size), len(seeds))]
        swept = lr_sizes is None or by_name.get(c.size) in lr_sizes
        out.append(replace(c, seeds=len(seeds),
                           lrs=tuple(sorted(grid["lr"])) if swept else (1.0,)))
    return out


def designed_grid(grid: dict, best: Candidate, budget: float, target: str, model: PowerModel,
                  reference: tuple[float, float]) -> tuple[dict, str]:
    """(the winner as a grid config dict, its header comment)."""
    by_name = {s.rsplit("/", 1)[-1]: s for s in [*grid["sizes"], *grid.get("dense_sizes", [])]}
    k = best.knobs
    out = {key: grid[key] for key in ("family", "arms", "tokens_per_param", "lr", "lr_rule",
                                      "overrides", "iso_tolerance") if key in grid}
    out["sizes"] = [by_name[s] for s in k["sizes"]]
    out["dense_sizes"] = list(grid.get("dense_sizes", [])) if k["dense_rungs"] else []
    out["seeds"] = list(range(k["dense_seeds"]))
    out["seeds_by_arm"] = {a: list(range(k["seeds"])) for a in grid["arms"] if a != "dense"}
    out["seeds_by_size"] = {by_name[s]: n for s, n in k["seeds_by_size"].items()}
    if k["dense_seeds"] > 1:  # the Dense-only rungs run one seed (their cost in the search)
        out["seeds_by_size"].update({s: 1 for s in out["dense_sizes"]})
    out["lr_sizes"] = [by_name[s] for s in k["lr_sizes"]]
    out["power"] = {key: getattr(model, key) for key in
                    ("noise", "noise_slope", "effect", "effect_slope", "control_worth",
                     "seed_corr", "lr_curvature", "lr_spread", "lr_drift")}
    t = best.table
    lines = [f"Chosen by the design search (python -m leviathan.sweep.design +grid="
             f"{grid['name']} design.budget_gpu_h={budget:g}): ~{best.cost:.4g} GPU-hours; "
             f"predicted 95% half-width of {target} ±{_fmt(best.width, target)} (the grid "
             f"before: ±{_fmt(reference[0], target)} at {reference[1]:.4g} GPU-hours), under "
             "the power model "
             f"below ({model.ladders} simulated ladders)."]
    if t is not None:
        per = t[t["quantity"] == "lev_over_control"]
        if len(per):
            lines.append(f"LEV over its control per size: ±{per['half_width'].min():.1%} to "
                         f"±{per['half_width'].max():.1%}; pooled ±"
                         f"{_target_width(t, 'lev_over_control_pooled'):.1%}.")
        mult = t[(t["quantity"] == "multiplier") & (t["arm"] == "leviathan")]
        if len(mult):
            lines.append(f"Leviathan's multiplier per size: ±{mult['half_width'].min():.1%} to "
                         f"±{mult['half_width'].max():.1%}.")
    return out, "\n".join(lines)


@dataclass(frozen=True)
class DesignSearch:
    """What the search finds: the best designs (best first), the budget and target it searched,
    the grid as it stands (its score on the target, its GPU-hours) and the power model."""

    found: list[Candidate]
    budget: float
    target: str
    reference: tuple[float, float]
    model: PowerModel


def search_design(base_frame: pd.DataFrame, grid: dict, design: dict) -> DesignSearch:
    """The design search of a family's grid under its `power` model with the `design` settings
    (budget_gpu_h, target, top, keep_largest_pair). base_frame: the plan of the grid at one seed
    and the rule's LR (each (arm, size)'s cost per run)."""
    base = cells_from_plan(base_frame)
    model = model_from_grid(grid.get("power", {}))
    budget = design.get("budget_gpu_h")
    if budget is None or not float(budget) > 0:
        raise DesignError(f"design.budget_gpu_h: give the GPU-hour budget (> 0), got {budget!r}")
    target = str(design.get("target", "lev_over_control_pooled"))
    ref_cells = cells_for_grid(base, grid)
    ref_target = target if target in TARGETS else "lev_over_control_pooled"
    reference = (_score(simulate(ref_cells, model), ref_target), design_cost(ref_cells))
    found = search(base, tuple(sorted(grid["lr"])), float(budget), model, target,
                   int(design.get("top", 5)), bool(design.get("keep_largest_pair", True)))
    return DesignSearch(found, float(budget), target, reference, model)
