"""leviathan.training: one training run (Lightning), tracked in MLflow, exactly resumable.

    from leviathan.training.run import train          # train(cfg) -> summary dict
    from leviathan.training.config import config_hash, trainer_config
    from leviathan.training.plan import plan_run

Files: config.py (the typed trainer config, config hash), plan.py (the run plan), context.py
(RunContext: a run's state, built once in run.py and passed whole), run.py (train: checks
before building), engine.py (data, model, Lightning fit, MLflow run lifecycle), module.py (the
LightningModule around step.py; per-step values stay on the device until flushed), step.py
(the plain-torch step: lean loss, AdamW groups, clipping, NaN guard; the benches time it),
callbacks.py (metrics read from the device at log/validation/checkpoint steps, throughput/MFU,
validation, atomic checkpoints, preemption), evaluation.py (validation and the rare-token
buckets), records.py (what a run records: params, tags, its tracker), batches.py (data position
exact under prefetching), schedule.py, signals.py. The MLflow writer (outbox, retries,
background open) is leviathan.tracking.run_tracker; tracking.enabled=false records to the run
folder instead (leviathan.tracking.folder).
Heavy modules are imported by the functions that need them.
"""
