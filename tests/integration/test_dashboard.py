"""`make dashboard` as a user sees it: a real browser (headless Chromium) on the MLflow UI of a
real `mlflow server`, opened at the address the dashboard command gives. It lands on the
experiment's runs (not MLflow 3's GenAI overview, "Traces 0"), where the sweep's parent run
holds its runs, and the parent's page shows the fit's headline table as its description."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from urllib.parse import urlparse

import pytest
from helpers import REPO
from helpers.mlflow_world import SIZES, log_sweep

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_dashboard_opens_on_the_sweep_runs_and_the_fit_headline(mlflow_server, chromium,
                                                                 tmp_path):
    from analysis.fit_scaling import main as fit
    from leviathan.tracking import runs as tr

    experiment, sweep = f"dash-{uuid.uuid4().hex[:8]}", "iso-dash"
    c = tr.client(mlflow_server)
    exp_id = tr.experiment_id(c, experiment)  # as a sweep, a job or a fit creates it
    assert c.get_experiment(exp_id).tags[tr.EXPERIMENT_KIND] == tr.MODEL_DEVELOPMENT
    _, _, parent = log_sweep(mlflow_server, experiment, sweep)
    assert fit(["--sweep", sweep, "--tracking-uri", mlflow_server, "--experiment", experiment,
                "--out", str(tmp_path / "fit"), "--bootstrap", "10"]) == 0

    port = urlparse(mlflow_server).port  # `make dashboard` where a server already answers
    out = subprocess.run([sys.executable, "-m", "leviathan.tracking.dashboard", "--port",
                          str(port), f"tracking.experiment={experiment}"], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    said = out.stdout + out.stderr
    assert out.returncode == 0, said[-3000:]
    url = re.search(r"http://127\.0\.0\.1:\d+/#/experiments/\S+", said)
    assert url and f"/#/experiments/{exp_id}" in url[0], said[-3000:]

    children = 2 * len(SIZES)
    runs = chromium.load(url[0], until=[f"sweep-{sweep}", f"{1 + children} matching runs"])
    assert "Traces 0" not in runs.text and "No data available" not in runs.text
    assert f'href="#/experiments/{exp_id}/runs/{parent}"' in runs.dom  # the parent's row
    page = chromium.load(f"{mlflow_server}/#/experiments/{exp_id}/runs/{parent}",
                         until=["Headline: the Dense model each arm is worth", "Child runs"])
    assert "<table" in page.dom and "2.00×" in page.text  # the table, rendered
    shown = page.text.split("Child runs", 1)[1]
    for size in SIZES:
        for arm in ("dense", "leviathan"):
            assert f"{sweep}-{arm}-{size}" in shown, (arm, size)
