"""evaluate_run(run, eval_cfg): score one run's checkpoint on the configured tasks.

Each task runs through `lm_eval.simple_evaluate` on its own, so a task whose data is missing
(or that fails) is reported in one line and the others go on. Results go to
<eval.output_dir or run dir/eval>/<spec key>.json and, as metrics eval/<task>/<metric> and
eval/<task>/<metric>_stderr (step = the checkpoint's optimizer step; eval_limit<N>/... for a
quick look with eval.limit), onto the run's own MLflow run, reopened by id.
Idempotent: when that JSON holds every requested task for the same checkpoint step, nothing is
evaluated again (metrics missing from the run are re-logged); when it holds some (others had no
data last time), only the rest are evaluated and merged in.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

from leviathan.eval.config import EvalConfig, EvalConfigError, eval_config

log = logging.getLogger(__name__)
METRIC_PREFIX = "eval"
RESULTS_VERSION = 1


def metric_name(key: str) -> str | None:
    """Harness result key -> our metric name: "acc,none" -> "acc", "acc_stderr,none" ->
    "acc_stderr", "exact_match,strict" -> "exact_match_strict"; None for "alias"/"samples"."""
    if "," not in key:
        return None
    metric, filt = key.split(",", 1)
    return metric if filt == "none" else f"{metric}_{filt}"


def task_metrics(harness_results: dict) -> dict[str, dict[str, float | None]]:
    """{task: {metric: value}} from simple_evaluate's "results" (stderr as <metric>_stderr);
    values that are not numbers ("N/A") are dropped, non-finite ones kept as None."""
    out: dict[str, dict[str, float | None]] = {}
    for task, res in harness_results.items():
        m = {}
        for k, v in res.items():
            name = metric_name(k)
            if name is None or isinstance(v, bool) or not isinstance(v, int | float):
                continue
            m[name] = float(v) if math.isfinite(v) else None
        out[task] = m
    return out


def metric_prefix(limit) -> str:
    """"eval" for full task sets; "eval_limit<N>" for quick looks (eval.limit), so a quick
    look never overwrites a result."""
    return METRIC_PREFIX if limit is None else f"{METRIC_PREFIX}_limit{limit}"


def mlflow_metrics(results: dict) -> dict[str, float]:
    """The flat MLflow metric dict <prefix>/<task>/<metric> of a results JSON (finite values)."""
    prefix = metric_prefix(results["spec"]["limit"])
    return {f"{prefix}/{t}/{m}": v for t, ms in results["tasks"].items()
            for m, v in ms["metrics"].items() if v is not None}


def _checkpoint_step(path: Path) -> int:
    import torch

    ck = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    return int(ck.get("global_step", -1))


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EvalConfigError(f"eval.device={device} but CUDA is not available here")
    return device


def _same(prev: dict, cfg: EvalConfig, step: int) -> bool:
    """Results of the same spec on the same checkpoint step (maybe not every task yet)."""
    return (prev.get("version") == RESULTS_VERSION and prev.get("checkpoint_step") == step
            and prev.get("spec") == cfg.spec() and isinstance(prev.get("requested_done"), list))


def log_to_mlflow(results: dict, uri: str, run_id: str, json_path: Path | None = None) -> int:
    """Put the results' metrics, eval tags and (optionally) the JSON on MLflow run `run_id`;
    returns the number of metrics logged (only those not already there with that value)."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    have = client.get_run(run_id).data.metrics
    want = mlflow_metrics(results)
    todo = {k: v for k, v in want.items()
            if k not in have or not math.isclose(have[k], v, rel_tol=1e-9, abs_tol=1e-12)}
    ts, step = int(time.time() * 1000), max(0, int(results["checkpoint_step"]))
    batch = [Metric(k, v, ts, step) for k, v in todo.items()]
    for i in range(0, len(batch), 500):
        client.log_batch(run_id, metrics=batch[i:i + 500])
    prefix = metric_prefix(results["spec"]["limit"])
    client.set_tag(run_id, f"{prefix}.spec", results["spec_key"])
    client.set_tag(run_id, f"{prefix}.num_fewshot", str(results["spec"]["num_fewshot"]))
    if json_path is not None and todo:
        client.log_artifact(run_id, str(json_path), artifact_path="eval")
    return len(todo)


@contextlib.contextmanager
def _quiet_harness(disable_multiproc: bool):
    """lm-eval logs every step at INFO; keep warnings. Bootstrap in-process (no fork of a
    process with torch and MLflow threads)."""
    loggers = [logging.getLogger(n) for n in ("lm-eval", "lm_eval", "datasets")]
    levels = [lg.level for lg in loggers]
    old = os.environ.get("DISABLE_MULTIPROC")
    for lg in loggers:
        lg.setLevel(max(lg.level, logging.WARNING))
    if disable_multiproc and old is None:
        os.environ["DISABLE_MULTIPROC"] = "1"
    try:
        yield
    finally:
        for lg, lv in zip(loggers, levels, strict=True):
            lg.setLevel(lv)
        if disable_multiproc and old is None:
            os.environ.pop("DISABLE_MULTIPROC", None)


