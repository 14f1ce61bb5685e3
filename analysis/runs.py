"""A sweep's runs as pandas tables, read from MLflow (the platform's schema) or from a CSV.

One row per run in `Runs.table` (excluded runs stay, with the reason in `reason`), the
intermediate validation losses in `Runs.history` and the token-frequency bucket losses in
`Runs.buckets`. Nothing is dropped silently: a run the fits cannot use says why.
"""

from __future__ import annotations

import json
import math
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

ARMS = ("dense", "leviathan")
COLUMNS = ["run_id", "name", "arm", "size", "pair", "family", "seed", "params", "params_total",
           "params_body", "tokens", "loss", "status", "reason"]
CSV_REQUIRED = ("arm", "params", "tokens", "loss")
SEED_KEYS = ("seed", "trainer.seed", "data.seed")  # first present wins (tag, then param)
BUCKET_PREFIX = "val/loss_freq/"
CONNECT_TIMEOUT = 10.0  # seconds to wait for the tracking server before failing


class AnalysisError(RuntimeError):
    """The runs cannot be analysed; the message says what is missing and what was found."""


@dataclass
class Runs:
    """A sweep's runs, ready for the fits."""

    table: pd.DataFrame  # one row per run, COLUMNS; `reason` non-empty = excluded
    source: str  # where the runs came from (for the report)
    sweep: str | None = None  # sweep name (None for a CSV without one)
    history: pd.DataFrame = field(  # run_id, tokens, loss: validation during training
        default_factory=lambda: pd.DataFrame(columns=["run_id", "tokens", "loss"]))
    buckets: pd.DataFrame = field(  # run_id, bucket, order, loss: frequency-bucket losses
        default_factory=lambda: pd.DataFrame(columns=["run_id", "bucket", "order", "loss"]))

    def usable(self) -> pd.DataFrame:
        return self.table[self.table["reason"] == ""]

    def counts(self) -> str:
        """'dense: 4 runs (3 finished), leviathan: 4 runs (4 finished)' for error messages."""
        parts = []
        for arm in sorted(set(self.table["arm"]) | set(ARMS)):
            rows = self.table[self.table["arm"] == arm]
            fin = int((rows["status"] == "FINISHED").sum())
            parts.append(f"{arm}: {len(rows)} runs ({fin} finished, "
                         f"{int((rows['reason'] == '').sum())} usable)")
        return "; ".join(parts)


def _float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def finalize(table: pd.DataFrame, params_kind: str = "total") -> pd.DataFrame:
    """Choose N (`params_kind`: total | body), normalise arms, and fill the exclusion reasons."""
    if params_kind not in ("total", "body"):
        raise ValueError(f"--params must be 'total' or 'body', got {params_kind!r}")
    t = table.copy()
    for col in COLUMNS:
        if col not in t.columns:
            t[col] = "" if col in ("name", "size", "pair", "family", "seed", "reason") else np.nan
    t["arm"] = t["arm"].astype(str).str.strip().str.lower().replace({"lev": "leviathan"})
    t["family"] = t["family"].fillna("").astype(str).replace("", "default")
    for col in ("size", "pair", "seed", "name", "reason"):
        t[col] = t[col].fillna("").astype(str)
    for col in ("params_total", "params_body", "tokens", "loss"):
        t[col] = pd.to_numeric(t[col], errors="coerce")
    t["params"] = t[f"params_{params_kind}"]
    t["status"] = t["status"].fillna("FINISHED").astype(str)
    reasons = []
    for row in t.itertuples():
        if row.reason:
            reasons.append(row.reason)
        elif row.arm not in ARMS:
            reasons.append(f"unknown arm {row.arm!r} (expected dense or leviathan)")
        elif row.status != "FINISHED":
            reasons.append(f"unfinished (status {row.status})")
        elif not np.isfinite(row.loss):
            reasons.append("final validation loss is missing or NaN")
        elif not (np.isfinite(row.params) and row.params > 0):
            reasons.append(f"no {params_kind} parameter count (n_params/{params_kind})")
        else:
            reasons.append("")
    t["reason"] = reasons
    if not t["size"].astype(bool).all():  # name unnamed sizes by their parameter count
        t.loc[t["size"] == "", "size"] = t.loc[t["size"] == "", "params"].map(human)
    return t[COLUMNS].reset_index(drop=True)


