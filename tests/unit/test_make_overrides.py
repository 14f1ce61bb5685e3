"""Issue 34.5: config overrides on make's command line reach the Hydra entry point a target
wraps (fit-scaling, dashboard, demo), in the order given and quoted as given, or make refuses
them by name. `make -n` shows the command line the shell runs; a real `make fit-scaling` shows
the entry point itself reading an override (a bad one, so that nothing starts)."""

from __future__ import annotations

import os
import shlex
import subprocess

import pytest
from helpers import REPO

# every form a user types: key=value, +key=value, ~key, a dict and a list with commas, a
# space, a shell metacharacter; make reads `~key` as a goal, the others as variables
OVERRIDES = ["+fit.seed_noise.leviathan=0.01", "fit.bootstrap=10", "'~fit.b_grid'",
             "'grid.seeds_by_size={v1/109M:3,v1/164M:2}'", "'grid.sizes=[v1/60M,v1/109M]'",
             "'tracking.uri=http://127.0.0.1:5001/a b'", "'launcher.constraint=h100|a100'",
             "trainer=gpu"]
ENTRY = {"fit-scaling": ["-m", "analysis.fit_scaling", "--sweep", "smoke_tiny"],
         "dashboard": ["-m", "leviathan.cli.dashboard", "--port", "5000"],
         "demo": ["-m", "leviathan.demo", "--port", "5000"]}


def _make(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
    return subprocess.run(["make", "--no-print-directory", "-C", str(REPO), *args],
                          capture_output=True, text=True, timeout=timeout, env=env)


def _command(out: str, module: str) -> list[str]:
    """The argument list of the line of `make -n`'s output that runs `module`, as sh reads it."""
    line = next(ln for ln in out.splitlines() if f" -m {module} " in f"{ln} ")
    return shlex.split(line)


@pytest.mark.parametrize("target", sorted(ENTRY))
def test_every_override_reaches_the_entry_point_in_order(target):
    out = _make("-n", target, "SWEEP=smoke_tiny", *(shlex.split(o)[0] for o in OVERRIDES))
    assert out.returncode == 0, out.stderr
    argv = _command(out.stdout, ENTRY[target][1])
    assert argv[1:len(ENTRY[target]) + 1] == ENTRY[target]
    # make reports `~key` goals after the variables; within each kind the order is the user's
    given = [shlex.split(o)[0] for o in OVERRIDES]
    assert argv[len(ENTRY[target]) + 1:] == [o for o in given if not o.startswith("~")] + [
        o for o in given if o.startswith("~")]


@pytest.mark.parametrize("target", sorted(ENTRY))
def test_a_variable_that_is_no_override_is_refused_by_name(target):
    out = _make("-n", target, "fit.bootstrap=10", "bootstrap=10")
    assert out.returncode != 0 and "bootstrap=10 is neither a config override" in out.stderr
    assert "fit.bootstrap=10?" in out.stderr and " -m " not in out.stdout  # nothing ran
    out = _make("-n", target, "SWEEP=x", "ARGS=--no-upload", "MLFLOW_PORT=5001",
                "DEMO_ARGS=grid.tokens=[4096]", "LEVIATHAN_TOKENIZER_FILE=/x")
    assert out.returncode == 0, out.stderr  # this Makefile's variables and the project's env


def test_fit_scaling_reads_the_override():
    """The real target: fit-scaling's own config composition fails on a `+key=value` given to
    make (before it reads MLflow), naming the key. (dashboard and demo are held by `make -n`
    above: a real run of either starts a server.)"""
    out = _make("fit-scaling", "SWEEP=no_such_sweep", "+fit.seed_noise.leviathan=abc",
                timeout=120)
    assert out.returncode != 0, out.stdout + out.stderr
    assert "error: fit.seed_noise.leviathan: Value 'abc'" in out.stdout + out.stderr
