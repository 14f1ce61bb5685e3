"""The commands that combine packages: the sweep with its dry run's power analysis
(`sweep.py`), the design search (`design.py`), the downstream evaluation (`eval.py`) and the
MLflow UI (`dashboard.py`). This layer imports `leviathan` and `analysis`; nothing below imports
it, except the Hydra wrappers and the `__main__` that open a command at its documented path
(`python -m leviathan.sweep`, `python -m leviathan.sweep.design`, `python -m leviathan.eval`)."""
