"""The summary's headline: the three matchings side by side, LEV over its control, the shared
exponent with both intervals, and the tables that show how much each number can move."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.family import FamilyResult, FitConfig
from analysis.inputs.runs import CONTROLS, human
from analysis.readings.matchings import BASES, LABEL
from analysis.readings.noise import FIT_ONLY, noise_line

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


def num(x, digits=3) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{x:.{digits}g}"


def ci(lo, hi, digits=3) -> str:
    if lo is None or hi is None or not (np.isfinite(lo) and np.isfinite(hi)):
        return ""
    return f" [{lo:.{digits}g}, {hi:.{digits}g}]"


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
    """LEV over each control pooled across sizes (geometric mean of the per-size ratios)."""
    p = res.pooled
    if p is None or p.empty:
        return []
    out = []
    for control, g in p.groupby("control", sort=False):
        by = {r["basis"]: r for _, r in g.iterrows()}
        n = int(g["n_sizes"].max())
        cells = [_ratio_cell({**by[b], "extrapolated": False}) if b in by else "–"
                 for b in bases]
        out.append(f"| all {n} sizes | **LEV over its control, pooled** ({control}: geometric "
                   "mean of the per-size ratios) | " + " | ".join(cells) + " | |")
    return out


def lr_edge_lines(res: FamilyResult) -> list[str]:
    """A chosen LR at the edge of its sweep, on the headline (not only in the LR table)."""
    c = res.lr_choices
    if c is None or c.empty or not (c["edge"] != "").any():
        return []
    edges = c[c["edge"] != ""]
    where = ", ".join(f"{r.arm} {r.size} ({r.edge})" for r in edges.itertuples())
    return [f"**LR at the edge of its sweep** for {where}: the optimum may lie outside the "
            "LRs tried, so that arm's loss (and every number read from it) may be too high: "
            "widen the sweep (grid.lr)."]


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
        out.append("| all sizes | leviathan, one shared α | " + " | ".join(cells) + " | |")
    out.append("")
    return out + _footnotes(res, cfg, rows)


def _footnotes(res: FamilyResult, cfg: FitConfig, rows: pd.DataFrame) -> list[str]:
    m, pct = res.matching, f"{cfg.level:.0%}"
    out = []
    out += lr_edge_lines(res)
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


def robustness_md(res: FamilyResult, cfg: FitConfig) -> list[str]:
    """How far each multiplier moves with b, the fit's loss and dropping one Dense size."""
    m = res.matching
    if m is None or m.rows.empty:
        return []
    out = ["How the multipliers move with the fit's choices (Dense refitted each time):", "",
           f"| Size | Arm | Basis | Multiplier | Least squares | Drop one Dense size | "
           f"b {min(cfg.b_grid):g}–{max(cfg.b_grid):g} |", "|---|---|---|---|---|---|---|"]
    for r in m.rows.itertuples(index=False):
        if r.reason:
            continue
        out.append(f"| {r.size} | {r.arm} | {r.basis} | {r.multiplier:.3f} | "
                   f"{num(r.multiplier_ls)} | {num(r.drop_min)}–{num(r.drop_max)} | "
                   f"{num(r.b_min)}–{num(r.b_max)} |")
    return out + [""]


def tokens_md(res: FamilyResult, cfg: FitConfig) -> list[str]:
    t = res.token_multipliers
    if t is None or t.empty:
        return []
    pts = "cooled-down points only" if (t["points"] == "cooled").all() else \
        "every validation point (no cooled-down marks: mid-schedule checkpoints)"
    out = [f"Token multiplier: tokens each arm needs to reach Dense's final loss ({pts}; "
           f"{cfg.level:.0%} interval over seeds of both arms):", "",
           "| Size | Arm | Dense loss at tokens | Arm reaches it at | × fewer tokens |",
           "|---|---|---|---|---|"]
    for r in t.itertuples(index=False):
        val = f"– ({r.reason})" if r.reason else (
            f"{r.token_ratio:.2f}×{ci(r.token_ratio_lo, r.token_ratio_hi)}"
            + ("" if np.isfinite(r.token_ratio_lo) else " (one seed: no interval)"))
        out.append(f"| {r.size} | {r.arm} | {r.dense_loss:.4f} at {human(r.dense_tokens)} | "
                   f"{human(r.tokens_needed)} | {val} |")
    return out + [""]