def human(n: float) -> str:
    """60_000_000 -> '60M', 1.2e9 -> '1.2B'."""
    if not np.isfinite(n):
        return "?"
    for div, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.3g}{suffix}"
    return f"{n:.3g}"


def load_csv(path: str | Path, params_kind: str = "total") -> Runs:
    """Runs from a CSV with columns arm,params,tokens,loss (+ size,pair,family,seed,params_body)."""
    path = Path(path)
    if not path.is_file():
        raise AnalysisError(f"--csv {path}: no such file")
    df = pd.read_csv(path)
    df.columns = [c.strip() for c in df.columns]
    missing = [c for c in CSV_REQUIRED if c not in df.columns]
    if missing:
        raise AnalysisError(f"{path}: missing column(s) {missing}; need {list(CSV_REQUIRED)} "
                            f"(optional size,pair,family,seed,params_body,status), found "
                            f"{list(df.columns)}")
    t = pd.DataFrame({
        "run_id": df["run"].astype(str) if "run" in df else [f"row{i + 2}" for i in range(len(df))],
        "name": df["name"] if "name" in df else "",
        "arm": df["arm"], "params_total": df["params"],
        "params_body": df["params_body"] if "params_body" in df else df["params"],
        "tokens": df["tokens"], "loss": df["loss"],
    })
    for col in ("size", "pair", "family", "seed", "status"):
        if col in df:
            t[col] = df[col]
    if params_kind == "body" and "params_body" not in df:
        # a CSV has one count per run: with --params body it must be the non-embedding one
        t["params_body"] = df["params"]
    return Runs(table=finalize(t, params_kind), source=str(path), sweep=None)


def _client(tracking_uri: str):
    from mlflow.tracking import MlflowClient

    from leviathan.tracking.server import check_reachable

    check_reachable(tracking_uri, timeout=CONNECT_TIMEOUT, key="--tracking-uri")
    return MlflowClient(tracking_uri=tracking_uri)


def _experiment_id(client, experiment: str, tracking_uri: str) -> str:
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise AnalysisError(f"no MLflow experiment {experiment!r} at {tracking_uri} "
                            f"(--experiment); nothing has been logged there yet")
    return exp.experiment_id


def _search(client, exp_id: str, filter_string: str, order_by=None, max_results=None):
    from leviathan.tracking.runs import search

    return search(client, exp_id, filter_string, order_by, max_results)


def latest_sweep(tracking_uri: str, experiment: str = "leviathan") -> str:
    """Name of the most recently started sweep parent run (tags.kind = 'sweep')."""
    from leviathan.tracking import runs as tr

    client = _client(tracking_uri)
    name = tr.latest_sweep(client, _experiment_id(client, experiment, tracking_uri))
    if not name:
        raise AnalysisError(f"--latest: no sweep parent run (tags.kind='sweep' with a 'sweep' "
                            f"tag) in experiment {experiment!r} at {tracking_uri}; pass --sweep")
    return name


def _bucket_order(name: str, i: int) -> float:
    nums = re.findall(r"[-+]?\d*\.?\d+(?:[eE][-+]?\d+)?", name)
    return float(nums[0]) if nums else float(i)


