"""MLflow tracking, shared by training, sweeps and analysis.

config.py (the typed `tracking` config group), server.py (start, find and check an `mlflow
server`), run_tracker.py (a job's writer: outbox, retries, background open, heartbeat) with
outbox.py (the run folder's tracking files) and mlflow_ops.py (the MLflow calls), sync.py (send
what jobs left behind), postgres.py and service.py (`make tracking-server`: MLflow on PostgreSQL
with several workers), dashboard.py.
"""
