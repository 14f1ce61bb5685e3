"""A sweep's runs read from MLflow (the platform's schema): `load_mlflow` gives the Runs of a
sweep (analysis/inputs/runs.py), with each run's validation curve and token-frequency bucket
losses. The MLflow names (tags, params, metrics) live in `row_of`, the one place that knows them;
the queries are leviathan.tracking.runs'.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.inputs.runs import HISTORY, AnalysisError, Runs, bucket_order, finalize

SEED_KEYS = ("seed", "trainer.seed", "data.seed")  # first present wins (tag, then param)
BUCKET_PREFIX = "val/loss_freq/"
CONNECT_TIMEOUT = 10.0  # seconds to wait for the tracking server before failing


def _float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def mlflow_client(tracking_uri: str):
    from mlflow.tracking import MlflowClient

    from leviathan.tracking.server import check_reachable

    check_reachable(tracking_uri, timeout=CONNECT_TIMEOUT, key="--tracking-uri")
    return MlflowClient(tracking_uri=tracking_uri)


def require_experiment(client, experiment: str, tracking_uri: str) -> str:
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise AnalysisError(f"no MLflow experiment {experiment!r} at {tracking_uri} "
                            f"(--experiment); nothing has been logged there yet")
    return exp.experiment_id


def search_runs(client, exp_id: str, filter_string: str, order_by=None, max_results=None):
    from leviathan.tracking.runs import search

    return search(client, exp_id, filter_string, order_by, max_results)


def latest_sweep(tracking_uri: str, experiment: str = "leviathan") -> str:
    """Name of the most recently started sweep parent run (tags.kind = 'sweep')."""
    from leviathan.tracking import runs as tr

    client = mlflow_client(tracking_uri)
    name = tr.latest_sweep(client, require_experiment(client, experiment, tracking_uri))
    if not name:
        raise AnalysisError(f"--latest: no sweep parent run (tags.kind='sweep' with a 'sweep' "
                            f"tag) in experiment {experiment!r} at {tracking_uri}; pass --sweep")
    return name


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
    losses = summary.get("bucket_losses")
    if isinstance(losses, dict):
        return {str(k): _float(v) for k, v in losses.items()}
    return {}


def row_of(run) -> dict:
    """One MLflow training run as a table row. The names are leviathan.tracking.runs' (tags,
    params) and the metrics training logs (final/val_loss, final/tokens_seen). A WSD-S cooldown
    branch (tag `cooldown`) is cooled down; a WSD-S main run (tag
    schedule=constant) never is; other runs are unmarked."""
    from leviathan.tracking.runs import N_PARAMS, Tag

    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    seed = next((tags.get(k) or params.get(k) for k in SEED_KEYS
                 if tags.get(k) or params.get(k)), "")
    tokens = _float(metrics.get("final/tokens_seen", metrics.get("tokens_seen")))
    if not np.isfinite(tokens):
        tokens = _float(params.get("plan.budget_tokens"))
    if tags.get(Tag.COOLDOWN):
        cooled = 1.0
    else:
        cooled = 0.0 if tags.get(Tag.SCHEDULE) == "constant" else math.nan
    return {
        "run_id": run.info.run_id, "name": run.info.run_name or "",
        "arm": tags.get(Tag.ARM, ""), "size": tags.get(Tag.SIZE, ""),
        "pair": tags.get(Tag.PAIR, ""), "family": tags.get(Tag.FAMILY, ""), "seed": seed,
        "lr": _float(params.get("trainer.lr")),
        "params_total": _float(params.get(N_PARAMS.format("total"))),
        "params_body": _float(params.get(N_PARAMS.format("body"))),
        "flops": _float(params.get("plan.flops_per_token")) * tokens, "tokens": tokens,
        "loss": _float(metrics.get("final/val_loss")), "cooled": cooled,
        "status": run.info.status,
    }


def _history(client, row: dict) -> list[dict]:
    """Validation points of one run; a cooled-down run's last point is marked cooled."""
    rid = row["run_id"]
    vl = {m.step: m.value for m in client.get_metric_history(rid, "val/loss")}
    vt = {m.step: m.value for m in client.get_metric_history(rid, "val/tokens")}
    points = [{"run_id": rid, "tokens": vt[s], "loss": vl[s], "cooled": 0.0} for s in sorted(vl)
              if s in vt]
    if row["cooled"] == 1.0 and points:
        points[-1]["cooled"] = 1.0
    return points


def sweeps_there(names: list[str], wanted: str, experiment: str) -> str:
    """'sweeps in experiment ...: a, b (did you mean 'a'?)' for a sweep name that has no runs."""
    import difflib

    if not names:
        return f"experiment {experiment!r} has no sweep parent run (tags.kind='sweep')"
    close = difflib.get_close_matches(wanted, names, n=1)
    return (f"sweeps in experiment {experiment!r}: {', '.join(names)}"
            + (f" (did you mean {close[0]!r}?)" if close else ""))


def load_mlflow(sweep: str, *, tracking_uri: str, experiment: str = "leviathan",
                params_kind: str = "total", histories: bool = True) -> Runs:
    """The training runs of `sweep` (tags.kind='train', tags.sweep=sweep) with their histories."""
    from leviathan.tracking import runs as tr

    client = mlflow_client(tracking_uri)
    exp_id = require_experiment(client, experiment, tracking_uri)
    runs = search_runs(client, exp_id, tr.sweep_filter(sweep))
    if not runs:
        raise AnalysisError(f"sweep {sweep!r}: no training runs (tags.kind='train', "
                            f"tags.sweep={sweep!r}) in experiment {experiment!r} at "
                            f"{tracking_uri}; found 0 runs of each arm (dense 0, leviathan 0); "
                            + sweeps_there(tr.sweep_names(client, exp_id), sweep, experiment))
    rows, hist, buckets = [], [], []
    for run in runs:
        row = row_of(run)
        rows.append(row)
        rid = row["run_id"]
        if histories:
            hist += _history(client, row)
        found = {k[len(BUCKET_PREFIX):]: v for k, v in run.data.metrics.items()
                 if k.startswith(BUCKET_PREFIX)}
        if not found and histories and run.info.status == "FINISHED":
            found = _summary_buckets(client, rid)
        buckets += [{"run_id": rid, "bucket": k, "order": bucket_order(k, i), "loss": v}
                    for i, (k, v) in enumerate(found.items())]
    source = f"MLflow {tracking_uri} experiment {experiment!r}"
    return Runs(table=finalize(pd.DataFrame(rows), params_kind, f"sweep {sweep!r}"),
                source=source, sweep=sweep, history=pd.DataFrame(hist, columns=HISTORY),
                buckets=pd.DataFrame(buckets, columns=["run_id", "bucket", "order", "loss"]))


def sweep_parent(tracking_uri: str, experiment: str, sweep: str, create: bool = True):
    """run_id of the sweep's parent run (tags.kind='sweep', tags.sweep); created when absent
    (then marked FINISHED: it only carries the fit's outputs)."""
    from leviathan.tracking import runs as tr

    client = mlflow_client(tracking_uri)
    exp_id = tr.experiment_id(client, experiment)
    existed = tr.parent_run(client, exp_id, sweep, create=False)
    if existed is not None:
        return existed.info.run_id
    if not create:
        return None
    run = tr.parent_run(client, exp_id, sweep)
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id
