"""Write a fit's results: fit.json, multipliers.csv, b_sensitivity.csv, summary.md."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.joint import EPOCH_CHINCHILLA
from analysis.runs import Runs, human
from analysis.scaling import FamilyResult, FitConfig


def _clean(obj):
    """JSON-safe: NaN/inf -> None, numpy scalars -> Python numbers."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _records(df: pd.DataFrame | None) -> list:
    return [] if df is None else df.to_dict(orient="records")


def excluded_runs(table: pd.DataFrame, results: dict[str, FamilyResult]) -> pd.DataFrame:
    """Every run a fit did not use, with the reason (unfinished, NaN, below b, ...)."""
    rows = table[table["reason"] != ""][["run_id", "name", "arm", "size", "family", "loss",
                                         "reason"]]
    extra = []
    for fam, res in results.items():
        if res.multipliers is not None:
            m = res.multipliers[res.multipliers["reason"] != ""]
            extra.append(m.assign(arm="leviathan", family=fam)[list(rows.columns)])
    return pd.concat([rows, *extra], ignore_index=True).drop_duplicates("run_id")


def fit_dict(runs: Runs, cfg: FitConfig, results: dict[str, FamilyResult],
             table: pd.DataFrame) -> dict:
    fams = {}
    for fam, r in results.items():
        iv = r.intervals
        d = {"notes": r.notes}
        if r.dense is not None:
            d["dense"] = {**r.dense.as_dict(), "A_ci": iv.get("A"), "alpha_ci": iv.get("alpha"),
                          "b_ci": iv.get("b")}
            d["leviathan"] = None if r.lev is None else {
                **r.lev.as_dict(), "A_ci": iv.get("A_lev"), "alpha_ci": iv.get("alpha_lev")}
            d["shared_exponent"] = None if r.shared is None else {
                **r.shared.as_dict(), "multiplier_ci": iv.get("shared_multiplier"),
                "alpha_ci": iv.get("shared_alpha")}
            d["multipliers"] = _records(r.multipliers)
            if r.b_sensitivity is not None:
                d["b_sensitivity"] = _records(r.b_sensitivity)
        d["data_fits"] = r.data_fits
        d["data_multipliers"] = _records(r.data_multipliers)
        d["joint"] = None if r.joint is None else {
            **r.joint.as_dict(), **{f"{k}_ci": iv.get(f"joint_{k}")
                                   for k in ("E", "A", "B", "alpha", "beta")}}
        d["multiplier_vs_tokens"] = _records(r.trajectory)
        fams[fam] = d
    return _clean({
        "sweep": runs.sweep, "source": runs.source,
        "config": {**asdict(cfg), "b": "free" if cfg.b is None else cfg.b},
        "level": cfg.level, "families": fams,
        "excluded": _records(excluded_runs(table, results)),
    })


def _fmt(x, digits=4) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{x:.{digits}g}"


def _ci(lo, hi, digits=3) -> str:
    if lo is None or hi is None or not (np.isfinite(lo) and np.isfinite(hi)):
        return ""
    return f" [{lo:.{digits}g}, {hi:.{digits}g}]"


