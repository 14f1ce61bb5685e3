"""Runs from CSV files: `--csv runs.csv` (one row per run) and `--curves curves.csv` (validation
curves, one row per point).

runs.csv, required: arm (dense | leviathan | a control: factorized, dense_untied,
factorized_wide, lev_codebooks), params (total
parameters), tokens (tokens trained), loss (final validation loss). Optional, each switching on
what needs it: body_params (all but the input table/LEV and the head: the body matching), flops
(training FLOPs of the run: the compute matching), size (runs of one size meet; default: a Dense
run's parameter count, any other arm the nearest Dense size), pair, seed (seeds give intervals
run-to-run noise), lr (an LR sweep: the best LR per arm, size, tokens and seed is kept), family,
status, cooled (true for a cooled-down WSD point), run / name (to join curves.csv).

curves.csv: run (or name, matching runs.csv's column), tokens, loss, optional cooled (true where
the point ends a cooldown). Used for the token multiplier and the multiplier against tokens.

buckets.csv (`--buckets`): run (or name), bucket, loss: each run's validation loss per
token-frequency bucket, as training logs it (val/loss_freq/<bucket>): quantile names `q00-10`
... and log-spaced training-count names `0`, `1e0-1e1` ... may sit side by side
(analysis/readings/buckets.py reads each scheme on its own, with seed intervals from runs.csv's
`seed`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.inputs.runs import ARMS, HISTORY, AnalysisError, Runs, finalize, flag

REQUIRED = ("arm", "params", "tokens", "loss")
OPTIONAL = ("body_params", "flops", "size", "pair", "seed", "lr", "family", "status", "cooled",
            "run", "name")
ALIASES = {"params_body": "body_params"}  # older CSVs
CURVES_REQUIRED = ("tokens", "loss")


def _read(path: Path, flag_name: str) -> pd.DataFrame:
    if not path.is_file():
        raise AnalysisError(f"{flag_name} {path}: no such file")
    df = pd.read_csv(path)
    df.columns = [c.strip() for c in df.columns]
    return df.rename(columns={k: v for k, v in ALIASES.items() if v not in df.columns})


def load_csv(path: str | Path, params_kind: str = "total", curves: str | Path | None = None,
             buckets: str | Path | None = None) -> Runs:
    """Runs from runs.csv (module docstring), with the validation curves of curves.csv and the
    bucket losses of buckets.csv."""
    path = Path(path)
    df = _read(path, "--csv")
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise AnalysisError(f"{path}: missing column(s) {missing}; need {list(REQUIRED)} "
                            f"(optional {', '.join(OPTIONAL)}; arm one of {', '.join(ARMS)}), "
                            f"found {list(df.columns)}")
    t = pd.DataFrame({
        "run_id": df["run"].astype(str) if "run" in df else [f"row{i + 2}" for i in range(len(df))],
        "name": df["name"] if "name" in df else "",
        "arm": df["arm"], "params_total": df["params"],
        "params_body": df["body_params"] if "body_params" in df else float("nan"),
        "tokens": df["tokens"], "loss": df["loss"],
    })
    for col in ("flops", "size", "pair", "family", "seed", "lr", "status", "cooled"):
        if col in df:
            t[col] = df[col]
    if params_kind == "body" and "body_params" not in df:
        # a CSV has one count per run: with --params body it must be the non-embedding one
        t["params_body"] = df["params"]
    runs = Runs(table=finalize(t, params_kind, str(path)), source=str(path), sweep=None)
    if curves is not None:
        runs.history = load_curves(curves, runs.table, path)
    if buckets is not None:
        runs.buckets = load_buckets(buckets, runs.table, path)
    return runs


def load_buckets(path: str | Path, table: pd.DataFrame, runs_path: Path) -> pd.DataFrame:
    """buckets.csv joined to the runs by `run` or `name`, as Runs.buckets (run_id, bucket,
    order, loss)."""
    from analysis.inputs.runs import bucket_order

    path = Path(path)
    df = _read(path, "--buckets")
    missing = [c for c in ("bucket", "loss") if c not in df.columns]
    if missing or not {"run", "name"} & set(df.columns):
        raise AnalysisError(f"{path}: missing column(s) {missing or ['run']}; need run (or "
                            f"name), bucket, loss, found {list(df.columns)}")
    ids = _join(path, df, table, runs_path)
    names = df["bucket"].astype(str)
    return pd.DataFrame({"run_id": ids, "bucket": names,
                         "order": [bucket_order(n, i) for i, n in enumerate(names)],
                         "loss": pd.to_numeric(df["loss"], errors="coerce")})


def _join(path: Path, df: pd.DataFrame, table: pd.DataFrame, runs_path: Path) -> pd.Series:
    """df's run ids in the runs table, by `run` (runs.csv's `run`) or `name`."""
    key = "run" if "run" in df.columns else "name"
    ids = table["run_id"] if key == "run" else table["name"]
    lookup = dict(zip(ids.astype(str), table["run_id"], strict=True))
    unknown = sorted(set(df[key].astype(str)) - set(lookup))
    if unknown:
        raise AnalysisError(f"{path}: {key} {unknown[:5]} not in {runs_path} (column `{key}`)")
    return df[key].astype(str).map(lookup)


def load_curves(path: str | Path, table: pd.DataFrame, runs_path: Path) -> pd.DataFrame:
    """curves.csv joined to the runs by `run` (runs.csv's `run`) or `name` (runs.csv's `name`)."""
    path = Path(path)
    df = _read(path, "--curves")
    key = "run" if "run" in df.columns else "name" if "name" in df.columns else None
    missing = [c for c in CURVES_REQUIRED if c not in df.columns] + ([] if key else ["run"])
    if missing:
        raise AnalysisError(f"{path}: missing column(s) {missing}; need run (or name), "
                            f"{', '.join(CURVES_REQUIRED)} (optional cooled), found "
                            f"{list(df.columns)}")
    ids = table["run_id"] if key == "run" else table["name"]
    if key == "name" and not table["name"].astype(bool).any() or key == "run" and \
            table["run_id"].str.startswith("row").all():
        raise AnalysisError(f"{path}: joins runs by `{key}`, but {runs_path} has no `{key}` "
                            f"column; add it to both files")
    lookup = dict(zip(ids.astype(str), table["run_id"], strict=True))
    unknown = sorted(set(df[key].astype(str)) - set(lookup))
    if unknown:
        raise AnalysisError(f"{path}: {key} {unknown[:5]} not in {runs_path} (column `{key}`)")
    return pd.DataFrame({
        "run_id": df[key].astype(str).map(lookup),
        "tokens": pd.to_numeric(df["tokens"], errors="coerce"),
        "loss": pd.to_numeric(df["loss"], errors="coerce"),
        "cooled": df["cooled"].map(flag) if "cooled" in df else float("nan"),
    }, columns=HISTORY)


def load_chinchilla(path: str | Path, drop_highest: int = 5):
    """Epoch's extracted Chinchilla runs: DataFrame N, D (= C / 6N), loss, minus the top losses."""
    df = pd.read_csv(path)
    missing = {"Model Size", "Training FLOP", "loss"} - set(df.columns)
    if missing:
        raise ValueError(f"{path}: missing columns {sorted(missing)}")
    out = pd.DataFrame({"N": df["Model Size"].astype(float),
                        "D": df["Training FLOP"].astype(float) / (6.0 * df["Model Size"]),
                        "loss": df["loss"].astype(float)}).dropna()
    if drop_highest:
        cut = np.sort(out["loss"].to_numpy())[-drop_highest]
        out = out[out["loss"] < cut]
    return out.reset_index(drop=True)
