"""leviathan.training: one training run (Lightning), tracked in MLflow, exactly resumable.

    from leviathan.training.run import train          # train(cfg) -> summary dict
    from leviathan.training.config import config_hash, trainer_config
    from leviathan.training.plan import plan_run

Files: config.py (the typed trainer config, config hash), plan.py (the run plan), run.py
(train: checks before building), engine.py (data, model, Lightning fit, MLflow run lifecycle),
module.py (the LightningModule around step.py), step.py (the plain-torch step: lean loss, AdamW
groups, clipping, NaN guard; the benches time it), callbacks.py (per-step
metrics, throughput/MFU, validation, atomic checkpoints, preemption), evaluation.py
(validation and the rare-token buckets), batches.py (data position exact under prefetching),
schedule.py, signals.py. The MLflow writer (outbox, retries, background open) is
leviathan.tracking.run_tracker.
Heavy modules are imported by the functions that need them.
"""