def evaluate_run(run_dir_or_id: str | os.PathLike, eval_cfg: Any = None) -> dict:
    """Evaluate a run (scratch folder, checkpoint file or MLflow run id) as `eval_cfg` (the
    `eval` config group; None: conf/eval/default.yaml) says. Returns the results dict (as in
    the JSON): tasks -> {metrics, n_samples}, missing -> {task: why and how to provide it},
    plus run_id, checkpoint, checkpoint_step, spec, json_path, skipped."""
    from leviathan.eval.checkpoint import locate
    from leviathan.tracking.environment import record_eval

    cfg = eval_config(eval_cfg)
    files = locate(run_dir_or_id, tracking_uri=cfg.tracking_uri)
    out_dir = Path(cfg.output_dir).expanduser() if cfg.output_dir else files.run_dir / "eval"
    json_path = out_dir / f"{cfg.spec_key()}.json"
    step = _checkpoint_step(files.checkpoint)
    if not (files.run_dir / "summary.json").is_file():
        log.info(f"note: {files.run_dir} has no summary.json (the run has not finished); "
                 f"evaluating its checkpoint at step {step}")
    track = cfg.log_mlflow and files.run_id is not None and files.tracking_uri is not None
    if track:  # fail before evaluating, not after
        from leviathan.tracking.server import check_reachable

        check_reachable(files.tracking_uri, key="eval.tracking_uri")
    elif cfg.log_mlflow:
        log.info(f"note: {files.run_dir} has no MLflow run id or tracking URI; results go to the "
                 "JSON only")

    prev = None
    if json_path.is_file() and not cfg.force:
        prev = json.loads(json_path.read_text())
        if not _same(prev, cfg, step):
            prev = None
        elif all(t in prev["requested_done"] for t in cfg.tasks):
            n = log_to_mlflow(prev, files.tracking_uri, files.run_id, json_path) if track else 0
            log.info(f"already evaluated ({json_path})" + (f"; re-logged {n} metrics" if n else ""))
            return {**prev, "skipped": True}

    todo = [t for t in cfg.tasks if prev is None or t not in prev["requested_done"]]
    if prev is not None:
        log.info(f"{json_path}: tasks {prev['requested_done']} done before; now {todo}")
    results = run_tasks(files, cfg, step=step, tasks=todo)
    if prev is not None:  # keep what was done, in the requested order
        results["tasks"] = {**prev["tasks"], **results["tasks"]}
        results["requested_done"] = [t for t in cfg.tasks if t in prev["requested_done"]
                                     or t in results["requested_done"]]
    results["environment"] = record_eval(files.run_dir, out_dir, cfg.spec_key(),
                                         uri=files.tracking_uri if track else None,
                                         run_id=files.run_id, prefix=metric_prefix(cfg.limit))
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = json_path.with_name(f".{json_path.name}.tmp")
    tmp.write_text(json.dumps(results, indent=2, default=str))
    os.replace(tmp, json_path)
    results["json_path"] = str(json_path)
    if track:
        n = log_to_mlflow(results, files.tracking_uri, files.run_id, json_path)
        log.info(f"logged {n} metrics on MLflow run {files.run_id} at {files.tracking_uri}")
    log.info(f"results: {json_path}")
    return {**results, "skipped": False}


def run_tasks(files, cfg: EvalConfig, *, step: int, tasks: list[str] | None = None) -> dict:
    """Load the model once and run each task (default: cfg.tasks) through simple_evaluate,
    one at a time."""
    import lm_eval

    from leviathan.data.tokenizer import get_encoding
    from leviathan.eval.adapter import LeviathanLM
    from leviathan.eval.checkpoint import load_model, tokenizer_name
    from leviathan.eval.tasks import configure_offline, describe_failure, task_manager

    names = list(cfg.tasks if tasks is None else tasks)
    offline = configure_offline(cfg.offline, cfg.hub_probe_timeout_s)
    device = _resolve_device(cfg.device)
    t0 = time.time()
    model, _ = load_model(files, device=device)
    lm = LeviathanLM(model, get_encoding(tokenizer_name(files)), device=device,
                     batch_size=cfg.batch_size, max_length=cfg.max_length,
                     precision=cfg.precision)
    log.info(f"evaluating {files.checkpoint} (step {step}, {model.cfg.arm}, {device}"
             f"{', offline' if offline else ''}) on {', '.join(names)}"
             + (f" (limit {cfg.limit})" if cfg.limit is not None else ""))
    tm = task_manager(cfg.include_path, cfg.include_defaults)
    scores: dict[str, dict] = {}
    missing: dict[str, str] = {}
    done: list[str] = []
    for name in names:
        t = time.time()
        try:
            with _quiet_harness(disable_multiproc=True):
                res = lm_eval.simple_evaluate(
                    model=lm, tasks=[name], num_fewshot=cfg.num_fewshot, limit=cfg.limit,
                    task_manager=tm, log_samples=False, bootstrap_iters=cfg.bootstrap_iters,
                    random_seed=cfg.seed, numpy_random_seed=cfg.seed,
                    torch_random_seed=cfg.seed, fewshot_random_seed=cfg.seed)
        except Exception as e:  # one task's trouble never stops the others
            missing[name] = describe_failure(tm, name, e, offline=offline)
            log.info(f"skipped {name}: {missing[name]}")
            continue
        n_samples = res.get("n-samples", {})
        for task, metrics in task_metrics(res["results"]).items():
            scores[task] = {"metrics": metrics, "n_samples": n_samples.get(task),
                           "version": res.get("versions", {}).get(task)}
            shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()
                              if v is not None and not k.endswith("_stderr"))
            log.info(f"  {task}: {shown} ({time.time() - t:.1f}s)")
        done.append(name)
    return {"version": RESULTS_VERSION, "run_id": files.run_id, "run_dir": str(files.run_dir),
            "checkpoint": str(files.checkpoint), "checkpoint_step": step,
            "arm": model.cfg.arm, "size": model.cfg.size, "spec": cfg.spec(),
            "spec_key": cfg.spec_key(), "requested_done": done, "tasks": scores,
            "missing": missing, "device": device, "offline": offline,
            "lm_eval_version": getattr(lm_eval, "__version__", None),
            "wall_s": time.time() - t0}
