"""The MLflow path end to end against a real `mlflow server`: runs logged here with the
platform's schema, `fit_scaling --sweep/--latest`, artifacts uploaded to the sweep's parent run."""

from __future__ import annotations

import json
import math
import time
import uuid

import numpy as np
import pandas as pd
import pytest
from helpers.mlflow_world import ALPHA, BUCKETS, SIZES, A, E, log_sweep

from analysis.fit_scaling import main

pytestmark = pytest.mark.integration



@pytest.fixture(scope="module")
def experiment():
    return f"analysis-{uuid.uuid4().hex[:8]}"


@pytest.mark.slow
def test_sweep_end_to_end_with_artifacts_on_the_parent(mlflow_server, experiment, tmp_path):
    sweep = "iso-e2e"
    client, _, parent = log_sweep(mlflow_server, experiment, sweep, start_time=1_000,
                                  bad_runs=True)
    out = tmp_path / "fit"
    rc = main(["--sweep", sweep, "--tracking-uri", mlflow_server, "--experiment", experiment,
               "--out", str(out), "--bootstrap", "200"])
    assert rc == 0
    for name in ("fit.json", "multipliers.csv", "summary.md", "scaling.png",
                 "multiplier_vs_tokens.png", "rare_tokens.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    fit = json.loads((out / "fit.json").read_text())
    assert fit["sweep"] == sweep
    fam = fit["families"]["isoparametric"]
    # final losses lie exactly on L = 1.69 + 400 N^-0.34, Leviathan's at 2x its own N
    m = pd.read_csv(out / "multipliers_by_run.csv")
    ok = m[m["reason"].isna()]
    assert len(ok) == 4 and np.allclose(ok["multiplier"], 2.0, rtol=1e-4)
    assert (ok["multiplier_lo"] <= 2.0 + 1e-6).all() and (ok["multiplier_hi"] >= 2.0 - 1e-6).all()
    # the three matchings from the run params (n_params/body, plan.flops_per_token x tokens)
    mm = pd.read_csv(out / "multipliers.csv").query("size != 'trend'")
    assert set(mm["basis"]) == {"params", "body", "compute"}
    p = mm[(mm["basis"] == "params") & (mm["size"] != "20M")]  # 20M: a second seed at 1.6
    assert len(p) == 3 and np.allclose(p["multiplier"], 2.0, rtol=1e-4)
    assert fam["dense"]["n_points"] == 4
    reasons = {e["reason"] for e in fit["excluded"]}
    assert "unfinished (status RUNNING)" in reasons
    assert "final validation loss is missing or NaN" in reasons
    assert any("N_eff undefined" in r for r in reasons)
    traj = pd.DataFrame(fam["multiplier_vs_tokens"])
    assert set(traj["size"]) >= {"20M", "40M", "80M"}  # 160M: only one Dense size reaches it
    summary = (out / "summary.md").read_text()
    for size in SIZES:
        assert f"| {size} |" in summary
    # artifacts on the sweep's parent run, in the fit's own folder
    names = {a.path.split("/")[-1] for a in client.list_artifacts(
        parent, client.get_run(parent).data.tags["fit_latest"])}
    assert {"fit.json", "multipliers.csv", "summary.md", "scaling.png",
            "multiplier_vs_tokens.png", "rare_tokens.png"} <= names


@pytest.mark.slow
def test_bucket_losses_from_metrics_and_summary_json(mlflow_server, experiment):
    from analysis.inputs.mlflow_input import load_mlflow

    log_sweep(mlflow_server, experiment, "iso-buckets", start_time=2_000)
    runs = load_mlflow("iso-buckets", tracking_uri=mlflow_server, experiment=experiment)
    assert len(runs.table) == 8 and (runs.table["reason"] == "").all()
    per_run = runs.buckets.groupby("run_id")["bucket"].nunique()
    assert len(per_run) == 8 and (per_run == len(BUCKETS)).all()  # 2 from summary.json
    assert len(runs.history) == 8 * 6
    t = runs.table.set_index("size")
    assert math.isclose(t.loc["40M"].query("arm == 'dense'")["params"].iloc[0], 40e6)


@pytest.mark.slow
def test_latest_picks_newest_sweep_and_creates_missing_parent(mlflow_server, experiment,
                                                              tmp_path, capsys):
    from analysis.inputs.mlflow_input import latest_sweep, sweep_parent

    log_sweep(mlflow_server, experiment, "iso-old", start_time=3_000)
    client, exp_id, _ = log_sweep(mlflow_server, experiment, "iso-new",
                                  start_time=int(time.time() * 1000) + 60_000)
    assert latest_sweep(mlflow_server, experiment) == "iso-new"
    rc = main(["--latest", "--tracking-uri", mlflow_server, "--experiment", experiment,
               "--out", str(tmp_path / "latest"), "--bootstrap", "50"])
    assert rc == 0 and "sweep 'iso-new'" in capsys.readouterr().out

    # a sweep whose runs have no parent run: the fit creates one and uploads there
    log_sweep(mlflow_server, experiment, "iso-orphan", parent=False)
    assert sweep_parent(mlflow_server, experiment, "iso-orphan", create=False) is None
    rc = main(["--sweep", "iso-orphan", "--tracking-uri", mlflow_server, "--experiment",
               experiment, "--out", str(tmp_path / "orphan"), "--bootstrap", "50"])
    assert rc == 0
    parent = sweep_parent(mlflow_server, experiment, "iso-orphan", create=False)
    assert parent is not None
    folder = client.get_run(parent).data.tags["fit_latest"]
    names = {a.path.split("/")[-1] for a in client.list_artifacts(parent, folder)}
    assert "summary.md" in names and "scaling.png" in names
    run = client.get_run(parent)
    assert run.data.tags["kind"] == "sweep" and run.data.tags["sweep"] == "iso-orphan"


def test_unknown_sweep_is_a_clear_error(mlflow_server, experiment, capsys):
    """A typo'd sweep name: the error lists the sweeps there are and the closest one."""
    from leviathan.tracking import runs as tr

    c = tr.client(mlflow_server)
    tr.parent_run(c, tr.experiment_id(c, experiment), "iso-typo")  # a sweep that exists
    rc = main(["--sweep", "iso-typp", "--tracking-uri", mlflow_server, "--experiment",
               experiment, "--bootstrap", "10"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "no training runs" in err and "dense 0, leviathan 0" in err
    assert f"sweeps in experiment {experiment!r}:" in err and "did you mean 'iso-typo'" in err


def test_each_fit_keeps_the_last_and_logs_a_folder_of_its_own(mlflow_server, experiment,
                                                              tmp_path):
    """Two fits of one sweep: the first's outputs move to <out>/previous/, and each fit is an
    artifact folder of its own on the sweep's parent run, fit/<UTC time>-<fit config hash>,
    the newest named by the parent's tag fit_latest (one generation locally:
    tests/unit/test_analysis_cli.py)."""
    client, _, parent = log_sweep(mlflow_server, experiment, "iso-refit", start_time=5_000)
    out = tmp_path / "fit"
    args = ["--sweep", "iso-refit", "--tracking-uri", mlflow_server, "--experiment", experiment,
            "--out", str(out), "--bootstrap", "10"]
    assert main([*args, "--seed", "1"]) == 0
    first = json.loads((out / "fit.json").read_text())
    assert main([*args, "--seed", "2"]) == 0
    second = json.loads((out / "fit.json").read_text())
    assert first["config_hash"] != second["config_hash"] and second["config"]["seed"] == 2
    assert json.loads((out / "previous" / "fit.json").read_text()) == first
    assert (out / "previous" / "scaling.png").is_file()
    folders = {f"fit/{f['fitted_at']}-{f['config_hash'][:12]}" for f in (first, second)}
    assert {a.path for a in client.list_artifacts(parent, "fit")} == folders
    for folder in folders:
        names = {a.path.split("/")[-1] for a in client.list_artifacts(parent, folder)}
        assert {"fit.json", "summary.md", "scaling.png"} <= names and "previous" not in names
    tags = client.get_run(parent).data.tags
    assert tags["fit_latest"] == f"fit/{second['fitted_at']}-{second['config_hash'][:12]}"
    assert tags["fit_config_hash"] == second["config_hash"]


def test_multiplier_grows_when_leviathan_pulls_ahead(mlflow_server, experiment):
    """Leviathan's effective size goes from ~1x to 2x over training: the trajectory rises."""
    from analysis.config import FitConfig
    from analysis.inputs.mlflow_input import load_mlflow
    from analysis.scaling import analyse

    sweep = "iso-growth"
    log_sweep(mlflow_server, experiment, sweep, start_time=4_000, mult=lambda frac: 1.0 + frac)
    runs = load_mlflow(sweep, tracking_uri=mlflow_server, experiment=experiment)
    res = analyse(runs, FitConfig(bootstrap=20)).families
    traj = res["isoparametric"].trajectory
    for _, g in traj.groupby("run_id"):
        g = g.sort_values("tokens")
        if len(g) >= 3:
            assert g["multiplier"].iloc[-1] > g["multiplier"].iloc[0] + 0.3, g
    assert res["isoparametric"].multipliers["multiplier"].between(1.9, 2.1).all()


@pytest.mark.slow
def test_mlflow_runs_carry_controls_lr_flops_and_cooldown_branches(mlflow_server, experiment):
    """The MLflow mapping (analysis.inputs.mlflow_input.row_of): arm=factorized, trainer.lr, seed,
    n_params/body, plan.flops_per_token x tokens, and a cooldown branch's cooled final point."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    from analysis.config import FitConfig
    from analysis.inputs.mlflow_input import load_mlflow
    from analysis.scaling import analyse

    client = MlflowClient(tracking_uri=mlflow_server)
    exp_id = client.get_experiment_by_name(experiment).experiment_id \
        if client.get_experiment_by_name(experiment) else client.create_experiment(experiment)
    sweep, now = "iso-controls", int(time.time() * 1000)
    for size, n in list(SIZES.items())[:3]:
        for arm, worth in (("dense", 1.0), ("leviathan", 2.0), ("factorized", 1.6)):
            for lr, penalty in ((3e-4, 0.0), (1e-3, 0.05)):
                for branch in ("", "cooldown-1x"):
                    tags = {"kind": "train", "sweep": sweep, "arm": arm, "size": size,
                            "family": "isoparametric", "pair": f"{size}-s0"}
                    if branch:
                        tags["cooldown"] = branch
                    rid = client.create_run(exp_id, tags=tags).info.run_id
                    final = E + A * (worth * n) ** -ALPHA + penalty + (0 if branch else 0.05)
                    budget = 20 * n
                    metrics = [Metric("final/val_loss", final, now, 9),
                               Metric("final/tokens_seen", budget, now, 9)]
                    metrics += [Metric(k, v, now, s) for s, (t, lo) in
                                enumerate([(budget / 2, final + 0.1), (budget, final)])
                                for k, v in (("val/tokens", t), ("val/loss", lo))]
                    params = [Param("n_params/total", str(int(n))),
                              Param("n_params/body", str(int(n / 3))),
                              Param("plan.flops_per_token", str(6.0 * n)),
                              Param("plan.budget_tokens", str(int(budget))),
                              Param("trainer.lr", str(lr)), Param("seed", "0")]
                    client.log_batch(rid, metrics=metrics, params=params)
                    client.set_terminated(rid, "FINISHED")
    runs = load_mlflow(sweep, tracking_uri=mlflow_server, experiment=experiment)
    t = runs.table
    assert set(t["arm"]) == {"dense", "leviathan", "factorized"} and len(t) == 36
    assert set(t["lr"]) == {3e-4, 1e-3} and set(t["seed"]) == {"0"}
    assert np.allclose(t["flops"], 6.0 * t["params_total"] * t["tokens"])
    assert np.allclose(t["params_body"], t["params_total"] / 3, rtol=1e-6)
    assert t["cooled"].fillna(0).sum() == 18  # every branch; main runs unmarked
    h = runs.history.merge(t[["run_id", "cooled"]], on="run_id", suffixes=("", "_run"))
    assert (h.loc[h["cooled"] == 1, "cooled_run"] == 1).all()
    assert (h["cooled"] == 1).sum() == 18  # the last point of each branch only

    a = analyse(runs, FitConfig(bootstrap=50))
    res, table = a.families, a.table
    r = res["isoparametric"]
    assert (r.lr_choices["lr"] == 3e-4).all()
    kept = table[table["reason"] == ""]
    assert len(kept) == 9 and (kept["cooled"] == 1).all()  # best LR, cooled branch: 9 runs
    m = r.matching.rows.set_index(["arm", "size", "basis"])
    assert math.isclose(m.loc[("leviathan", "40M", "params"), "multiplier"], 2.0, rel_tol=1e-4)
    c = r.controls.set_index(["size", "basis"])
    assert math.isclose(c.loc[("40M", "params"), "ratio"], 2.0 / 1.6, rel_tol=1e-4)
