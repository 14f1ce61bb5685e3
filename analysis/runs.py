"""A sweep's runs as pandas tables, read from MLflow (the platform's schema) or from a CSV.

One row per run in `Runs.table` (excluded runs stay, with the reason in `reason`), the
intermediate validation losses in `Runs.history` and the token-frequency bucket losses in
`Runs.buckets`. Nothing is dropped silently: a run the fits cannot use says why. Input that cannot
be analysed at all (an unknown arm, a control arm without its Leviathan partner) is an error.
The CSV path is analysis/csv_input.py; the MLflow names (tags, params, metrics) live in
`row_of` below, the one place that knows them.
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

from leviathan.errors import LeviathanError

ARMS = ("dense", "leviathan", "factorized", "dense_untied", "factorized_wide", "lev_codebooks")
CONTROLS = {"factorized": "isoparametric", "dense_untied": "decoupled",  # control -> its family
            "factorized_wide": "isoparametric", "lev_codebooks": "isoparametric"}
COLUMNS = ["run_id", "name", "arm", "size", "pair", "family", "seed", "lr", "params",
           "params_total", "params_body", "flops", "tokens", "loss", "cooled", "status", "reason"]
HISTORY = ["run_id", "tokens", "loss", "cooled"]
SEED_KEYS = ("seed", "trainer.seed", "data.seed")  # first present wins (tag, then param)
BUCKET_PREFIX = "val/loss_freq/"
CONNECT_TIMEOUT = 10.0  # seconds to wait for the tracking server before failing


class AnalysisError(LeviathanError, RuntimeError):
    """The runs cannot be analysed; the message says what is missing and what was found."""


@dataclass
class Runs:
    """A sweep's runs, ready for the fits."""

    table: pd.DataFrame  # one row per run, COLUMNS; `reason` non-empty = excluded
    source: str  # where the runs came from (for the report)
    sweep: str | None = None  # sweep name (None for a CSV without one)
    history: pd.DataFrame = field(  # run_id, tokens, loss, cooled: validation during training
        default_factory=lambda: pd.DataFrame(columns=HISTORY))
    buckets: pd.DataFrame = field(  # run_id, bucket, order, loss: frequency-bucket losses
        default_factory=lambda: pd.DataFrame(columns=["run_id", "bucket", "order", "loss"]))

    def usable(self) -> pd.DataFrame:
        return self.table[self.table["reason"] == ""]

    def counts(self) -> str:
        """'dense: 4 runs (3 finished), leviathan: 4 runs (4 finished)' for error messages."""
        parts = []
        for arm in sorted(set(self.table["arm"]) | {"dense", "leviathan"}):
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


def flag(value) -> float:
    """A yes/no cell (True, "true", 1, "yes" ...) as 1.0 / 0.0, NaN when empty or unknown."""
    if isinstance(value, bool | np.bool_):
        return float(value)
    text = str(value).strip().lower()
    if text in ("true", "1", "1.0", "yes", "y", "t"):
        return 1.0
    if text in ("false", "0", "0.0", "no", "n", "f"):
        return 0.0
    return math.nan


_TEXT_COLUMNS = ("name", "size", "pair", "family", "seed", "reason")


def _normalise_arms(t: pd.DataFrame, source: str) -> None:
    """Arms lower-cased, `lev` read as leviathan; AnalysisError for an arm outside ARMS."""
    t["arm"] = t["arm"].fillna("").astype(str).str.strip().str.lower().replace(
        {"lev": "leviathan"})
    unknown = sorted(set(t["arm"]) - set(ARMS))
    if unknown:
        raise AnalysisError(f"{source}: unknown arm(s) {unknown} (column `arm`); allowed: "
                            f"{', '.join(ARMS)}")


def _exclusion_reason(row, params_kind: str) -> str:
    """Why a run cannot be fitted ('' when it can): a given reason, unfinished, no loss, no N."""
    if row.reason:
        return row.reason
    if row.status != "FINISHED":
        return f"unfinished (status {row.status})"
    if not np.isfinite(row.loss):
        return "final validation loss is missing or NaN"
    if not (np.isfinite(row.params) and row.params > 0):
        return f"no {params_kind} parameter count (n_params/{params_kind})"
    return ""


def finalize(table: pd.DataFrame, params_kind: str = "total", source: str = "runs"
             ) -> pd.DataFrame:
    """Choose N (`params_kind`: total | body), normalise arms, and fill the exclusion reasons.

    Raises AnalysisError for input no fit can use: an arm outside ARMS, or a control arm at a
    size (of a family) where no Leviathan run exists.
    """
    if params_kind not in ("total", "body"):
        raise ValueError(f"--params must be 'total' or 'body', got {params_kind!r}")
    t = table.copy()
    for col in COLUMNS:
        if col not in t.columns:
            t[col] = "" if col in _TEXT_COLUMNS else np.nan
    _normalise_arms(t, source)
    t["family"] = t["family"].fillna("").astype(str).replace("", "default")
    for col in ("size", "pair", "seed", "name", "reason"):
        t[col] = t[col].fillna("").astype(str).replace("nan", "")
    for col in ("params_total", "params_body", "flops", "tokens", "loss", "lr"):
        t[col] = pd.to_numeric(t[col], errors="coerce")
    t["cooled"] = t["cooled"].map(flag)
    t["params"] = t[f"params_{params_kind}"]
    t["status"] = t["status"].fillna("FINISHED").astype(str)
    t["reason"] = [_exclusion_reason(row, params_kind) for row in t.itertuples()]
    _name_sizes(t)
    check_controls(t, source)
    return t[COLUMNS].reset_index(drop=True)


