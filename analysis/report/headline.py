"""The summary's headline: the three matchings side by side, LEV over its control, the shared
exponent with both intervals, and where the intervals' run-to-run noise comes from (noise_line);
how much each number can move is in analysis/report/tables.py."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.config import FitConfig
from analysis.inputs.runs import CONTROLS
from analysis.readings.matchings import BASES, LABEL
from analysis.readings.noise import FIT_ONLY, Noise
from analysis.report.format import ci, num
from analysis.scaling import FamilyResult

ARM_ORDER = ("leviathan", "factorized", "factorized_wide", "lev_codebooks", "dense_untied")
QUESTION = {
    "params": "total parameters (the paper's): what a memory budget buys",
    "body": "body parameters (all but the input table/LEV and the head): whether the gain is "
            "in the architecture or only parameters moved from the table into depth",
    "compute": "training compute (C_eff / C from the Dense L(C)): what the same training cost "
               "buys",
}
WHAT = {"params": "memory", "body": "architecture", "compute": "cost"}  # a column's question
ISOLATES = {"factorized": "the generator itself", "dense_untied": "LEV beyond untying the head",
            "factorized_wide": "LEV's structure beyond its rank",
            "lev_codebooks": "the splines beyond the codebook sharing"}
CONTROL_QUESTION = {
    "factorized": "a low-rank ordinary input table with LEV's parameter count on Leviathan's "
                  "backbone (same depth, same compute, no generator): the ratio is what the "
                  "generator itself buys",
    "factorized_wide": "an ordinary input table of the rank LEV's table can reach "
                       "(model.factorized.rank=span: min(D, h + d_seed)) on Leviathan's "
                       "backbone, not parameter-matched (~V_pad r parameters more): it can hold "
                       "any table LEV generates, so the ratio is what LEV's structure (rows tied "
                       "through the codebooks and splines) buys beyond the rank of its table",
    "lev_codebooks": "LEV without its splines (model.lev.splines=false: e = W_r z, a sum of k "
                     "per-digit vectors) on Leviathan's backbone, the spline parameters fewer: "
                     "the ratio is what the spline modes buy beyond the base-b codebook "
                     "sharing",
    "dense_untied": "Dense with an untied head: the ratio separates LEV from untying the head",
}


def _cell(row) -> str:
    if row is None:
        return ""
    if row["reason"]:
        return f"– ({row['reason'].split(':')[0]})"
    out = f"{row['multiplier']:.2f}×{ci(row['multiplier_lo'], row['multiplier_hi'])}"
    if row["interval"] == "fit" and np.isfinite(row["multiplier_lo"]):
        out += f" {FIT_ONLY}"
    if row["extrapolated"]:
        way = "above" if row["n_eff"] > row["x"] else "below"
        out += f" †{row['extrapolation']:.2f}× {way}"
    return out


def _ratio_cell(row) -> str:
    """LEV over its control: the ratio, its interval only when it includes run-to-run noise."""
    iv = ci(row["ratio_lo"], row["ratio_hi"])
    if row["interval"] == "fit":
        iv = " (no interval: one seed and no noise level)"
    return f"{row['ratio']:.3f}{iv}" + (" †" if row["extrapolated"] else "")


def _pooled_rows(res: FamilyResult, bases: list[str]) -> list[str]:
    """LEV over each control across sizes: its trend first (the slope of ln ratio on ln N), then
    the pooled ratio (geometric mean of the per-size ratios) only where the test finds one
    number across sizes; where it does not, the value at the largest size in its place."""
    p = res.pooled
    if p is None or p.empty:
        return []
    t = res.trends if res.trends is not None else pd.DataFrame(columns=["quantity"])
    out = []
    for control, g in p.groupby("control", sort=False):
        by = {r["basis"]: r for _, r in g.iterrows()}
        tr = {r["basis"]: r for _, r in t[(t["quantity"] == "lev_over_control")
                                            & (t["arm"] == control)].iterrows()}
        n = int(g["n_sizes"].max())
        if tr:
            out.append(f"| trend | LEV over its control ({control}): slope of ln ratio on ln N, "
                       "homogeneity across sizes | "
                       + " | ".join(_trend_cell(tr.get(b)) for b in bases) + " | |")
        cells = []
        for b in bases:
            if b not in by:
                cells.append("–")
            elif b in tr and not tr[b]["homogeneous"]:
                cells.append(f"not pooled: {tr[b]['at_largest']:.3f}"
                             f"{ci(tr[b]['at_largest_lo'], tr[b]['at_largest_hi'])} at "
                             f"{tr[b]['largest']}")
            else:
                cells.append(_ratio_cell({**by[b], "extrapolated": False}))
        out.append(f"| all {n} sizes | **LEV over its control, pooled** ({control}: geometric "
                   "mean of the per-size ratios, where one number) | " + " | ".join(cells)
                   + " | |")
    return out


def _trend_cell(r) -> str:
    if r is None:
        return "–"
    q = "" if not np.isfinite(r["q_p"]) else (
        f"; one number (p = {r['q_p']:.2g})" if r["homogeneous"] else
        f"; **changes with size** (p = {r['q_p']:.2g})")
    return f"{r['slope']:+.3f}{ci(r['slope_lo'], r['slope_hi'])}{q}"


def trend_lines(res: FamilyResult) -> list[str]:
    """Why a number is not pooled, one line each; and the multipliers' trends."""
    t = res.trends
    if t is None or t.empty:
        return []
    out = []
    for r in t[(t["quantity"] == "lev_over_control") & ~t["homogeneous"]].itertuples():
        out.append(f"**Not pooled** (LEV over {r.arm}, by {LABEL[r.basis]}): the per-size ratios "
                   f"are not one number (homogeneity p = {r.q_p:.2g}; slope of ln ratio on ln N "
                   f"{r.slope:+.3f}{ci(r.slope_lo, r.slope_hi)}): read them per size, and at the "
                   f"largest, {r.largest}: {r.at_largest:.3f}"
                   f"{ci(r.at_largest_lo, r.at_largest_hi)}.")
    mult = t[t["quantity"] == "multiplier"]
    if len(mult):
        out.append("Trend of each multiplier (slope of ln multiplier on ln N; homogeneity p): "
                   + "; ".join(f"{r.arm} by {LABEL[r.basis]} {r.slope:+.3f}"
                               f"{ci(r.slope_lo, r.slope_hi)}, p = {r.q_p:.2g}"
                               for r in mult.itertuples()) + ".")
    return out


