"""The runs: from MLflow or CSV files, with their curves, buckets and downstream scores, as one
`Runs` table."""
