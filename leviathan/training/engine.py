"""The Lightning part of a run: build data and model, fit, and close the MLflow run.

Called by run.train() once everything has been validated, with the run's RunContext
(context.py). Global rank 0 owns the MLflow run;
other ranks (DDP) train and checkpoint collectively but never talk to the server.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from pathlib import Path

import torch

from leviathan.tracking.runs import Tag, write_atomic
from leviathan.training.context import RunContext
from leviathan.training.records import FINGERPRINT_WINDOWS, start_tracker

log = logging.getLogger(__name__)


def build_trainer(tc, plan, run_dir: Path, callbacks):
    import lightning.pytorch as pl
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    from leviathan.training import distributed
    from leviathan.training.checkpoints import CheckpointStore, InPlaceCheckpointIO

    # outside a SLURM job, Lightning warns whenever `srun` is installed: not useful here
    warnings.filterwarnings("ignore", message="The `srun` command is available")
    # checkpoints written in place on the run folder's filesystem (never via the temp folder)
    plugins = [InPlaceCheckpointIO(CheckpointStore(run_dir, tc.keep_checkpoints,
                                                   world_size=tc.world_size))]
    if SLURMEnvironment.detect():
        # the sweep's launcher (submitit) requeues; we only checkpoint on the signal
        plugins.append(SLURMEnvironment(auto_requeue=False))
    return pl.Trainer(
        accelerator=tc.accelerator, devices=tc.devices, num_nodes=tc.num_nodes,
        strategy=distributed.strategy(tc),  # several ranks: trainer.ddp_timeout_s, a clear line
        precision=tc.precision, max_steps=plan.max_steps,
        accumulate_grad_batches=plan.accumulation, gradient_clip_val=None,
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
        use_distributed_sampler=False, default_root_dir=str(run_dir), callbacks=callbacks,
        plugins=plugins,
    )


def fit(ctx: RunContext) -> dict:
    import lightning.pytorch as pl

    from leviathan.data import build_train_stream, build_val_batches, fingerprint
    from leviathan.data import token_frequencies as data_token_frequencies
    from leviathan.models import build_model
    from leviathan.tracking.environment import record_training
    from leviathan.training.batches import ResumableBatches
    from leviathan.training.callbacks import StepCallback
    from leviathan.training.evaluation import frequency_buckets
    from leviathan.training.module import LanguageModelModule
    from leviathan.training.ranks import attempt_key
    from leviathan.training.signals import Preempted, PreemptionFlag

    t0 = time.time()
    tc, plan, data_cfg = ctx.tc, ctx.plan, ctx.data_cfg
    # before Lightning starts the other ranks of this node: they inherit the attempt's key
    attempt = attempt_key(ctx.is_zero) if ctx.world_size > 1 else None
    torch.set_float32_matmul_precision(tc.matmul_precision)
    # ---- data (built, or prepared, here on first use; every rank reads its own share)
    stream = build_train_stream(data_cfg, batch_size=tc.micro_batch, rank=ctx.data_rank,
                                world_size=ctx.world_size)
    batches = ResumableBatches(stream)
    val = build_val_batches(data_cfg, batch_size=tc.val_micro_batch or tc.micro_batch)
    buckets = None
    if val:  # the rare-token buckets (evaluation.py), in both data modes
        buckets = frequency_buckets(
            data_token_frequencies(data_cfg), ctx.mcfg.padded_vocab, tc.freq_bucket_base,
            scheme=tc.freq_buckets, quantiles=tc.freq_quantiles,
            targets=torch.cat([b[:, 1:].reshape(-1) for b in val]).numpy())
        if buckets is None:
            log.info("rare-token buckets: off (data.freq_tokens=0: no training-token counts)")

    tracker = None
    if ctx.is_zero:
        fp = fingerprint(data_cfg, batch_size=tc.micro_batch, windows=FINGERPRINT_WINDOWS,
                         rank=0, world_size=ctx.world_size)  # the run's real layout
        tracker = start_tracker(ctx, fingerprint=fp)
        _log_yaml(tracker, ctx)
        record_training(tracker, ctx.run_dir)  # versions, hash, full list; resume: differs?
        log.info(tracker.describe())

    # ---- model, module, trainer (any failure from here on marks the MLflow run FAILED)
    preemption = PreemptionFlag(starting=True)  # a signal before the first step stops at once
    trainer = None
    try:
        pl.seed_everything(int(ctx.cfg.seed), workers=True, verbose=False)
        model = build_model(ctx.mcfg)
        module = LanguageModelModule(model, tc, plan, batches)
        step_cb = StepCallback.for_run(ctx, tracker=tracker, val_batches=val, buckets=buckets,
                                       preemption=preemption, started=t0)
        trainer = build_trainer(tc, plan, ctx.run_dir, [step_cb])
        ckpt = ctx.folder.checkpoint
        start = _agreed_start(ctx, attempt)
        preemption.install()
        trainer.fit(module, train_dataloaders=batches, ckpt_path=start,
                    weights_only=False)  # our own file: it holds RNG and data state too
    except BaseException as e:
        preemption.uninstall()
        _record_failure(ctx, e, tracker, trainer, attempt)
        raise
    preemption.uninstall()

    if step_cb.preempted_at is not None:
        if tracker is not None:
            tracker.set_tags({Tag.PREEMPTED_AT_STEP: step_cb.preempted_at})
            tracker.finish("KILLED")
        log.info(f"preempted at step {step_cb.preempted_at}: checkpoint {ckpt}; start the same "
                 "command again to resume")
        preemption.chain()
        raise Preempted(preemption.received or 15, step_cb.preempted_at, str(ckpt))

    summary = _summary(ctx, step_cb, module, tracker, buckets, stream, time.time() - t0)
    if ctx.is_zero:
        tracker.log_metrics({"final/val_loss": summary["final_val_loss"],
                             "final/tokens_seen": summary["tokens_seen"]}, step=plan.max_steps)
        path = ctx.folder.summary
        write_atomic(path, json.dumps(summary, indent=2, default=str))
        tracker.log_artifact(path)
        tracker.finish("FINISHED")
        log.info(f"finished: val/loss {summary['final_val_loss']:.4f} after "
                 f"{summary['tokens_seen']:,} tokens; summary {path}")
    return summary


def _record_failure(ctx: RunContext, e: BaseException, tracker, trainer,
                    attempt: str | None) -> None:
    """The MLflow run FAILED (KILLED when interrupted) with the reason and step; with several
    ranks the reason is the first failing rank's own error, not its peers' echo of it."""
    reason = f"{type(e).__name__}: {e}"
    if ctx.world_size > 1:
        from leviathan.training.ranks import first_failure, report_failure

        report_failure(ctx.folder, attempt, ctx.rank, reason)
        if tracker is not None:
            reason = first_failure(ctx.folder, attempt, ctx.rank, reason, ctx.world_size)
    if tracker is None:
        return
    step = getattr(e, "step", None)  # NonFiniteLoss: the first diverged step
    if step is None:
        step = trainer.global_step + 1 if trainer is not None else 0
    tracker.set_tags({Tag.FAILURE_REASON: reason[:4000], Tag.FAILED_AT_STEP: step,
                      Tag.FAILURE_KIND: getattr(e, "failure_kind", None)})
    interrupted = isinstance(e, (KeyboardInterrupt, SystemExit))
    tracker.finish("KILLED" if interrupted else "FAILED")


def _agreed_start(ctx: RunContext, attempt: str | None) -> str | None:
    """The checkpoint every rank starts from: rank 0 verifies and decides (_start_checkpoint),
    the other ranks of the attempt take its verdict (training/ranks.py) instead of hashing every
    checkpoint themselves; without an attempt key each rank decides alone."""
    from leviathan.training.ranks import await_verdict, publish_verdict

    if attempt is None:
        return _start_checkpoint(ctx)
    if not ctx.is_zero:
        return await_verdict(ctx.folder, attempt)
    try:
        start = _start_checkpoint(ctx)
    except Exception as e:
        publish_verdict(ctx.folder, attempt, None, error=f"{type(e).__name__}: {e}")
        raise
    publish_verdict(ctx.folder, attempt, start)
    return start


def _check_world_size(ctx: RunContext, store, ckpt: Path) -> None:
    """A checkpoint holds one data position per rank: resume it with as many ranks."""
    from leviathan.training.config import TrainConfigError

    written = store.world_size_of(ckpt)
    if written is not None and written != ctx.world_size:
        raise TrainConfigError(
            f"trainer.devices x trainer.num_nodes: {ckpt} was written by {written} rank(s), "
            f"this run has {ctx.world_size} (trainer.devices={ctx.tc.devices}, "
            f"trainer.num_nodes={ctx.tc.num_nodes}); each rank's data position is exact only "
            f"for the same layout: resume with {written} rank(s)")


def _start_checkpoint(ctx: RunContext) -> str | None:
    """The run's newest intact checkpoint (resume; a corrupt one is moved aside and the next
    newest taken), else trainer.init_from (a WSD-S branch starts from its main run's snapshot: a
    new run that continues that step, optimizer and data). When every checkpoint of the run is
    corrupt: NoIntactCheckpoint, or a fresh start with trainer.restart_if_corrupt."""
    from leviathan.training.checkpoints import CheckpointStore, NoIntactCheckpoint

    tc = ctx.tc
    store = CheckpointStore(ctx.run_dir, tc.keep_checkpoints)
    ckpt, failed = store.newest_intact(move_aside=ctx.is_zero)
    if ckpt is not None:
        if failed:
            log.warning(f"resuming from {ckpt.name}, the newest intact checkpoint (step "
                        f"{store.step_of(ckpt) or '?'}); the steps after it are trained again")
        _check_world_size(ctx, store, ckpt)
        log.info(f"resuming from {ckpt}")
        return str(ckpt)
    if failed:
        if not tc.restart_if_corrupt:
            raise NoIntactCheckpoint(
                f"{ctx.run_dir}: no intact checkpoint ({len(failed)} corrupt, moved aside as "
                "*.corrupt); set trainer.restart_if_corrupt=true to start this run afresh")
        log.warning(f"{ctx.run_dir}: no intact checkpoint; starting afresh "
                    "(trainer.restart_if_corrupt=true)")
    if tc.init_from:
        if not Path(tc.init_from).is_file():
            raise FileNotFoundError(f"trainer.init_from: {tc.init_from} does not exist (has the "
                                    "main run reached that step?)")
        init = Path(tc.init_from)
        main = CheckpointStore(init.parent)  # the main run's folder: its records, left as is
        why = main.check(init)
        if why is not None:
            raise NoIntactCheckpoint(f"trainer.init_from: {init} is corrupt ({why}); rerun the "
                                     "main run's steps up to it (remove its folder's newer "
                                     "checkpoints) or start the branch from another snapshot")
        _check_world_size(ctx, main, init)
        log.info(f"starting from {tc.init_from}")
        return str(tc.init_from)
    return None


def _log_yaml(tracker, ctx: RunContext) -> None:
    """The resolved config beside the checkpoint and as an artifact, secrets masked."""
    from omegaconf import OmegaConf

    from leviathan.redaction import redact

    path = ctx.folder.config
    write_atomic(path, OmegaConf.to_yaml(OmegaConf.create(redact(ctx.container))))
    tracker.log_artifact(path)


def _summary(ctx: RunContext, cb, module, tracker, buckets, stream, wall_s) -> dict:
    plan = ctx.plan
    final = cb.final or {}
    stats = getattr(stream, "stats", None)
    out = {
        "run_id": tracker.run_id if tracker is not None else None,
        "run_key": ctx.key, "config_hash": ctx.chash, "status": "finished",
        "n_params": plan.n_params, "plan": {k: v for k, v in plan.as_dict().items()
                                            if k != "n_params"},
        "steps": plan.max_steps, "tokens_seen": plan.max_steps * plan.tokens_per_step,
        "final_val_loss": final.get("val/loss"),
        "final_train_loss": module.last.get("train/loss"),
        "val_tokens_evaluated": final.get("tokens_evaluated"),
        "bucket_losses": final.get("buckets", {}),
        "buckets": buckets.as_dict() if buckets is not None else None,
        "throughput": cb.throughput, "wall_s": wall_s, "pid": os.getpid(),
        "cost": cb.clock.summary(plan, wall_s, ctx.tc),  # device, steady step, all attempts
    }
    if stats is not None:
        out["data_skipped"] = stats.as_dict() if hasattr(stats, "as_dict") else str(stats)
    return out