def summary_md(runs: Runs, cfg: FitConfig, results: dict[str, FamilyResult],
               table: pd.DataFrame) -> str:
    pct = f"{cfg.level:.0%}"
    b_txt = "fitted" if cfg.b is None else f"fixed at {cfg.b:g}"
    out = [f"# Scaling fit: {runs.sweep or runs.source}", "",
           f"Source: {runs.source}. N = {cfg.params} parameters; b {b_txt}; Huber delta "
           f"{cfg.delta:g} on log residuals; intervals: {pct} bootstrap percentile over runs "
           f"(and seeds), {cfg.bootstrap} resamples (seed {cfg.seed}).", ""]
    for fam, r in results.items():
        out += [f"## Family `{fam}`", ""]
        iv = r.intervals
        if r.dense is not None:
            f = r.dense
            out += [f"Dense L(N) = A·N^-α + b: A = {_fmt(f.A)}{_ci(*iv.get('A', (None, None)))}, "
                    f"α = {f.alpha:.4f}{_ci(*iv.get('alpha', (None, None)))}, b = {f.b:.4g}"
                    f"{_ci(*iv.get('b', (None, None)))} ({f.n_points} runs).", ""]
            out += [f"| Size | N | Dense loss | Leviathan loss | N_eff | Multiplier ({pct} CI) |",
                    "|---|---|---|---|---|---|"]
            for m in r.multipliers.itertuples():
                if m.reason:
                    mult = f"excluded: {m.reason}"
                else:
                    mult = f"{m.multiplier:.2f}x{_ci(m.multiplier_lo, m.multiplier_hi)}"
                dl = getattr(m, "dense_loss", np.nan)
                out.append(f"| {m.size} | {human(m.params)} | {_fmt(dl)} | {m.loss:.4f} | "
                           f"{human(m.n_eff) if np.isfinite(m.n_eff) else '–'} | {mult} |")
            out.append("")
            if r.lev is not None:
                out.append(f"Leviathan alone: α = {r.lev.alpha:.4f}"
                           f"{_ci(*iv.get('alpha_lev', (None, None)))} (Dense {f.alpha:.4f}; "
                           "the paper: 0.47 vs 0.38).")
            if r.shared is not None:
                s = r.shared
                out.append(f"Shared exponent (A_dense, A_lev, one α, b = {s.b:g}): "
                           f"multiplier (A_dense/A_lev)^(1/α) = {s.multiplier:.3f}x"
                           f"{_ci(*iv.get('shared_multiplier', (None, None)))}, α = "
                           f"{s.alpha:.4f}{_ci(*iv.get('shared_alpha', (None, None)))}.")
            out.append("")
            if r.b_sensitivity is not None and len(r.b_sensitivity):
                bs = [c for c in r.b_sensitivity.columns if c not in ("run_id", "size")]
                out += ["Sensitivity of the multipliers to b (Dense refitted at each b):", "",
                        "| Size | " + " | ".join(f"b={b}" for b in bs) + " |",
                        "|---|" + "---|" * len(bs)]
                for row in r.b_sensitivity.itertuples(index=False):
                    vals = [_fmt(v, 3) for v in row[2:]]
                    out.append(f"| {row.size} | " + " | ".join(vals) + " |")
                out.append("")
        for dfit in r.data_fits:
            out.append(f"L(D) = B·D^-β + b, {dfit['arm']} {dfit['size']}: B = {_fmt(dfit['B'])}"
                       f"{_ci(*dfit['B_ci'])}, β = {dfit['beta']:.4f}{_ci(*dfit['beta_ci'])}, "
                       f"b = {dfit['b']:.4g} ({dfit['n_points']} runs).")
        if r.data_multipliers is not None:
            for m in r.data_multipliers.itertuples():
                out.append(f"Data multiplier {m.size} at {human(m.tokens)} tokens: "
                           f"D_eff = {human(m.d_eff)}, {_fmt(m.data_multiplier, 3)}x.")
        if r.joint is not None:
            j = r.joint
            c = {k: _ci(*iv.get(f"joint_{k}", (None, None))) for k in ("E", "A", "B", "alpha",
                                                                          "beta")}
            out.append(f"Joint L(N, D) = E + A·N^-α + B·D^-β (Epoch AI's fitting procedure): "
                       f"E = {j.E:.4f}{c['E']}, A = {j.A:.4g}{c['A']}, B = {j.B:.4g}{c['B']}, "
                       f"α = {j.alpha:.4f}{c['alpha']}, β = {j.beta:.4f}{c['beta']} "
                       f"({j.n_points} runs).")
            if r.multipliers is not None and "multiplier_joint" in r.multipliers:
                out.append("Multipliers from the joint law at each run's own D: " + ", ".join(
                    f"{m.size} at {human(m.tokens)} tokens {_fmt(m.multiplier_joint, 3)}x"
                    for m in r.multipliers.itertuples()) + ".")
        if r.trajectory is not None:
            last = r.trajectory.sort_values("tokens").groupby("run_id").tail(1)
            out.append("Multiplier at the last matched token count: " + ", ".join(
                f"{row.size} {row.multiplier:.3g}x at {human(row.tokens)}"
                for row in last.itertuples()) + " (multiplier_vs_tokens.png).")
        out += [f"- {n}" for n in r.notes] + [""]
    exc = excluded_runs(table, results)
    out += ["## Excluded runs", ""]
    if exc.empty:
        out.append("None.")
    else:
        out += ["| Run | Arm | Size | Family | Reason |", "|---|---|---|---|---|"]
        out += [f"| {e.name or e.run_id} | {e.arm} | {e.size} | {e.family} | {e.reason} |"
                for e in exc.itertuples()]
    return "\n".join(out) + "\n"


def write_outputs(out_dir: Path, runs: Runs, cfg: FitConfig, results: dict[str, FamilyResult],
                  table: pd.DataFrame) -> list[Path]:
    """fit.json, multipliers.csv, b_sensitivity.csv, summary.md (+ tokens CSV when present)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    p = out_dir / "fit.json"
    p.write_text(json.dumps(fit_dict(runs, cfg, results, table), indent=2))
    written.append(p)
    cols = ["family", "run_id", "name", "size", "pair", "seed", "params", "tokens", "loss",
            "dense_params", "dense_loss", "n_eff", "n_eff_lo", "n_eff_hi", "multiplier",
            "multiplier_lo", "multiplier_hi", "n_eff_joint", "multiplier_joint", "reason"]
    mults = [r.multipliers.assign(family=f) for f, r in results.items()
             if r.multipliers is not None]
    mdf = pd.concat(mults, ignore_index=True) if mults else pd.DataFrame(columns=cols)
    p = out_dir / "multipliers.csv"
    if "multiplier_joint" not in mdf.columns:
        cols = [c for c in cols if not c.endswith("_joint")]
    mdf.reindex(columns=cols).to_csv(p, index=False)
    written.append(p)
    sens = [r.b_sensitivity.assign(family=f) for f, r in results.items()
            if r.b_sensitivity is not None]
    if sens:
        p = out_dir / "b_sensitivity.csv"
        pd.concat(sens, ignore_index=True).to_csv(p, index=False)
        written.append(p)
    traj = [r.trajectory.assign(family=f) for f, r in results.items() if r.trajectory is not None]
    if traj:
        p = out_dir / "multiplier_vs_tokens.csv"
        pd.concat(traj, ignore_index=True).to_csv(p, index=False)
        written.append(p)
    p = out_dir / "summary.md"
    p.write_text(summary_md(runs, cfg, results, table))
    written.append(p)
    return written


def chinchilla_line(fit) -> str:
    """'E 1.817 (Epoch 1.817 ± 0.026) ...' for the validation printout."""
    return ", ".join(f"{k} {getattr(fit, k):.4g} (Epoch {v:.4g} ± {se:.3g})"
                     for k, (v, se) in EPOCH_CHINCHILLA.items())
