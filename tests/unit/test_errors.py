"""One base exception for what a user can fix (LeviathanError), caught by the command lines and
printed in one line; anything else is a bug and shows its traceback."""

from __future__ import annotations

import ast
import builtins
import importlib

import pytest
from helpers import REPO
from helpers.sweep import sweep_cli

from leviathan.errors import LeviathanError

PACKAGES = ("leviathan", "analysis")

# exception classes that deliberately do not subclass LeviathanError, and why
DELIBERATE = {
    # control flow: a SystemExit (status 128 + signal) raised once the checkpoint is on disk,
    # so that submitit / SLURM requeue the job; no CLI must turn it into `error: ...`
    "leviathan.training.signals.Preempted": SystemExit,
    # the same before the first training step (nothing to checkpoint): the process stops at once
    "leviathan.training.signals.StartupInterrupted": SystemExit,
    # the training diverged (NaN/inf loss or gradient norm): a numerical event of the run, not a
    # bad input the message could tell the user how to fix; the job fails with its traceback
    # (MLflow run FAILED), which shows where it happened
    "leviathan.training.step.NonFiniteLoss": FloatingPointError,
}


def _module(path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _looks_like_exception(base: ast.expr) -> bool:
    name = base.id if isinstance(base, ast.Name) else getattr(base, "attr", "")
    known = getattr(builtins, name, None)
    return (isinstance(known, type) and issubclass(known, BaseException)) or \
        name.endswith(("Error", "Exception")) or name == "LeviathanError"


def exception_classes() -> dict[str, type]:
    """Every exception class defined at module level in leviathan/ and analysis/."""
    found = {}
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            tree = ast.parse(path.read_text())
            names = [n.name for n in tree.body if isinstance(n, ast.ClassDef)
                     and any(_looks_like_exception(b) for b in n.bases)]
            if not names:
                continue
            mod = importlib.import_module(_module(path))
            for name in names:
                cls = getattr(mod, name)
                if issubclass(cls, BaseException):
                    found[f"{cls.__module__}.{name}"] = cls
    return found


def test_every_user_error_is_a_leviathan_error():
    classes = exception_classes()
    assert len(classes) >= 18  # the walk finds them (ConfigError, DataError, GridError, ...)
    assert set(DELIBERATE) <= set(classes), "a deliberate exception moved: update DELIBERATE"
    for name, cls in classes.items():
        if name in DELIBERATE:
            assert issubclass(cls, DELIBERATE[name]) and not issubclass(cls, LeviathanError)
        else:
            assert issubclass(cls, LeviathanError), f"{name} does not subclass LeviathanError"


def test_user_errors_keep_the_builtin_base_callers_catch():
    from analysis.inputs.runs import AnalysisError
    from leviathan.data.config import DataError
    from leviathan.sweep.grid import GridError
    from leviathan.tracking.server import TrackingUnreachable

    assert issubclass(DataError, ValueError) and issubclass(GridError, ValueError)
    assert issubclass(TrackingUnreachable, RuntimeError) and issubclass(AnalysisError, RuntimeError)


SMOKE = ["+grid=smoke", "sweep.dry_run=true"]


def test_sweep_prints_a_user_error_in_one_line(tmp_path, capsys):
    from leviathan.cli.sweep import run
    from leviathan.config import compose
    from leviathan.logs import setup_logging

    setup_logging()
    args = [*SMOKE, f"paths.root_dir={tmp_path}", "grid.family=nope"]
    capsys.readouterr()
    assert run(compose("sweep", args), args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: grid.family: ") and err.count("\n") == 1, err
    assert not (tmp_path / "sweeps").exists()  # nothing written


def test_sweep_does_not_swallow_a_bug(tmp_path, monkeypatch):
    from leviathan.cli.sweep import run
    from leviathan.config import compose
    from leviathan.sweep import plan

    def broken(*a, **k):
        raise ValueError("a bug, not a user error")

    monkeypatch.setattr(plan, "make_plan", broken)
    args = [*SMOKE, f"paths.root_dir={tmp_path}"]
    with pytest.raises(ValueError, match="a bug"):
        run(compose("sweep", args), args)


@pytest.mark.slow
def test_sweep_cli_user_error_exit_2(tmp_path):
    out = sweep_cli([*SMOKE, f"paths.root_dir={tmp_path}", "grid.family=nope"], timeout=300)
    assert out.returncode == 2, out.stderr[-3000:]
    lines = [ln for ln in out.stderr.splitlines() if "error:" in ln]
    assert len(lines) == 1 and lines[0].startswith("error: grid.family: "), out.stderr
    assert "Traceback" not in out.stderr
