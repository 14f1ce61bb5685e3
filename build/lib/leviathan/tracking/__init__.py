"""MLflow tracking: the local server and helpers shared by training, sweeps and analysis."""