def _summary_buckets(client, run_id: str) -> dict[str, float]:
    """Bucket losses from a run's summary.json artifact, if it has them."""
    try:
        names = {a.path for a in client.list_artifacts(run_id)}
        if "summary.json" not in names:
            return {}
        with tempfile.TemporaryDirectory() as tmp:
            local = client.download_artifacts(run_id, "summary.json", tmp)
            summary = json.loads(Path(local).read_text())
    except Exception:  # noqa: BLE001 - an unreadable artifact only loses the rare-token plot
        return {}
    losses = summary.get("bucket_losses") or summary.get("freq_bucket_losses")
    if isinstance(losses, dict):
        return {str(k): _float(v) for k, v in losses.items()}
    if isinstance(losses, list):
        edges = summary.get("bucket_edges") or []
        if len(edges) == len(losses) + 1:
            return {f"[{edges[i]:g},{edges[i + 1]:g})": _float(v) for i, v in enumerate(losses)}
        return {str(i): _float(v) for i, v in enumerate(losses)}
    return {}


def load_mlflow(sweep: str, *, tracking_uri: str, experiment: str = "leviathan",
                params_kind: str = "total", histories: bool = True) -> Runs:
    """The training runs of `sweep` (tags.kind='train', tags.sweep=sweep) with their histories."""
    from leviathan.tracking import runs as tr

    client = _client(tracking_uri)
    exp_id = _experiment_id(client, experiment, tracking_uri)
    runs = _search(client, exp_id, tr.sweep_filter(sweep))
    if not runs:
        raise AnalysisError(f"sweep {sweep!r}: no training runs (tags.kind='train', "
                            f"tags.sweep={sweep!r}) in experiment {experiment!r} at "
                            f"{tracking_uri}; found 0 runs of each arm (dense 0, leviathan 0)")
    rows, hist, buckets = [], [], []
    for run in runs:
        tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
        rid = run.info.run_id
        seed = next((tags.get(k) or params.get(k) for k in SEED_KEYS
                     if tags.get(k) or params.get(k)), "")
        rows.append({
            "run_id": rid, "name": run.info.run_name or "", "arm": tags.get(tr.Tag.ARM, ""),
            "size": tags.get(tr.Tag.SIZE, ""), "pair": tags.get(tr.Tag.PAIR, ""),
            "family": tags.get(tr.Tag.FAMILY, ""), "seed": seed,
            "params_total": _float(params.get(tr.N_PARAMS.format("total"))),
            "params_body": _float(params.get(tr.N_PARAMS.format("body"))),
            "tokens": _float(metrics.get("final/tokens_seen", metrics.get("tokens_seen"))),
            "loss": _float(metrics.get("final/val_loss")), "status": run.info.status,
        })
        if histories:
            vl = {m.step: m.value for m in client.get_metric_history(rid, "val/loss")}
            vt = {m.step: m.value for m in client.get_metric_history(rid, "val/tokens")}
            hist += [{"run_id": rid, "tokens": vt[s], "loss": vl[s]} for s in sorted(vl)
                     if s in vt]
        found = {k[len(BUCKET_PREFIX):]: v for k, v in metrics.items()
                 if k.startswith(BUCKET_PREFIX)}
        if not found and histories and run.info.status == "FINISHED":
            found = _summary_buckets(client, rid)
        buckets += [{"run_id": rid, "bucket": k, "order": _bucket_order(k, i), "loss": v}
                    for i, (k, v) in enumerate(found.items())]
    return Runs(table=finalize(pd.DataFrame(rows), params_kind),
                source=f"MLflow {tracking_uri} experiment {experiment!r}", sweep=sweep,
                history=pd.DataFrame(hist, columns=["run_id", "tokens", "loss"]),
                buckets=pd.DataFrame(buckets, columns=["run_id", "bucket", "order", "loss"]))


def sweep_parent(tracking_uri: str, experiment: str, sweep: str, create: bool = True):
    """run_id of the sweep's parent run (tags.kind='sweep', tags.sweep); created when absent
    (then marked FINISHED: it only carries the fit's outputs)."""
    from leviathan.tracking import runs as tr

    client = _client(tracking_uri)
    exp_id = tr.experiment_id(client, experiment)
    existed = tr.parent_run(client, exp_id, sweep, create=False)
    if existed is not None:
        return existed.info.run_id
    if not create:
        return None
    run = tr.parent_run(client, exp_id, sweep)
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id
