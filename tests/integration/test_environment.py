"""Reproducible environments: the lock pins what `make install` installs; every run records its
environment; a run resumed on another environment, and a sweep whose runs ran on several, say
which packages differ (in the run's log and tags, in `sweep.status`, in the fit summary)."""

from __future__ import annotations

import importlib.metadata as md
import platform
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from helpers import REPO
from helpers.train import sigterm_at

from leviathan.tracking.environment import (
    KEY_PACKAGES,
    Environment,
    canonical,
    capture,
    describe,
    diff,
    installed_packages,
    load,
    record_training,
    save,
)

LOCK = REPO / "requirements.lock"
PROBE = "provenance-probe"  # a distribution that only a probe site folder holds


def locked() -> dict[str, str]:
    """{canonical name: version} from requirements.lock (every line name==version)."""
    pins = {}
    for line in LOCK.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep and version and " " not in version, f"{LOCK.name}: not a pin: {line!r}"
            pins[canonical(name)] = version
    return pins


def probe_site(root: Path) -> Path:
    """A folder on which importlib.metadata finds provenance-probe 1.0 installed."""
    info = root / f"{PROBE.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {PROBE}\nVersion: 1.0\n")
    return root


def other_env(env: Environment) -> Environment:
    """`env` with another torch and one more package: a second environment."""
    return Environment.from_dict({**env.as_dict(), "packages": {
        **env.packages, "torch": "2.99.0", PROBE: "1.0"}})


# ------------------------------------------------------------------ the lock
def test_lock_pins_every_requirement_and_no_torch_build():
    pins = locked()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    wanted = [*project["dependencies"], *extras["dev"], *extras["eval"], *extras["tracking"]]
    from packaging.requirements import Requirement

    missing = [r for r in wanted if canonical(Requirement(r).name) not in pins]
    assert not missing, f"{LOCK.name} lacks {missing}: run `make lock`"
    assert "+" not in pins["torch"]  # the version only: each machine installs its own build
    assert not [n for n in pins if n.startswith("nvidia-") or n == "triton"]  # CPU resolution
    assert "make lock" in LOCK.read_text().splitlines()[1]


def test_installed_versions_match_the_lock():
    if Path(sys.prefix).resolve() != (REPO / ".venv").resolve():
        pytest.skip(f"{sys.prefix} is not this checkout's .venv (`make install` makes it)")
    pins = locked()
    from packaging.version import Version

    got = {n: md.version(n) for n in KEY_PACKAGES}
    # torch: the lock pins the version, the machine its build (2.13.0+cpu satisfies 2.13.0)
    got["torch"] = Version(got["torch"]).public
    assert got == {n: pins[n] for n in KEY_PACKAGES}, "the venv is not the lock: `make install`"


# ------------------------------------------------------------------ capture, hash, diff
def test_capture_hash_diff_and_file_round_trip(tmp_path, monkeypatch):
    import torch

    env = capture()
    v = env.versions()
    assert list(v) == ["python", *KEY_PACKAGES, "cuda", "cudnn", "gpu", "hash"]
    assert v["python"] == platform.python_version() and v["torch"] == torch.__version__
    assert v["lightning"] == md.version("lightning") and v["hydra-core"] == md.version("hydra-core")
    assert v["cuda"] == (torch.version.cuda or "none")
    assert len(env.hash) == 64 and capture().hash == env.hash  # stable
    assert env.packages == installed_packages() and len(env.packages) > 50

    other = other_env(env)
    assert other.hash != env.hash
    assert diff(env, other) == {PROBE: (None, "1.0"), "torch": (env.packages["torch"], "2.99.0")}
    assert describe(diff(other, env)) == f"{PROBE} 1.0 -> absent, torch 2.99.0 -> " \
                                         f"{env.packages['torch']}"
    assert diff(env, env) == {}

    back, meta = load(save(env, tmp_path / "environment.json", mlflow_run_id="r1"))
    assert back == env and back.hash == env.hash and meta["mlflow_run_id"] == "r1"

    # a distribution installed on sys.path is part of the set (and changes the hash)
    monkeypatch.syspath_prepend(str(probe_site(tmp_path / "site")))
    now = capture()
    assert now.packages[PROBE] == "1.0" and diff(env, now) == {PROBE: (None, "1.0")}


