"""leviathan.eval: downstream evaluation of trained runs with lm-evaluation-harness.

    from leviathan.eval import evaluate_run, eval_config
    evaluate_run("scratch/runs/<run key>", site_config(["eval.limit=100"]))  # from .__main__

`python -m leviathan.eval <run folder | checkpoint | MLflow run id> [key=value ...]` does the
same from a shell; the keys are conf/eval/default.yaml's. The harness itself (`lm-eval`, the
`eval` extra) is imported only when a run is evaluated, and the exports load lazily, so
composing a config (leviathan.eval.config) imports neither the runner nor the checkpoint
reader.
"""

import importlib

_EXPORTS = {
    "CheckpointError": "checkpoint", "RunFiles": "checkpoint", "load_model": "checkpoint",
    "locate": "checkpoint",
    "EvalConfig": "config", "EvalConfigError": "config", "eval_config": "config",
    "evaluate_run": "runner", "mlflow_metrics": "runner",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"leviathan.eval.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'leviathan.eval' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