def lr_edge_lines(res: FamilyResult) -> list[str]:
    """An LR optimum beyond the edge of its sweep, on the headline (not only in the LR table):
    only where the fitted curve puts it there by more than its uncertainty."""
    from analysis.report.tables import lr_add_text

    c = res.lr_choices
    if c is None or c.empty or not (c["edge"] != "").any():
        return []
    edges = c[c["edge"] != ""]
    where = "; ".join(dict.fromkeys(
        f"{r.arm} {r.size} (beyond the {r.edge}: {lr_add_text(r)})" for r in edges.itertuples()))
    return [f"**LR optimum beyond its sweep** for {where}: a quadratic in log LR puts the "
            "optimum past the LRs tried by more than its own uncertainty (one-sided 95%), so "
            "that arm's loss there (and every number read from it) is too high."]


def _sizes(rows: pd.DataFrame) -> list[str]:
    return rows.groupby("size")["params"].mean().sort_values().index.tolist()


def headline_md(res: FamilyResult, cfg: FitConfig) -> list[str]:
    m = res.matching
    if m is None or m.rows.empty:
        return []
    rows, pct = m.rows, f"{cfg.level:.0%}"
    bases = [b for b in BASES if b in m.fits]
    b_lo, b_hi = min(cfg.b_grid), max(cfg.b_grid)
    head = ["Size", "Arm"] + [f"By {LABEL[b]} ({WHAT[b]})" for b in bases] + [
        f"b {b_lo:g}–{b_hi:g} ({LABEL[bases[0]]})"]
    out = [f"### Headline: the Dense model each arm is worth ({pct} CI)", "",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    ctl = res.controls if res.controls is not None else pd.DataFrame()
    for size in _sizes(rows):
        at = rows[rows["size"] == size]
        for arm in ARM_ORDER:
            g = at[at["arm"] == arm]
            if g.empty:
                continue
            by = {r["basis"]: r for _, r in g.iterrows()}
            first = by.get(bases[0])
            spread = "" if first is None or first["reason"] else \
                f"{num(first['b_min'])}–{num(first['b_max'])}×"
            out.append(f"| {size} | {arm} | " + " | ".join(_cell(by.get(b)) for b in bases)
                       + f" | {spread} |")
        for control in CONTROLS:
            c = ctl[(ctl["size"] == size) & (ctl["control"] == control)] if len(ctl) else ctl
            if c.empty:
                continue
            by = {r["basis"]: r for _, r in c.iterrows()}
            cells = [_ratio_cell(by[b]) if b in by else "–" for b in bases]
            out.append(f"| {size} | **LEV over its control** ({control}: {ISOLATES[control]}, "
                       "N_eff ratio) | "
                       + " | ".join(cells) + " | |")
    out += _pooled_rows(res, bases)
    if res.shared is not None:
        iv = res.intervals
        col = {"total": "params", "body": "body"}[cfg.params]
        cells = ["" for _ in bases]
        if col in bases:
            cells[bases.index(col)] = (
                f"{res.shared.multiplier:.2f}× boot{ci(*iv.get('shared_multiplier', (None,) * 2))}"
                f" t{ci(*iv.get('shared_multiplier_t', (None,) * 2))}")
        out.append("| all sizes | leviathan, one shared α (an average over sizes) | "
                   + " | ".join(cells) + " | |")
    out.append("")
    return out + _footnotes(res, cfg, rows)


def _footnotes(res: FamilyResult, cfg: FitConfig, rows: pd.DataFrame) -> list[str]:
    m, pct = res.matching, f"{cfg.level:.0%}"
    out = []
    out += lr_edge_lines(res)
    out += trend_lines(res)
    out.append(noise_line(m.noise).replace("Intervals: ", f"Intervals ({pct} bootstrap, the "
                                             "Dense curve refitted each time): ", 1))
    for basis, lof in m.lack_of_fit.items():
        if lof is not None and lof["p"] < 0.05:
            out.append(f"**Lack of fit by {LABEL[basis]}**: the Dense power law misses its size "
                       f"means by more than seed noise explains (F = {lof['F']:.3g} on "
                       f"{lof['df_lof']}, {lof['df_pe']} df, p = {lof['p']:.2g}); intervals "
                       "built from seed noise understate how uncertain these multipliers are: "
                       "see how they move below.")
    if rows["extrapolated"].any():
        out.append("† extrapolated: the Dense-equivalent lies outside the fitted Dense points, "
                   "by the factor shown; add Dense rungs to read it by interpolation.")
    if res.shared is not None:
        out.append("Shared α: both arms on one exponent, multiplier (A_dense/A_lev)^(1/α); boot: "
                   "bootstrap over sizes; t: lack-of-fit interval (Student-t on n − 3 degrees "
                   "of freedom from the fit's own residuals).")
    out += ["", "What each matching answers: by " + "; by ".join(
        QUESTION[b] for b in BASES if b in m.fits) + "."]
    out += [f"Switched off: by {LABEL[b]} ({why})." for b, why in m.off.items()]
    if res.controls is not None and len(res.controls):
        out += ["LEV over its control: the ratio of the two arms' effective sizes N_eff,lev / "
                "N_eff,ctl, both read off the same Dense curve of each column (equivalently, "
                "from their loss difference): equal losses give 1 whatever the arms' parameter "
                "counts or FLOPs; a column only sets which Dense curve turns the loss gap into "
                "a size ratio."]
        out += ["Controls: " + "; ".join(f"`{c}` — {CONTROL_QUESTION[c]}" for c in
                                         sorted(set(res.controls["control"]))) + "."]
    return out + [""]


def noise_line(noise: Noise) -> str:
    """One line for the summary: where the intervals' run-to-run noise comes from."""
    if noise.source == "fit":
        return (f"Intervals: {FIT_ONLY}: one seed per arm and size and no noise level given; "
                "the bootstrap resamples only the Dense sizes, so LEV over its control gets no "
                "interval (add grid.seeds, or give fit.seed_noise.<arm> / --noise-from <pilot "
                "sweep>).")
    levels = ", ".join(f"{a} {v:.2%}" for a, v in sorted(noise.levels.items())
                       if math.isfinite(v))
    if noise.model == "loglinear" and noise.by_size:
        levels = _by_size_levels(noise)
    miss = (f" Sizes that ran the LR rule's LR only ({', '.join(noise.unswept)}) are corrected "
            "for its expected miss of their optimum, per arm from its swept sizes (the LR miss "
            f"table), and every replicate draws that miss again (sd up to {noise.lr_miss:.2%} "
            "of the loss)." if noise.lr_miss else "")
    return (f"Intervals: {noise.label}: {levels}." + "".join(f" {n}." for n in noise.notes)
            + miss)


def _by_size_levels(noise: Noise) -> str:
    """Each arm's fitted level at its smallest and largest size (fit.noise_model=loglinear)."""
    out = []
    for arm in sorted(noise.levels):
        at = [(g.split("|", 1)[1], sd, dof) for g, (sd, dof) in noise.by_size.items()
              if g.split("|", 1)[0] == arm]
        if not at:
            continue
        slope = noise.slope.get(arm)
        first, last = at[0], at[-1]
        if slope is None or len(at) < 2:
            out.append(f"{arm} {first[1]:.2%}")
            continue
        lo, hi = min(at, key=lambda r: _n(r[0])), max(at, key=lambda r: _n(r[0]))
        out.append(f"{arm} {lo[1]:.2%} at {lo[0]} to {hi[1]:.2%} at {hi[0]} (sd ∝ N^{slope:+.2f}"
                   f"; {hi[2]:.0f} degrees of freedom at {hi[0]})")
        del first, last
    return ", ".join(out) + "; fit.noise_model=loglinear"


def _n(size: str) -> float:
    """A size label's number (60M -> 6e7) for ordering."""
    units = {"K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}
    try:
        return float(size[:-1]) * units[size[-1]] if size[-1] in units else float(size)
    except ValueError:
        return math.inf
