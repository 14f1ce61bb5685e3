"""Every entry point composes the same Hydra config: a site's local/default.yaml (here through
$LEVIATHAN_SITE_CONF, as a site with an installed package has it; conf/local/default.yaml works
the same way in a checkout) holds for fit-scaling, sweep.status and eval exactly as for train and
sweep; conf/ ships with the package.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO


@pytest.fixture
def site_uri(mlflow_server, tmp_path, monkeypatch):
    """A site folder whose local/default.yaml names the test server as tracking.uri, exported
    as $LEVIATHAN_SITE_CONF (nothing is written into the repository); yields the URI."""
    from leviathan.config import SITE_ENV

    if (REPO / "conf" / "local" / "default.yaml").exists():
        pytest.skip("conf/local/default.yaml exists in this checkout: it would win over the "
                    "site folder")
    (tmp_path / "site" / "local").mkdir(parents=True)
    (tmp_path / "site" / "local" / "default.yaml").write_text(
        f"# @package _global_\ntracking:\n  uri: {mlflow_server}\n")
    monkeypatch.setenv(SITE_ENV, str(tmp_path / "site"))
    return mlflow_server


def _run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.integration
@pytest.mark.slow
def test_site_tracking_uri_holds_for_status_fit_and_eval(site_uri, tmp_path):
    # a planned sweep whose runs were configured with another server
    plan = _run("leviathan.sweep", "+grid=smoke_tiny", "grid.sizes=[smoke_tiny/164K]",
                "grid.tokens=[512]",
                "sweep.dry_run=true", "tracking.uri=http://127.0.0.1:9",
                f"paths.root_dir={tmp_path}")
    assert plan.returncode == 0, plan.stderr[-3000:]
    status = _run("leviathan.sweep.status", "smoke_tiny", f"paths.root_dir={tmp_path}")
    assert status.returncode == 0, status.stderr[-3000:]
    assert f"reading {site_uri}" in status.stderr  # conf/local's server, not the recorded one
    assert "not reachable" not in status.stderr and "not launched" in status.stdout

    fit = _run("analysis.fit_scaling", "--sweep", "no-such-sweep")
    assert fit.returncode == 2
    assert f"from {site_uri}" in fit.stdout
    # the site's server was asked (whether an earlier test on it made the experiment or not)
    assert (f"no MLflow experiment 'leviathan' at {site_uri}" in fit.stderr or
            f"'no-such-sweep') in experiment 'leviathan' at {site_uri}" in fit.stderr), fit.stderr

    run_id = "0123456789abcdef0123456789abcdef"
    ev = _run("leviathan.eval", run_id, "eval.tasks=[piqa]")
    assert ev.returncode == 2 and f"not found at {site_uri}" in ev.stderr, ev.stderr[-2000:]


def test_packaged_config_composes_without_the_repository(tmp_path):
    """A wheel carries conf/ as leviathan/conf: installed elsewhere, it composes every primary
    config (the layout's packages are all listed in pyproject.toml)."""
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())
                 ["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts) for p in REPO.glob("*/**/__init__.py")
             if p.parts[len(REPO.parts)] in ("leviathan", "analysis")}
    assert found | {"leviathan.conf"} == listed, "pyproject.toml [tool.setuptools] packages"
    wheel = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                            "--no-build-isolation", "-w", str(tmp_path / "dist"), str(REPO)],
                           capture_output=True, text=True, timeout=600)
    assert wheel.returncode == 0, wheel.stderr[-3000:]
    site = tmp_path / "site"
    inst = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                           str(site), *map(str, (tmp_path / "dist").glob("*.whl"))],
                          capture_output=True, text=True, timeout=600)
    assert inst.returncode == 0, inst.stderr[-3000:]
    site_conf = tmp_path / "site-conf"  # the installed package's conf/local: a folder of one's own
    (site_conf / "local").mkdir(parents=True)
    (site_conf / "local" / "default.yaml").write_text(
        "# @package _global_\ntracking:\n  uri: http://mlflow.site:5000\n")
    code = ("from leviathan.config import compose, conf_dir; print(conf_dir()); "
            "c = compose('sweep', ['+grid=isoparametric', 'launcher=slurm']); "
            "print(c.grid.sizes[0], c.model.size, c.launcher.name, c.tracking.uri)")
    env = {**os.environ, "PYTHONPATH": str(site), "LEVIATHAN_SITE_CONF": str(site_conf)}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.split("\n")
    assert lines[0] == str(site / "leviathan" / "conf")
    assert lines[1] == "v1/60M debug slurm http://mlflow.site:5000"
