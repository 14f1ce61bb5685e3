"""train(cfg): one training run, from a composed config to a finished (or resumable) MLflow run.

Order matters: every config is validated, the data path and the tracking server are checked,
and the plan is derived *before* the model is built, so a bad run fails in seconds. The run's
scratch folder (${paths.scratch_dir}/runs/<run key>) holds last.ckpt, the MLflow run id and,
once finished, summary.json; starting the same config again resumes (or returns the summary).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from leviathan.tracking.outbox import TRACKING_FILES
from leviathan.training.config import (
    TrainConfigError,
    config_hash,
    flatten,
    make_plan,
    resolved_container,
    tracking_config,
    trainer_config,
)

log = logging.getLogger(__name__)

RUN_ID_FILE = "mlflow_run_id"
SUMMARY_FILE = "summary.json"
FINGERPRINT_BATCH, FINGERPRINT_K = 8, 8  # canonical data fingerprint: first 8 batches of 8


def global_rank() -> int:
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return int(getattr(rank_zero_only, "rank", 0) or 0)


def git_commit() -> str:
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True, timeout=10).stdout
        return sha + ("-dirty" if dirty.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def run_key(cfg: Any, chash: str) -> str:
    """The run's folder name: run_name, else <arm>-<size>-<config hash prefix>."""
    if cfg.get("run_name"):
        return str(cfg.run_name)
    return f"{cfg.model.arm}-{cfg.model.size}-{chash[:12]}"


def _say(rank: int):
    def say(msg: str, **_: Any) -> None:
        if rank == 0:
            print(msg, flush=True)

    return say


def train(cfg: Any) -> dict:
    """Train one model as `cfg` says; return the summary dict (also written to summary.json).

    Raises TrainConfigError / ConfigError / DataError (and TrackingUnreachable, only with
    tracking.start_timeout_s=0: otherwise training starts without the server) before building
    anything, NonFiniteLoss when the loss diverges (MLflow run FAILED), and Preempted (a
    SystemExit) after the checkpoint a SIGTERM/SIGUSR1 asked for.
    """
    from omegaconf import OmegaConf

    from leviathan.data import check_data
    from leviathan.data.tokenizer import get_encoding
    from leviathan.models import (
        check_tokenizer_vocab,
        count_params,
        flops_per_token,
        resolve_model_config,
    )
    from leviathan.tracking.server import probe_at_start

    # ---- 1. configs, data, tracking: all checked before any model exists
    try:
        container = resolved_container(cfg)
    except Exception as e:  # interpolation errors name the key in their message
        raise TrainConfigError(f"config does not resolve: {e}") from e
    cfg = OmegaConf.create(container)
    tc = trainer_config(cfg)
    trk = tracking_config(cfg)
    if cfg.get("resume", "auto") not in ("auto", "never"):
        raise TrainConfigError(f"resume: must be auto or never, got {cfg.resume!r}")
    mcfg = resolve_model_config(cfg.model)
    data_cfg = check_data(cfg.data)
    check_tokenizer_vocab(mcfg, get_encoding(data_cfg.tokenizer).n_vocab,
                          tokenizer=f"data.tokenizer={data_cfg.tokenizer}")
    if mcfg.max_seq_len < data_cfg.seq_len:
        raise TrainConfigError(f"model.max_seq_len={mcfg.max_seq_len} is shorter than "
                               f"data.seq_len={data_cfg.seq_len}")
    rank = global_rank()
    say = _say(rank)
    if rank == 0:
        probe_at_start(trk.uri, connect_timeout_s=trk.connect_timeout_s,
                       start_timeout_s=trk.start_timeout_s, say=say)

    n_params = count_params(mcfg).as_dict()
    plan = make_plan(tc, data_cfg.seq_len, n_params, flops_per_token(mcfg, data_cfg.seq_len))
    chash = config_hash(container)
    key = run_key(cfg, chash)
    run_dir = Path(cfg.paths.scratch_dir).resolve() / "runs" / key
    run_dir.mkdir(parents=True, exist_ok=True)
    fresh = cfg.get("resume", "auto") == "never"
    hash_file = run_dir / "config_hash"
    old_hash = hash_file.read_text().strip() if hash_file.exists() else None
    if rank == 0 and old_hash is not None and old_hash != chash and not fresh:
        # same run_name, different config: never resume into it; keep the old run beside
        aside = run_dir.with_name(f"{key}.{old_hash[:12]}")
        say(f"{run_dir} holds a run of another config (hash {old_hash[:12]} != {chash[:12]}): "
            f"moved to {aside}, starting afresh")
        os.replace(run_dir, aside)
        run_dir.mkdir(parents=True)
    if fresh and rank == 0:
        for name in ("last.ckpt", RUN_ID_FILE, SUMMARY_FILE, *TRACKING_FILES):
            (run_dir / name).unlink(missing_ok=True)
    if rank == 0:
        write_atomic(hash_file, chash + "\n")
    summary_path = run_dir / SUMMARY_FILE
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
        if rank == 0:  # what an outage kept from MLflow at the end (final status included)
            from leviathan.tracking.sync import sync_run_dir

            sync_run_dir(run_dir, uri=trk.uri, timeout_s=trk.connect_timeout_s)
        say(f"run {key} already finished (MLflow run {summary.get('run_id')}): {summary_path}")
        return summary

    say(f"run {key}: {n_params['total']:,} params, {plan.max_steps} steps x "
        f"{plan.tokens_per_step:,} tokens (global batch {plan.global_batch} = {plan.micro_batch}"
        f" x {plan.world_size} ranks x {plan.accumulation} accumulation), dir {run_dir}")
    from leviathan.training.engine import fit

    return fit(cfg=cfg, container=container, mcfg=mcfg, data_cfg=data_cfg, tc=tc, trk=trk,
               plan=plan, chash=chash, key=key, run_dir=run_dir, rank=rank, say=say)


def start_tracker(*, trk, run_dir: Path, key: str, tags: dict, params: dict):
    """Create (or reopen: the run folder keeps its id) the MLflow run; rank 0 only. Never waits
    for the server: leviathan.tracking.run_tracker opens the run in the background if needed."""
    from leviathan.tracking.run_tracker import RunTracker

    tracker = RunTracker.from_config(trk, state_dir=run_dir)
    tracker.start(run_name=key, tags=tags, parent_run_id=trk.parent_run_id, params=params,
                  wait_s=trk.connect_timeout_s)
    return tracker


def params_of(container: dict, mcfg, plan) -> dict:
    """MLflow params: the resolved config flattened with dots (model with its solved depth),
    the derived plan, and the parameter counts."""
    c = dict(container)
    c["model"] = {**c["model"], **mcfg.as_dict()}
    params = {k: v for k, v in flatten(c).items()}
    params.update({f"plan.{k}": v for k, v in plan.as_dict().items() if k != "n_params"})
    params.update({f"n_params/{k}": v for k, v in plan.n_params.items()})
    return params


def tags_of(cfg, chash: str, fingerprint: str, key: str) -> dict:
    meta = cfg.get("meta") or {}
    return {"kind": "train", "sweep": meta.get("sweep"), "pair": meta.get("pair"),
            "arm": meta.get("arm") or cfg.model.arm, "size": meta.get("size") or cfg.model.size,
            "family": meta.get("family"), "config_hash": chash, "data_fingerprint": fingerprint,
            "git_commit": git_commit(), "run_key": key}


def now() -> float:
    return time.time()
