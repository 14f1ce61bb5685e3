"""The summary's supporting tables, one per reading: how the multipliers move (robustness), the
token multiplier, the LR chosen per arm and size, the per-bucket perplexity ratios, the b check,
data scaling (L(D) fits and data multipliers)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.config import FitConfig
from analysis.inputs.runs import human
from analysis.readings.b_check import (
    FALSE_ALARM,
    MIN_SIZES,
    interval_label,
    power_text,
    warning_text,
)
from analysis.readings.buckets import SCHEMES
from analysis.readings.noise import FIT_ONLY, LABELS
from analysis.report.format import ci, dagger, num
from analysis.scaling import FamilyResult


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


def lr_table_md(choices: pd.DataFrame, family: str) -> list[str]:
    """Markdown lines: the chosen LR per arm and size (over seeds and budgets), the optimum a
    quadratic in log LR puts there with its interval, and a flag where that optimum lies beyond
    the LRs swept by more than its uncertainty, naming the LR to add."""
    c = choices[choices["family"] == family]
    if c.empty:
        return []
    out = ["Learning rate chosen per arm and size (lowest mean final validation loss over the "
           "seeds of each sweep point: arm, size, tokens; every seed kept there; `vertex`: the "
           "optimum of a quadratic in log LR). Optimum: the vertex of a quadratic in log LR "
           "(the arm's sizes share its curvature) with its 90% interval; Edge: flagged only "
           "where that optimum lies beyond the LRs swept by more than its uncertainty "
           "(one-sided 95%):", "",
           "| Size | Arm | Chosen LR (sweep points) | Swept | Optimum [90%] | Edge |",
           "|---|---|---|---|---|---|"]
    for (size, arm), g in c.groupby(["size", "arm"], sort=False):
        won = g["lr"].value_counts().sort_index()
        chosen = ", ".join(f"{num(lr)} ({n})" for lr, n in won.items())
        optimum = " / ".join(dict.fromkeys(_optimum_cell(r) for r in g.itertuples()))
        flag = "; ".join(dict.fromkeys(f"**optimum beyond the {r.edge} LR swept: "
                                       f"{lr_add_text(r)}**"
                                       for r in g.itertuples() if r.edge))
        out.append(f"| {size} | {arm} | {chosen} | {' / '.join(sorted(set(g['swept'])))} | "
                   f"{optimum} | {flag} |")
    return out + [""]


def _bound(x: float) -> str:
    return "∞" if x == np.inf else "0" if x == 0 else num(x)


def _optimum_cell(r) -> str:
    """The vertex and its interval; untested where no seeds scatter; none without curvature."""
    if np.isnan(r.lr_vertex_lo):
        return "–" if np.isnan(r.lr_vertex) else f"{num(r.lr_vertex)} (no seeds' scatter: untested)"
    if np.isnan(r.lr_vertex):
        return "none (no curvature)"
    return f"{num(r.lr_vertex)} [{_bound(r.lr_vertex_lo)}, {_bound(r.lr_vertex_hi)}]"


def lr_add_text(r) -> str:
    """What to add for a flagged sweep point: the LR one step beyond, and grid.lr's multipliers
    (of the middle LR swept) with it."""
    swept = [float(v) for v in r.swept.split(",")]
    mid = swept[(len(swept) - 1) // 2]
    mults = ", ".join(num(v / mid) for v in swept)
    return (f"add {num(r.lr_add / mid)} to grid.lr [{mults}] (lr {num(r.lr_add)}, one step "
            f"further)")


HEADING = {"quantile": "training-frequency quantile (equal shares of the validation tokens)",
           "count": "training count (log-spaced bins of how often the token was seen)"}


def _bucket_cell(r) -> str:
    if not (np.isfinite(r.ppl_ratio_lo) and np.isfinite(r.ppl_ratio_hi)):
        return f"{r.ppl_ratio:.3f}"
    return f"{r.ppl_ratio:.3f} [{r.ppl_ratio_lo:.3f}, {r.ppl_ratio_hi:.3f}]"


BUCKET_INTERVALS = {"paired seeds": "over seeds, paired by seed",
                    "seeds": "the headline's run-to-run noise from the sweep's seeds (per arm; "
                             "unpaired)",
                    "given": "the headline's run-to-run noise at the level given (fit.seed_noise "
                             "/ --noise-from: the final loss's; a rare bucket may be noisier)"}


def _bucket_intervals(r: pd.DataFrame, level: float) -> str:
    """'; [95% interval: how]' for the ways the table's intervals were drawn, and the fit-only
    cells without one."""
    hows = [BUCKET_INTERVALS[h] for h in BUCKET_INTERVALS if (r["interval"] == h).any()]
    out = f"; [{level:.0%} interval {' or '.join(hows)}]" if hows else ""
    if (r["interval"] == "fit").any():
        out += f"; one seed and no level given: no interval ({FIT_ONLY})"
    return out


def bucket_table_md(ratios: pd.DataFrame | None, level: float = 0.95) -> list[str]:
    """Markdown, one table per scheme: rows (size, arm), one column per bucket (rare ->
    frequent), each cell the ratio with its seed interval where there are seeds."""
    if ratios is None or ratios.empty:
        return []
    out = []
    for scheme in SCHEMES:
        r = ratios[ratios["scheme"] == scheme]
        if r.empty:
            continue
        order = r.groupby("bucket")["order"].first().sort_values().index.tolist()
        seeds = _bucket_intervals(r, level)
        out += [f"Perplexity ratio arm / Dense by token-frequency bucket, by {HEADING[scheme]} "
                f"(rare -> frequent; exp(L_arm - L_dense), < 1: the arm is better{seeds}; "
                "rare_tokens.png):", "",
                "| Size | Arm | " + " | ".join(order) + " |", "|---|---|" + "---|" * len(order)]
        for (size, arm), g in r.groupby(["size", "arm"], sort=False):
            cells = {row.bucket: _bucket_cell(row) for row in g.itertuples(index=False)}
            out.append(f"| {size} | {arm} | " + " | ".join(cells.get(k, "–") for k in order)
                       + " |")
        out.append("")
    return out


def b_check_md(check: dict | None, cfg: FitConfig) -> list[str]:
    """The summary's line: the free-b fit with its interval beside the b used, the calibrated
    test's warning and its power (analysis/readings/b_check.py)."""
    if check is None:
        return [f"b check: needs Dense L(N) at {MIN_SIZES} or more sizes to fit b freely.", ""]
    used = f"b = {check['b_used']:g} " + ("used here" if check["b_fixed"] else
                                          "(Hoffmann et al.'s, which fit.b=free replaces)")
    interval = ci(check["b_lo"], check["b_hi"])
    out = [f"b check: the Dense L(N) with b free gives b = {check['b']:.3g}{interval} "
           f"({1 - FALSE_ALARM:.0%}: the b's a test with {FALSE_ALARM:.0%} false alarms does not "
           f"reject; {interval_label(check)}; {check['n_sizes']} sizes, {check['n_points']} "
           f"runs), beside {used}."]
    power = power_text(check)
    if power:
        out.append(f"Its power: {power}.")
    if check["at_bound"]:
        out.append("The free b sits at the smallest Dense loss (its bound): the ladder shows no "
                   "curvature that pins b.")
    if check["outside"]:
        out.append(f"**Warning: {warning_text(check, cfg.level)}.**")
    return out + [""]


