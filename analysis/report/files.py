"""Write a fit's results: fit.json, summary.md and the tables.

multipliers.csv: one row per (family, non-Dense arm, size, basis): analysis/readings/matchings.py
ROW_COLUMNS (x: the run's quantity in that basis: total or body parameters, or training FLOPs;
n_eff: the Dense-equivalent in the same unit; extrapolated/extrapolation: outside the Dense
points, and by what factor). lev_vs_control.csv: size, control, basis, ratio, ratio_lo,
ratio_hi (ratio = N_eff,lev / N_eff,ctl in that basis; + both multipliers); both files also hold
one row per (arm or control, basis) with size `trend`: slope, slope_lo, slope_hi (of ln value
on ln N, with its interval) and q_p (the homogeneity test across sizes: a small p, the value
changes with size). lev_vs_control_pooled.csv: the pooled ratio with `homogeneous` and q_p.
multipliers_by_run.csv: the paper's per-run table (every Leviathan run, N = fit.params;
interval: seeds | given | fit, the noise its interval was drawn with, seed_noise and lr_miss: its
(arm, size)'s relative sd and LR-rule miss; extrapolated/extrapolation: N_eff outside the Dense
sizes, and by what factor; *_joint: the same off the joint L(N, D) at the run's own D, with
its interval and the noise it was drawn with).
data_multipliers.csv: D_eff / D of every non-Dense run of a size with several budgets
(analysis/readings/data_multipliers.py COLUMNS). Also b_sensitivity.csv, lr_choices.csv,
token_multipliers.csv, bucket_ratios.csv, multiplier_vs_tokens.csv where there is something to
write; headline.md, each family's headline table (the sweep's parent run's description on
MLflow).

The output folder is the fit's: before a fit writes, the last fit's outputs (everything there)
move to previous/, replacing the generation before (keep_previous). fit.json names the fit:
`config_hash` (sha256 of its settings, `config`) and `fitted_at` (UTC); its MLflow artifact
folder on the sweep's parent run is fit/<fitted_at>-<config_hash[:12]> (fit_folder).
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.config import FitConfig
from analysis.inputs.runs import Runs
from analysis.laws.joint import EPOCH_CHINCHILLA
from analysis.readings.controls import RATIO_COLUMNS
from analysis.readings.matchings import ROW_COLUMNS
from analysis.report.summary import headline_note, summary_md
from analysis.scaling import Analysis


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


PREVIOUS = "previous"  # the last fit's outputs, inside the output folder
HEADLINE = "headline.md"  # the headline tables: the sweep's parent run's description too


def config_dict(cfg: FitConfig) -> dict:
    return _clean({**asdict(cfg), "b": "free" if cfg.b is None else cfg.b})


def config_hash(cfg: FitConfig) -> str:
    """sha256 of the fit's settings (their JSON, keys sorted)."""
    text = json.dumps(config_dict(cfg), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def fit_folder(fit: dict) -> str:
    """The artifact folder of a fit (its fit.json) on the sweep's parent run."""
    return f"fit/{fit['fitted_at']}-{fit['config_hash'][:12]}"


def keep_previous(out_dir: Path) -> Path | None:
    """When out_dir holds a fit (fit.json), move everything in it to out_dir/previous/, after
    deleting what was there (one generation); returns that folder."""
    if not (out_dir / "fit.json").is_file():
        return None
    prev = out_dir / PREVIOUS
    shutil.rmtree(prev, ignore_errors=True)
    prev.mkdir()
    for p in out_dir.iterdir():
        if p != prev:
            p.rename(prev / p.name)
    return prev


def fit_dict(runs: Runs, cfg: FitConfig, analysis: Analysis) -> dict:
    fams = {}
    for fam, r in analysis.families.items():
        iv = r.intervals
        d = {"notes": r.notes}
        if r.dense is not None:
            d["dense"] = {**r.dense.as_dict(), "A_ci": iv.get("A"), "alpha_ci": iv.get("alpha"),
                          "b_ci": iv.get("b")}
            d["leviathan"] = None if r.lev is None else {
                **r.lev.as_dict(), "A_ci": iv.get("A_lev"), "alpha_ci": iv.get("alpha_lev")}
            d["shared_exponent"] = None if r.shared is None else {
                **r.shared.as_dict(), "multiplier_ci": iv.get("shared_multiplier"),
                "multiplier_t_ci": iv.get("shared_multiplier_t"),
                "alpha_ci": iv.get("shared_alpha")}
            d["multipliers"] = _records(r.multipliers)
            if r.b_sensitivity is not None:
                d["b_sensitivity"] = _records(r.b_sensitivity)
        d["b_check"] = r.b_check
        d["data_fits"] = r.data_fits
        d["data_multipliers"] = _records(r.data_multipliers)
        d["joint"] = None if r.joint is None else {
            **r.joint.as_dict(), **{f"{k}_ci": iv.get(f"joint_{k}")
                                   for k in ("E", "A", "B", "alpha", "beta")}}
        d["multiplier_vs_tokens"] = _records(r.trajectory)
        m = r.matching
        d["matchings"] = None if m is None else {
            "interval": m.interval, "off": m.off, "lack_of_fit": m.lack_of_fit,
            "rows": _records(m.rows),
            "dense_fits": {b: f.as_dict() for b, f in m.fits.items()}}
        d["lev_vs_control"] = _records(r.controls)
        d["lev_vs_control_pooled"] = _records(r.pooled)
        d["trends"] = _records(r.trends)
        d["lr_choices"] = _records(r.lr_choices)
        d["token_multipliers"] = _records(r.token_multipliers)
        d["bucket_ratios"] = _records(r.bucket_ratios)
        fams[fam] = d
    return _clean({
        "sweep": runs.sweep, "source": runs.source, "config": config_dict(cfg),
        "config_hash": config_hash(cfg),
        "fitted_at": time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()),
        "level": cfg.level, "families": fams,
        "excluded": _records(analysis.excluded.shown(analysis.table)),
    })