def _name_sizes(t: pd.DataFrame) -> None:
    """Unnamed sizes: a Dense run by its parameter count; any other arm by the Dense size of its
    family nearest in (log) parameters, so that the arms of a size meet."""
    todo = t["size"] == ""
    if not todo.any():
        return
    dense = t["arm"] == "dense"
    t.loc[todo & dense, "size"] = t.loc[todo & dense, "params_total"].map(human)
    for i in t.index[todo & ~dense]:
        fam = t[(t["family"] == t.at[i, "family"]) & dense & np.isfinite(t["params_total"])]
        n = t.at[i, "params_total"]
        if len(fam) and np.isfinite(n) and n > 0:
            j = (np.log(fam["params_total"]) - math.log(n)).abs().idxmin()
            t.at[i, "size"] = t.at[j, "size"]
        else:
            t.at[i, "size"] = human(n)


def check_controls(t: pd.DataFrame, source: str = "runs") -> None:
    """A control arm is read only against its Leviathan partner: each (family, size) holding a
    control must hold a Leviathan run too."""
    lev = set(zip(t.loc[t["arm"] == "leviathan", "family"],
                  t.loc[t["arm"] == "leviathan", "size"], strict=True))
    for arm in CONTROLS:
        rows = t[t["arm"] == arm]
        for fam, size in sorted(set(zip(rows["family"], rows["size"], strict=True))):
            if (fam, size) not in lev:
                raise AnalysisError(
                    f"{source}: arm {arm!r} at size {size!r} (family {fam!r}) has no leviathan "
                    f"run at that size; a control arm ({', '.join(CONTROLS)}) is only read "
                    f"against its Leviathan partner. Allowed arms: {', '.join(ARMS)}")


def budget_ids(tokens: np.ndarray, tol: float) -> np.ndarray:
    """Cluster token counts: a new budget starts where the relative gap exceeds `tol`."""
    tokens = np.asarray(tokens, float)
    ids = np.zeros(tokens.size, int)
    finite = np.isfinite(tokens)
    if not finite.any():
        return ids
    order = np.argsort(np.where(finite, tokens, np.inf))
    cur, prev = 0, None
    for i in order:
        if not finite[i]:
            ids[i] = 0
            continue
        if prev is not None and tokens[i] > prev * (1 + tol):
            cur += 1
        ids[i], prev = cur, tokens[i]
    return ids


def check_budgets(table: pd.DataFrame, tol: float, source: str = "runs") -> None:
    """Seeds are pooled only at one token budget: the runs of a non-Dense (family, arm, size)
    are its replicates unless that size's Dense runs span several budgets too (an N x D grid,
    whose budgets the fits keep apart). AnalysisError naming the runs of each budget otherwise
    (a sweep planned before issue 34.3 gave the Leviathan seeds that Dense did not run their
    own, smaller budget)."""
    problems = []
    for (fam, size), g in table.groupby(["family", "size"], sort=True):
        dense = g[g["arm"] == "dense"]
        if len(dense) and budget_ids(dense["tokens"].to_numpy(), tol).max() >= 1:
            continue  # an N x D grid at this size
        for arm, a in g[g["arm"] != "dense"].groupby("arm", sort=True):
            ids = budget_ids(a["tokens"].to_numpy(), tol)
            if ids.max() < 1:
                continue
            parts = []
            for k in sorted(set(ids)):
                o = a[ids == k]
                names = [n or r for n, r in zip(o["name"], o["run_id"], strict=True)]
                more = f" and {len(names) - 3} more" if len(names) > 3 else ""
                tokens = "/".join(f"{t:,.0f}" for t in sorted(o["tokens"].unique()))
                parts.append(f"{tokens} tokens ({', '.join(names[:3])}{more})")
            problems.append(f"family {fam!r}, {arm} at size {size}: " + " vs ".join(parts))
    if problems:
        raise AnalysisError(
            f"{source}: the seeds of one arm and size are pooled only at one token budget: "
            + "; ".join(problems) + ". Replan the sweep (every run of a size now trains on its "
            "Dense budget) and rerun the runs on the other budget, or fit without them (--csv)")


def human(n: float) -> str:
    """60_000_000 -> '60M', 1.2e9 -> '1.2B'."""
    if not np.isfinite(n):
        return "?"
    for div, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.3g}{suffix}"
    return f"{n:.3g}"


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


def bucket_order(name: str, i: int) -> float:
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