def data_md(r: FamilyResult, cfg: FitConfig) -> list[str]:
    """The summary's data-scaling section: the L(D) fits and the data multipliers table."""
    out = []
    for f in r.data_fits:
        iv = {k: ci(*(f.get(f"{k}_ci") or (None, None))) for k in ("E_N", "B", "beta")}
        out.append(f"L(D) = E_N + B·D^-β (E_N free), {f['arm']} {f['size']}: E_N = "
                   f"{f['E_N']:.4f}{iv['E_N']}, B = {f['B']:.4g}{iv['B']}, β = {f['beta']:.4f}"
                   f"{iv['beta']} ({f['n_points']} runs).")
    m = r.data_multipliers
    if m is None or m.empty:
        return out + ([""] if out else [])
    pct = f"{cfg.level:.0%}"
    out += ["", f"Data multiplier: the tokens Dense of the same size needs for each run's loss "
                f"(D_eff / D, {pct} CI):", "",
            "| Size | Arm | Tokens | Loss | D_eff | D_eff / D | Read from |",
            "|---|---|---|---|---|---|---|"]
    for row in m.itertuples():
        if row.reason:
            val, deff = f"– ({row.reason})", "–"
        else:
            val = (f"{row.data_multiplier:.2f}×{ci(row.data_multiplier_lo, row.data_multiplier_hi)}"
                   + dagger(row.extrapolation, row.d_eff, row.dense_tokens_hi))
            deff = human(row.d_eff)
        out.append(f"| {row.size} | {row.arm} | {human(row.tokens)} | {row.loss:.4f} | {deff} | "
                   f"{val} | {row.law} |")
    out.append("")
    if m["extrapolated"].any():
        out.append("† extrapolated: D_eff lies beyond the Dense token budgets of its size, by the "
                   "factor shown (a better arm at the largest budget always needs more tokens "
                   "than Dense was given); add a longer Dense budget to read it by interpolation.")
    source = m["interval"].iloc[0]
    if source == "fit":
        out.append(f"Intervals: **{FIT_ONLY}**: one seed per arm, size and budget and no noise "
                   "level given (the Dense budgets resampled); add fit.seed_noise.<arm> or "
                   "--noise-from <pilot sweep>.")
    else:
        out.append(f"Intervals: {LABELS[source]}, as the headline: every run's loss redrawn and "
                   "the Dense law refitted each time, each run's own loss with one run's noise "
                   "(run-to-run noise of both arms included).")
    return out + [""]


