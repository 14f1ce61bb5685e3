"""Downstream evaluation end to end: tiny Dense and Leviathan runs trained through the real
entry point (train(cfg), debug data, real `mlflow server`), scored by lm-evaluation-harness on
local tasks built from the demo corpus, with the metrics on each run's MLflow run, the results
JSON beside the checkpoint, a missing task reported (not fatal), idempotent re-runs, the CLI by
MLflow run id, and the per-pair downstream table read back from MLflow."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import REPO

pytest.importorskip("lm_eval", reason="the eval extra (lm-eval) is not installed")
pytestmark = [pytest.mark.integration, pytest.mark.slow]

SWEEP = "eval-test"
ABSENT_YAML = ("task: absent_task\ndataset_path: leviathan-test/absent-dataset\n"
               "output_type: loglikelihood\ntest_split: test\ndoc_to_text: '{{a}}'\n"
               "doc_to_target: '{{b}}'\nmetric_list:\n  - metric: acc\n")


def compose(overrides: list[str]):
    from leviathan.config import compose as compose_config

    return compose_config("train", overrides)


@pytest.fixture(scope="module")
def offline_hf(tmp_path_factory):
    """The hub is unreachable here: offline, with an empty HF cache of our own."""
    home = tmp_path_factory.mktemp("hf_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HOME", str(home))
        mp.setenv("HF_DATASETS_OFFLINE", "1")
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield home


@pytest.fixture(scope="module")
def runs(tmp_path_factory, mlflow_server) -> dict[str, Path]:
    """arm -> the scratch folder of a finished 3-step run (one matched pair, tags set)."""
    from leviathan.training.run import train

    data, scratch = tmp_path_factory.mktemp("eval_data"), tmp_path_factory.mktemp("eval_scr")
    out = {}
    for arm, head in (("dense", "tied"), ("leviathan", "untied")):
        cfg = compose([
            f"model.arm={arm}", f"model.head={head}", "model.d_model=32", "model.n_heads=2",
            "data=debug", "data.seq_len=32", "trainer=debug", "trainer.global_batch=4",
            "trainer.micro_batch=2", "trainer.max_steps=3", "trainer.val_every=3",
            "trainer.ckpt_every=3", "trainer.val_batches=1", "trainer.warmup_steps=1",
            f"tracking.uri={mlflow_server}", "tracking.experiment=test-eval",
            "tracking.flush_every_s=0.5", f"paths.data_dir={data}", f"paths.scratch_dir={scratch}",
            f"meta.sweep={SWEEP}", "meta.pair=p0", "meta.family=isobody"])
        summary = train(cfg)
        out[arm] = scratch / "runs" / summary["run_key"]
    return out


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory) -> Path:
    from leviathan.eval.tasks import write_demo_tasks

    d = tmp_path_factory.mktemp("tasks")
    write_demo_tasks(d, n=16)
    (d / "absent.yaml").write_text(ABSENT_YAML)
    return d


def eval_cfg(task_dir: Path, *extra: str):
    from leviathan.cli.eval import site_config

    return site_config([
        "tasks=[demo_lastword,demo_choice,demo_text,absent_task,no_such_task]",
        f"include_path=[{task_dir}]", "include_defaults=false", "batch_size=8", *extra])


@pytest.fixture(scope="module")
def evaluated(runs, task_dir, offline_hf, mlflow_server) -> dict[str, dict]:
    from leviathan.eval import evaluate_run

    return {arm: evaluate_run(run_dir, eval_cfg(task_dir, f"tracking_uri={mlflow_server}"))
            for arm, run_dir in runs.items()}


def direct_lastword(model, enc, docs: list[str]) -> tuple[float, float]:
    """(perplexity, accuracy) of the last word given the rest, one full forward per doc."""
    lps, hits = [], []
    for text in docs:
        ctx, word = text.rsplit(" ", 1)
        c = enc.encode_ordinary(ctx)
        t = enc.encode_ordinary(ctx + " " + word)[len(c):]
        ids = (c + t)[-(model.cfg.max_seq_len + 1):]
        with torch.no_grad():
            logits = model(torch.tensor([ids[:-1]]))[0, -len(t):, :enc.n_vocab].double()
        lp = torch.log_softmax(logits, -1)[torch.arange(len(t)), torch.tensor(t)]
        lps.append(float(lp.sum()))
        hits.append(bool((logits.argmax(-1) == torch.tensor(t)).all()))
    return math.exp(-sum(lps) / len(lps)), sum(hits) / len(hits)


@pytest.mark.parametrize("arm", ["dense", "leviathan"])
def test_checkpoint_loads_exactly_and_scores_match_the_model(runs, task_dir, evaluated, arm):
    from leviathan.data.tokenizer import get_encoding
    from leviathan.eval.checkpoint import load_model, locate

    files = locate(runs[arm])
    model, step = load_model(files)
    assert step == 3 and model.cfg.arm == arm and not model.training
    state = torch.load(files.checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    for name, p in model.state_dict().items():
        assert torch.equal(p, state[f"model.{name}"]), name
    docs = [json.loads(x)["text"]
            for x in (task_dir / "demo_lastword.jsonl").read_text().splitlines()]
    ppl, acc = direct_lastword(model, get_encoding("o200k_base"), docs)
    got = evaluated[arm]["tasks"]["demo_lastword"]["metrics"]
    assert got["perplexity"] == pytest.approx(ppl, rel=1e-4)
    assert got["acc"] == pytest.approx(acc)
    assert evaluated[arm]["tasks"]["demo_lastword"]["n_samples"]["effective"] == len(docs)


@pytest.mark.parametrize("arm", ["dense", "leviathan"])
def test_metrics_land_on_the_run_and_json_beside_the_checkpoint(runs, evaluated, mlflow_server,
                                                                 arm):
    from mlflow.tracking import MlflowClient

    from leviathan.tracking.environment import capture

    res = evaluated[arm]
    assert set(res["tasks"]) == {"demo_lastword", "demo_choice", "demo_text"}
    assert res["requested_done"] == ["demo_lastword", "demo_choice", "demo_text"]
    # the missing ones are reported with what to do, and did not stop the others
    assert set(res["missing"]) == {"absent_task", "no_such_task"}
    assert "leviathan-test/absent-dataset" in res["missing"]["absent_task"]
    assert "huggingface-cli download" in res["missing"]["absent_task"]
    assert "not a known task" in res["missing"]["no_such_task"]

    path = Path(res["json_path"])
    assert path.parent == runs[arm] / "eval" and path.is_file()
    on_disk = json.loads(path.read_text())
    assert on_disk["tasks"] == res["tasks"] and on_disk["checkpoint_step"] == 3

    run_id = (runs[arm] / "mlflow_run_id").read_text().strip()
    client = MlflowClient(mlflow_server)
    run = client.get_run(run_id)
    m = run.data.metrics
    for task, metric in (("demo_lastword", "perplexity"), ("demo_lastword", "acc"),
                         ("demo_choice", "acc"), ("demo_choice", "acc_norm")):
        want = res["tasks"][task]["metrics"]
        assert m[f"eval/{task}/{metric}"] == pytest.approx(want[metric])
        assert m[f"eval/{task}/{metric}_stderr"] == pytest.approx(want[f"{metric}_stderr"])
    assert m["eval/demo_text/bits_per_byte"] > 0
    assert [h.step for h in client.get_metric_history(run_id, "eval/demo_choice/acc")] == [3]
    assert run.data.tags["eval.spec"] == res["spec_key"] and run.data.tags["kind"] == "train"
    assert run.info.status == "FINISHED"  # reopened by id, not a new run, still finished
    arts = [a.path for a in client.list_artifacts(run_id, "eval")]
    assert f"eval/{path.name}" in arts
    env = capture().versions()  # the evaluating process's versions
    assert {k: run.data.tags[f"eval.env.{k}"] for k in env} == env == on_disk["environment"]
    assert f"eval/{res['spec_key']}.environment.json" in arts
    assert "eval.env.changed" not in run.data.tags  # trained on this same environment


def test_second_evaluation_skips_and_fills_only_what_is_missing(runs, task_dir, evaluated,
                                                                mlflow_server):
    from mlflow.tracking import MlflowClient

    from leviathan.eval import evaluate_run

    run_dir = runs["dense"]
    t = time.monotonic()
    again = evaluate_run(run_dir, eval_cfg(task_dir, f"tracking_uri={mlflow_server}"))
    # absent_task and no_such_task are tried again (data may have been provided since) ...
    assert again["tasks"] == evaluated["dense"]["tasks"]
    assert set(again["missing"]) == {"absent_task", "no_such_task"}
    # ... and with only the scored tasks asked for, nothing runs at all
    done = evaluate_run(run_dir, eval_cfg(task_dir, f"tracking_uri={mlflow_server}",
                                          "tasks=[demo_choice,demo_lastword]"))
    assert done["skipped"] is False  # a different spec (task list): its own file
    t = time.monotonic()
    skipped = evaluate_run(run_dir, eval_cfg(task_dir, f"tracking_uri={mlflow_server}",
                                             "tasks=[demo_choice,demo_lastword]"))
    assert skipped["skipped"] is True and time.monotonic() - t < 10
    assert skipped["tasks"] == done["tasks"]
    run_id = (run_dir / "mlflow_run_id").read_text().strip()
    hist = MlflowClient(mlflow_server).get_metric_history(run_id, "eval/demo_lastword/acc")
    assert len(hist) == 1  # identical values are never logged twice


def test_cli_by_mlflow_run_id_reports_missing_hub_task(runs, task_dir, offline_hf,
                                                      mlflow_server):
    import lm_eval

    run_id = (runs["leviathan"] / "mlflow_run_id").read_text().strip()
    env = dict(os.environ, MLFLOW_TRACKING_URI=mlflow_server, PYTHONUNBUFFERED="1")
    # the harness's own lambada_openai YAML, indexed alone (indexing all ~15k tasks takes long)
    lambada = Path(lm_eval.__file__).parent / "tasks" / "lambada"
    p = subprocess.run([sys.executable, "-m", "leviathan.eval", run_id,
                        "tasks=[demo_lastword,lambada_openai]", "limit=5",
                        f"include_path=[{task_dir},{lambada}]", "include_defaults=false"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    out = p.stdout + p.stderr
    assert p.returncode == 3, out  # some tasks scored, some skipped
    assert "| demo_lastword | perplexity |" in p.stdout
    assert "EleutherAI/lambada_openai" in p.stderr and "huggingface-cli download" in p.stderr
    assert "Traceback" not in out
    found = list((runs["leviathan"] / "eval").glob("fewshot0-limit5-*.json"))
    found = [p for p in found if not p.name.endswith(".environment.json")]  # beside: provenance
    assert len(found) == 1
    res = json.loads(found[0].read_text())
    assert res["run_id"] == run_id
    assert res["tasks"]["demo_lastword"]["n_samples"]["effective"] == 5
    # a quick look has its own metric names: the full results on the run are untouched
    from mlflow.tracking import MlflowClient

    m = MlflowClient(mlflow_server).get_run(run_id).data.metrics
    assert m["eval_limit5/demo_lastword/acc"] == res["tasks"]["demo_lastword"]["metrics"]["acc"]
    assert "eval/demo_lastword/acc" in m
    bad = subprocess.run([sys.executable, "-m", "leviathan.eval", str(runs["dense"]),
                          "limit=-1"], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2 and "eval.limit" in bad.stderr and "Traceback" not in bad.stderr


def test_downstream_table_per_pair_from_mlflow(evaluated, mlflow_server):
    from analysis.inputs.downstream import from_mlflow, pair_table
    from analysis.report.downstream import downstream_md, downstream_section

    long = from_mlflow(SWEEP, tracking_uri=mlflow_server, experiment="test-eval")
    table = pair_table(long)
    row = table[(table.task == "demo_lastword") & (table.metric == "perplexity")].iloc[0]
    d = evaluated["dense"]["tasks"]["demo_lastword"]["metrics"]
    lv = evaluated["leviathan"]["tasks"]["demo_lastword"]["metrics"]
    assert row.pair == "p0" and row.family == "isobody"
    assert row.dense == pytest.approx(d["perplexity"])
    assert row.leviathan == pytest.approx(lv["perplexity"])
    assert row.delta == pytest.approx(lv["perplexity"] - d["perplexity"])
    assert row.delta_se == pytest.approx(math.hypot(d["perplexity_stderr"],
                                                   lv["perplexity_stderr"]))
    assert {"demo_choice", "demo_text"} <= set(table.task)
    md = downstream_md(table)
    assert "| p0 |" in md and "demo_lastword" in md
    assert downstream_section(SWEEP, tracking_uri=mlflow_server, experiment="test-eval") == md


def test_unreachable_tracking_server_fails_before_evaluating(runs, task_dir, tmp_path):
    from leviathan.eval import evaluate_run
    from leviathan.tracking.server import TrackingUnreachable, free_port

    uri = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(TrackingUnreachable, match="eval.tracking_uri"):
        evaluate_run(runs["dense"], eval_cfg(task_dir, f"tracking_uri={uri}",
                                             f"output_dir={tmp_path}"))
    assert not list(tmp_path.iterdir())  # nothing evaluated, nothing written


def test_config_comes_from_the_mlflow_artifact_when_not_beside_the_checkpoint(runs, tmp_path,
                                                                               mlflow_server):
    import shutil

    from omegaconf import OmegaConf

    from leviathan.eval.checkpoint import CheckpointError, load_model, locate

    src = runs["leviathan"]
    shutil.copy(src / "last.ckpt", tmp_path / "last.ckpt")
    shutil.copy(src / "mlflow_run_id", tmp_path / "mlflow_run_id")
    files = locate(tmp_path / "last.ckpt", tracking_uri=mlflow_server)
    assert OmegaConf.to_container(files.config) == \
        OmegaConf.to_container(OmegaConf.load(src / "config.yaml"))
    model, step = load_model(files)
    assert step == 3 and model.cfg.arm == "leviathan"
    (tmp_path / "mlflow_run_id").unlink()
    with pytest.raises(CheckpointError, match="config.yaml: missing"):
        locate(tmp_path, tracking_uri=mlflow_server)
