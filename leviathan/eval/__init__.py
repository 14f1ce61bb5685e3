"""leviathan.eval: downstream evaluation of trained runs with lm-evaluation-harness.

    from leviathan.eval import evaluate_run, eval_config
    evaluate_run("scratch/runs/<run key>", site_config(["eval.limit=100"]))  # from .__main__

`python -m leviathan.eval <run folder | checkpoint | MLflow run id> [key=value ...]` does the
same from a shell; the keys are conf/eval/default.yaml's. The harness itself (`lm-eval`, the
`eval` extra) is imported only when a run is evaluated.
"""

from leviathan.eval.checkpoint import CheckpointError, RunFiles, load_model, locate
from leviathan.eval.config import EvalConfig, EvalConfigError, eval_config
from leviathan.eval.runner import evaluate_run, mlflow_metrics

__all__ = [
    "CheckpointError",
    "EvalConfig",
    "EvalConfigError",
    "RunFiles",
    "eval_config",
    "evaluate_run",
    "load_model",
    "locate",
    "mlflow_metrics",
]