def lr_miss_md(miss, family: str) -> list[str]:
    """Markdown lines: the LR model of each arm (analysis/laws/lr_miss.py): its optimum's
    offset from the rule at each swept size, and the miss each size that ran the rule's LR only
    is corrected by (expected, with its sd)."""
    if miss is None or miss.groups.empty:
        return []
    out = ["The LR rule's miss (a bias: a missed optimum only raises a loss). Per arm, the "
           "optimum's offset from the rule's LR at each swept size (vertex of a quadratic in "
           "log2 LR, one curvature per arm), and each size that ran the rule's LR only: its "
           "distance from the line through the swept optima (log N), the loss it is corrected "
           f"by and that correction's sd (every interval draws it; each size's own scatter "
           f"around the line: fit.lr_spread = {miss.spread:g} octave):", ""]
    off = miss.offsets
    if len(off):
        out += ["| Arm | Swept size | Optimum vs rule (octaves) | Curvature (loss per octave²) |",
                "|---|---|---|---|"]
        for r in off.itertuples():
            out.append(f"| {r.arm} | {r.size} | {r.offset:+.2f} ± {r.offset_sd:.2f} | "
                       f"{r.curvature:.2%} ± {r.curvature_sd:.2%} |")
        out.append("")
    g = miss.groups
    out += ["| Arm | Size | LR run | Distance from the optimum (octaves) | Loss corrected by | sd |"
            " How |", "|---|---|---|---|---|---|---|"]
    for r in g.itertuples():
        dist = f"{r.distance:+.2f}" if np.isfinite(r.distance) else ""
        sd = f"{r.sd:.2%}" if np.isfinite(r.sd) else ""
        how = ("fit.lr_miss (no sweep of 3 LRs in this arm): zero-mean" if r.how == "fallback"
               else r.how)
        out.append(f"| {r.arm} | {r.size} | {num(r.lr)} | {dist} | {-r.expected:+.2%} | {sd} | "
                   f"{how} |")
    return out + [""]
