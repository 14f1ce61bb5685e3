"""train(cfg): one training run, from a composed config to a finished (or resumable) MLflow run.

Order matters: every config is validated, the data path and the tracking server are checked,
and the plan is derived *before* the model is built, so a bad run fails in seconds; what they
settle is one frozen RunContext (context.py), handed whole to engine.fit. The run's scratch
folder (${paths.scratch_dir}/runs/<run key>) holds last.ckpt (and the older checkpoints kept
for a fallback, training/checkpoints.py), the MLflow run id and,
once finished, summary.json; starting the same config again resumes (or returns the summary).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from leviathan.tracking.config import tracking_config
from leviathan.tracking.credentials import login
from leviathan.tracking.runs import RunFolder, write_atomic
from leviathan.training.config import (
    TrainConfigError,
    config_hash,
    resolved_container,
    trainer_config,
)
from leviathan.training.context import RunContext
from leviathan.training.plan import plan_run
from leviathan.training.topology import check_job_start

log = logging.getLogger(__name__)


def global_rank() -> int:
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return int(getattr(rank_zero_only, "rank", 0) or 0)


def train(cfg: Any) -> dict:
    """Train one model as `cfg` says; return the summary dict (also written to summary.json).

    Raises TrainConfigError / ConfigError / DataError / TopologyError (SLURM started other
    tasks than the trainer's ranks; and TrackingUnreachable, only with
    tracking.start_timeout_s=0: otherwise training starts without the server) before building
    anything, NonFiniteLoss when the loss diverges (MLflow run FAILED), CheckpointDiskFull when
    a checkpoint finds no space, NoIntactCheckpoint when every kept checkpoint is corrupt (and
    trainer.restart_if_corrupt is off), RendezvousError when the ranks cannot reach each other
    within trainer.ddp_timeout_s, and Preempted (a SystemExit) after the checkpoint a
    SIGTERM/SIGUSR1 asked for (StartupInterrupted: such a signal before the first step).
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
    check_job_start(tc)  # under SLURM: the tasks it started are the trainer's ranks
    trk = login(tracking_config(cfg))  # from here on the URI without userinfo
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
    if rank == 0 and trk.enabled:
        probe_at_start(trk.uri, connect_timeout_s=trk.connect_timeout_s,
                       start_timeout_s=trk.start_timeout_s)

    n_params = count_params(mcfg).as_dict()
    plan = plan_run(tc, data_cfg.seq_len, n_params, flops_per_token(mcfg, data_cfg.seq_len))
    chash = config_hash(container)
    folder = RunFolder.of_config(cfg, chash)
    key, run_dir = folder.key, folder.path
    run_dir.mkdir(parents=True, exist_ok=True)
    _settle_folder(folder, container, chash, rank, fresh=cfg.get("resume", "auto") == "never")
    ctx = RunContext(cfg=cfg, container=container, mcfg=mcfg, data_cfg=data_cfg, tc=tc, trk=trk,
                     plan=plan, chash=chash, key=key, run_dir=run_dir, rank=rank)
    if folder.finished():
        return _finished(ctx)

    log.info(f"run {key}: {n_params['total']:,} params, {plan.max_steps} steps x "
             f"{plan.tokens_per_step:,} tokens (global batch {plan.global_batch} = "
             f"{plan.micro_batch} x {plan.world_size} ranks x {plan.accumulation} accumulation), "
             f"dir {run_dir}")
    from leviathan.training.engine import fit

    return fit(ctx)


def _settle_folder(folder: RunFolder, container: dict, chash: str, rank: int, *,
                   fresh: bool) -> None:
    """The run folder for this config: another config's run there is set aside (rank 0), a
    checkpoint of this run under another layout refused (every rank), resume=never clears it;
    rank 0 records the config hash."""
    key, run_dir = folder.key, folder.path
    hash_file = folder.config_hash
    old_hash = hash_file.read_text().strip() if hash_file.exists() else None
    if old_hash is not None and old_hash != chash and not fresh:
        _refuse_another_layout(folder, container)  # every rank: they fail together
    if rank == 0 and old_hash is not None and old_hash != chash and not fresh:
        # same run_name, different config: never resume into it; keep the old run beside
        aside = run_dir.with_name(f"{key}.{old_hash[:12]}")
        log.info(f"{run_dir} holds a run of another config (hash {old_hash[:12]} != "
                 f"{chash[:12]}): moved to {aside}, starting afresh")
        os.replace(run_dir, aside)
        run_dir.mkdir(parents=True)
    if fresh and rank == 0:
        for path in (folder.checkpoint, *folder.previous_checkpoints(),
                     folder.checkpoint_manifest, folder.run_id_file, folder.summary,
                     *folder.outbox_files):
            path.unlink(missing_ok=True)
    if rank == 0:
        write_atomic(hash_file, chash + "\n")


LAYOUT = ("devices", "num_nodes", "strategy")  # trainer keys that set the ranks of a run


def _refuse_another_layout(folder: RunFolder, container: dict) -> None:
    """A run folder holding a checkpoint of this very run trained with other ranks
    (trainer.devices, trainer.num_nodes, trainer.strategy; everything else equal): refused,
    naming the keys, instead of set aside for a fresh start. Each rank's data position in the
    checkpoint is exact for the layout that wrote it only."""
    import yaml

    if not folder.checkpoint.is_file() or not folder.config.is_file():
        return
    try:
        old = yaml.safe_load(folder.config.read_text())
        old_trainer, new_trainer = dict(old["trainer"]), dict(container["trainer"])
    except (OSError, ValueError, TypeError, KeyError, yaml.YAMLError):
        return
    moved = {k: (old_trainer.get(k), new_trainer.get(k)) for k in LAYOUT
             if old_trainer.get(k) != new_trainer.get(k)}
    same = {**old, "trainer": {**old_trainer, **{k: new_trainer.get(k) for k in LAYOUT}}}
    if not moved or config_hash(same) != config_hash(container):
        return
    was = ", ".join(f"trainer.{k}={a}" for k, (a, _) in moved.items())
    now = ", ".join(f"trainer.{k}={b}" for k, (_, b) in moved.items())
    raise TrainConfigError(
        f"{', '.join(f'trainer.{k}' for k in moved)}: {folder.path} holds a checkpoint of this "
        f"run trained with {was}; this start has {now}. Each rank's data position is exact only "
        f"for the layout that wrote it: start it again with {was}, or resume=never to start "
        "afresh")


def _finished(ctx: RunContext) -> dict:
    """The summary of a run that finished earlier; rank 0 first sends what an outage kept from
    MLflow at its end (its final status included) from the run folder's outbox."""
    folder = ctx.folder
    summary = json.loads(folder.summary.read_text())
    if ctx.is_zero and ctx.trk.enabled:
        from leviathan.tracking.sync import finish_if_running, sync_run_dir

        outcome, _ = sync_run_dir(folder.path, uri=ctx.trk.uri,
                                  timeout_s=ctx.trk.connect_timeout_s)
        if outcome in ("nothing", "sent") and summary.get("run_id"):
            # summary.json is written before the final status is sent: a job killed between
            # the two left its MLflow run RUNNING; the summary says it finished
            finish_if_running(summary["run_id"], ctx.trk.uri, ctx.trk.connect_timeout_s)
    log.info(f"run {folder.key} already finished (MLflow run {summary.get('run_id')}): "
             f"{folder.summary}")
    return summary

