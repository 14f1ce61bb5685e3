"""leviathan.eval: downstream evaluation of trained runs with lm-evaluation-harness.

    from leviathan.eval import evaluate_run, eval_config
    evaluate_run("scratch/runs/<run key>", site_config(["eval.limit=100"]))  # leviathan.cli.eval

`python -m leviathan.eval <run folder | checkpoint | MLflow run id> [key=value ...]` does the
same from a shell; the keys are conf/eval/default.yaml's. The harness itself (`lm-eval`, the
`eval` extra) is imported only when a run is evaluated, and the exports load lazily, so
composing a config (leviathan.eval.config) imports neither the runner nor the checkpoint
reader.
"""

from leviathan.lazy import lazy_exports

_EXPORTS = {
    "CheckpointError": "checkpoint", "RunFiles": "checkpoint", "load_model": "checkpoint",
    "locate": "checkpoint",
    "EvalConfig": "config", "EvalConfigError": "config", "eval_config": "config",
    "evaluate_run": "runner", "mlflow_metrics": "runner",
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