TREND_EXTRA = ["slope", "slope_lo", "slope_hi", "q_p"]


def _trend_rows(r, family: str, quantity: str) -> pd.DataFrame:
    """The `trend` rows of multipliers.csv (arm) or lev_vs_control.csv (control)."""
    t = r.trends
    if t is None or t.empty:
        return pd.DataFrame()
    t = t[t["quantity"] == quantity]
    key = "arm" if quantity == "multiplier" else "control"
    return pd.DataFrame({"family": family, key: t["arm"], "size": "trend", "basis": t["basis"],
                         **{c: t[c] for c in TREND_EXTRA}})


def write_outputs(out_dir: Path, runs: Runs, cfg: FitConfig, analysis: Analysis) -> list[Path]:
    """Every output file (module docstring), the last fit's moved to previous/ first; returns
    their paths."""
    results = analysis.families
    out_dir.mkdir(parents=True, exist_ok=True)
    keep_previous(out_dir)
    written = []
    p = out_dir / "fit.json"
    p.write_text(json.dumps(fit_dict(runs, cfg, analysis), indent=2))
    written.append(p)
    cols = ["family", "run_id", "name", "size", "pair", "seed", "params", "tokens", "loss",
            "dense_params", "dense_loss", "n_eff", "n_eff_lo", "n_eff_hi", "multiplier",
            "multiplier_lo", "multiplier_hi", "interval", "seed_noise", "lr_miss",
            "extrapolated", "extrapolation", "n_eff_joint", "multiplier_joint",
            "multiplier_joint_lo", "multiplier_joint_hi", "interval_joint", "extrapolated_joint",
            "extrapolation_joint", "reason"]
    mults = [r.multipliers.assign(family=f) for f, r in results.items()
             if r.multipliers is not None]
    mdf = pd.concat(mults, ignore_index=True) if mults else pd.DataFrame(columns=cols)
    p = out_dir / "multipliers_by_run.csv"
    if "multiplier_joint" not in mdf.columns:
        cols = [c for c in cols if not c.endswith("_joint")]
    for col in ("extrapolated", "extrapolated_joint"):  # off-ladder rows have no reading
        if col in mdf.columns:
            mdf[col] = mdf[col].astype("boolean").fillna(False).astype(bool)
    mdf.reindex(columns=cols).to_csv(p, index=False)
    written.append(p)
    rows = [frame for f, r in results.items() if r.matching is not None
            for frame in (r.matching.rows.assign(family=f), _trend_rows(r, f, "multiplier"))]
    p = out_dir / "multipliers.csv"
    (pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()).reindex(
        columns=["family", *ROW_COLUMNS, *TREND_EXTRA]).to_csv(p, index=False)
    written.append(p)
    p = out_dir / "lev_vs_control.csv"
    ctl = [frame for f, r in results.items() if r.controls is not None
           for frame in (r.controls.assign(family=f), _trend_rows(r, f, "lev_over_control"))]
    (pd.concat(ctl, ignore_index=True) if ctl else pd.DataFrame()).reindex(
        columns=["family", *RATIO_COLUMNS, *TREND_EXTRA]).to_csv(p, index=False)
    written.append(p)
    pooled = [r.pooled.assign(family=f) for f, r in results.items()
              if r.pooled is not None and len(r.pooled)]
    if pooled:
        p = out_dir / "lev_vs_control_pooled.csv"
        pd.concat(pooled, ignore_index=True).to_csv(p, index=False)
        written.append(p)
    for name in ("lr_choices", "token_multipliers", "bucket_ratios", "data_multipliers"):
        frames = [getattr(r, name).assign(family=f) for f, r in results.items()
                  if getattr(r, name) is not None and len(getattr(r, name))]
        if frames:
            p = out_dir / f"{name}.csv"
            pd.concat(frames, ignore_index=True).to_csv(p, index=False)
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
    p.write_text(summary_md(runs, cfg, analysis))
    written.append(p)
    p = out_dir / HEADLINE
    p.write_text(headline_note(runs, cfg, results))
    written.append(p)
    return written


def chinchilla_line(fit) -> str:
    """'E 1.817 (Epoch 1.817 ± 0.026) ...' for the validation printout."""
    return ", ".join(f"{k} {getattr(fit, k):.4g} (Epoch {v:.4g} ± {se:.3g})"
                     for k, (v, se) in EPOCH_CHINCHILLA.items())
