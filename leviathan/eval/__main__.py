"""`python -m leviathan.eval <run folder | checkpoint file | MLflow run id> [key=value ...]`: the
eval command (leviathan/cli/eval.py, which composes the config as every entry point does)."""

from __future__ import annotations

import sys

from leviathan.cli.eval import main

if __name__ == "__main__":
    sys.exit(main())