# ------------------------------------------------------------------ runs
@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """The debug corpus test_train_run.py uses (written and prepared on first use)."""
    path = tmp_path_factory.getbasetemp() / "train-data"
    path.mkdir(exist_ok=True)
    return path


@pytest.mark.integration
@pytest.mark.slow
def test_resumed_run_on_another_environment_says_which_packages_differ(
        tmp_path, data_dir, mlflow_server, caplog):
    """First attempt: a subprocess that also sees provenance-probe 1.0, stopped by SIGTERM.
    The resumed attempt (this process, without it) says so in its log and on its MLflow run."""
    import os

    from helpers.train import compose, tiny
    from mlflow.tracking import MlflowClient

    from leviathan.training.run import train

    args = tiny(data_dir, tmp_path, mlflow_server, "run_name=moved", "trainer.ckpt_every=100",
                steps=6)
    site = probe_site(tmp_path / "site")
    env = dict(os.environ, PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-m", "leviathan.train", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = sigterm_at(proc, "step 2/")  # training under way: preempt it
    assert proc.returncode == 128 + signal.SIGTERM, out[-3000:]
    run_dir = tmp_path / "runs" / "moved"
    first, meta = load(run_dir / "environment.json")
    assert first.packages[PROBE] == "1.0"
    run_id = (run_dir / "mlflow_run_id").read_text().strip()
    assert meta["mlflow_run_id"] == run_id

    with caplog.at_level("INFO", logger="leviathan"):
        train(compose(args))  # the same command again, here: resumes on another environment
    log = "\n".join(r.getMessage() for r in caplog.records)
    assert "environment differs from this run's first attempt" in log, log
    assert f"{PROBE} 1.0 -> absent" in log
    client = MlflowClient(mlflow_server)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["env.changed"] == f"{PROBE} 1.0 -> absent"
    assert run.data.tags["env.hash_resumed"] == capture().hash
    assert run.data.params["env.hash"] == first.hash  # params: the first attempt's
    arts = {a.path for a in client.list_artifacts(run_id, "environment")}
    assert arts == {f"environment/environment.{capture().hash[:12]}.json"}


def _record(uri: str, experiment: str, env: Environment, folder: Path, *, run_id=None,
            name=None, tags=None) -> str:
    """Record `env` on a run as training does (a new run, or run_id reopened), then finish."""
    from leviathan.tracking.run_tracker import RunTracker

    folder.mkdir(parents=True, exist_ok=True)  # the run folder training would have made
    tracker = RunTracker(uri, experiment, flush_every_s=0.5)
    tracker.start(run_id=run_id, run_name=name, tags=tags)
    record_training(tracker, folder, env=env)
    tracker.finish("FINISHED")
    return tracker.run_id


@pytest.mark.integration
@pytest.mark.slow
def test_sweep_status_names_the_packages_that_differ(tmp_path, mlflow_server, capsys):
    """The sweep's dry run and sweep.status in this process (their `python -m` starts are
    tested in test_config_entry_points.py)."""
    import pandas as pd

    from leviathan.cli.sweep import sweep as plan_sweep
    from leviathan.config import compose
    from leviathan.sweep.status import main as status_main

    sweep, experiment = "env-status", "test-environment"
    args = ["+grid=smoke", "sweep.dry_run=true", f"sweep.name={sweep}",
            f"paths.root_dir={tmp_path}", f"tracking.uri={mlflow_server}",
            f"tracking.experiment={experiment}"]
    assert plan_sweep(compose("sweep", args), args) == 0
    names = list(pd.read_csv(tmp_path / "sweeps" / sweep / "plan.csv")["run"])
    env = capture()

    def status() -> str:
        capsys.readouterr()
        assert status_main([sweep, "--sweeps-dir", str(tmp_path / "sweeps")]) == 0
        return capsys.readouterr().out

    tags = {"kind": "train", "sweep": sweep}
    ids = {n: _record(mlflow_server, experiment, env, tmp_path / n, name=n, tags=tags)
           for n in names}
    text = status()
    assert f"All {len(names)} runs ran on one environment, {env.hash[:12]}" in text, text
    assert "different environments" not in text

    # two runs trained again (new MLflow runs, newer) elsewhere; one resumed elsewhere
    moved = other_env(env)
    for n in names[:2]:
        _record(mlflow_server, experiment, moved, tmp_path / "again" / n, name=n, tags=tags)
    _record(mlflow_server, experiment, moved, tmp_path / names[-1], run_id=ids[names[-1]])
    text = status()
    assert f"The {len(names)} runs ran on 2 different environments" in text, text
    assert f"- {env.hash[:12]}: {len(names) - 2} runs" in text
    assert f"- {moved.hash[:12]}: 2 runs ({', '.join(sorted(names[:2]))})" in text
    assert f"| torch | {env.packages['torch']} | 2.99.0 |" in text
    assert f"| {PROBE} | absent | 1.0 |" in text
    assert (f"- {names[-1]} was resumed on another environment than its first attempt: "
            f"{PROBE} absent -> 1.0, torch {env.packages['torch']} -> 2.99.0") in text
    print(text)


@pytest.mark.integration
@pytest.mark.slow
def test_fit_summary_names_the_packages_that_differ(tmp_path, mlflow_server):
    from helpers.mlflow_world import log_sweep
    from mlflow.tracking import MlflowClient

    from analysis.fit_scaling import main

    sweep, experiment = "env-fit", "test-environment-fit"
    log_sweep(mlflow_server, experiment, sweep)
    client = MlflowClient(mlflow_server)
    exp_id = client.get_experiment_by_name(experiment).experiment_id
    runs = client.search_runs([exp_id], f"tags.kind = 'train' and tags.sweep = '{sweep}'")
    env = capture()
    for i, r in enumerate(sorted(runs, key=lambda r: r.info.run_name)):
        _record(mlflow_server, experiment, env if i < 5 else other_env(env),
                tmp_path / r.info.run_id, run_id=r.info.run_id)
    out = tmp_path / "fit"
    rc = main(["--sweep", sweep, "--tracking-uri", mlflow_server, "--experiment", experiment,
               "--out", str(out), "--bootstrap", "20", "--no-upload"])
    assert rc == 0
    summary = (out / "summary.md").read_text()
    section = summary[summary.index("## Environments"):]
    assert f"The {len(runs)} runs ran on 2 different environments" in section, section
    assert f"| torch | {env.packages['torch']} | 2.99.0 |" in section
    assert f"| {PROBE} | absent | 1.0 |" in section
    print(section)


def test_vendored_copies_are_not_installed_packages():
    """Importing setuptools puts setuptools/_vendor on sys.path; its copies (autocommand,
    jaraco.*, ...) are not this environment's packages and must not come and go with it (a
    resumed run in a process that had imported it read them as a changed environment)."""
    import json

    code = ("import json, setuptools; from leviathan.tracking.environment import "
            "installed_packages; print(json.dumps(installed_packages()))")
    with_setuptools = json.loads(subprocess.run([sys.executable, "-c", code], check=True,
                                                capture_output=True, text=True).stdout)
    plain = json.loads(subprocess.run(
        [sys.executable, "-c", code.replace("import json, setuptools;", "import json;")],
        check=True, capture_output=True, text=True).stdout)
    assert with_setuptools == plain
