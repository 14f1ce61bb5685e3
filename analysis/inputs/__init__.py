"""analysis.inputs: a sweep's runs as one `Runs` table (from MLflow or CSV files, with their
validation curves, token-frequency buckets and downstream scores), and the one ledger of excluded
runs. Nothing here imports a law, a reading or the report.

runs.py (the table, its checks, budget_ids, size names), ledger.py (every run a stage leaves out,
once, with the stage and the reason), csv_input.py (--csv, --curves, --buckets; Epoch's Chinchilla
runs), mlflow_input.py (a sweep's runs from MLflow, its parent run), downstream.py (lm-eval scores
per matched pair).
"""

from leviathan.lazy import lazy_exports

_EXPORTS = {
    "AnalysisError": "runs", "ARMS": "runs", "CONTROLS": "runs", "Runs": "runs",
    "budget_ids": "runs", "check_budgets": "runs", "finalize": "runs", "human": "runs",
    "Ledger": "ledger",
    "load_csv": "csv_input", "load_chinchilla": "csv_input",
    "latest_sweep": "mlflow_input", "load_mlflow": "mlflow_input", "sweep_parent": "mlflow_input",
    "from_mlflow": "downstream", "pair_table": "downstream",
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
