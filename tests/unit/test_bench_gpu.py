"""`bench gpu`: says it needs CUDA and exits 0 without it; runs its real training steps (on CPU
here) with torch and this package alone, reading a shapes file composed beforehand; the shapes
are what Hydra composes; its results feed the sweep's GPU-hour estimate."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from helpers import REPO
from helpers.sweep import plan_for

from leviathan.bench.shapes import (
    ShapeError,
    arm_config,
    conf_node,
    grid_arms,
    shapes_record,
    split_shape,
    use_shapes_file,
)
from leviathan.models import resolve_model_config

BLOCKED = ("hydra", "omegaconf", "mlflow", "submitit", "lightning", "pytorch_lightning")
CPU_ARGS = ["--device", "cpu", "--steps", "2", "--warmup", "1", "--micro-batch", "2",
            "--seq-len", "16", "--no-compile"]  # compiling: tests/unit/test_train_compile.py


def run_blocked(argv: list[str]) -> subprocess.CompletedProcess:
    """`python -m leviathan.bench <argv>` in a process where BLOCKED cannot be imported."""
    code = ("import sys\n"
            f"for name in {BLOCKED!r}:\n"
            "    sys.modules[name] = None  # any import of it raises ImportError\n"
            "from leviathan.bench.__main__ import main\n"
            f"rc = main({argv!r})\n"
            f"assert not any(sys.modules.get(n) for n in {BLOCKED!r})\n"
            "sys.exit(rc)\n")
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          env=dict(os.environ), timeout=900)


def shapes_file(tmp_path, shapes: str, grids: str = "") -> str:
    """A `bench shapes` file (composed here, with Hydra) for the Hydra-less processes."""
    from leviathan.bench.__main__ import main

    path = tmp_path / "shapes.json"
    assert main(["shapes", "--shapes", shapes, "--grids", grids, "--out", str(path)]) == 0
    return str(path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_without_cuda_it_says_so_and_exits_0(tmp_path):
    out = tmp_path / "bench_gpu.json"
    proc = run_blocked(["gpu", "--out", str(out), "--shapes-file",
                        shapes_file(tmp_path, "v1/421M,v2/1.2B")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "bench gpu needs CUDA" in proc.stdout
    assert not out.exists()


@pytest.mark.slow
def test_real_steps_on_the_real_data_pipeline_with_torch_alone(tmp_path):
    """The whole path (shapes from conf/, minipile written, prepared and read, TrainStep with
    the chunked loss, MFU, peak memory, the results file) without Hydra, OmegaConf, Lightning,
    MLflow or submitit importable."""
    out = tmp_path / "bench_gpu.json"
    proc = run_blocked(["gpu", *CPU_ARGS, "--shapes", "debug@isobody", "--data", "minipile",
                        "--lev-steps", "0", "--peak-flops", "1e9", "--out", str(out),
                        "--shapes-file", shapes_file(tmp_path, "debug@isobody")])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("dense_mfu", "leviathan_mfu", "dense_tokens_per_s", "leviathan_tokens_per_s"):
        assert last[key]["debug/debug"] > 0, key
    assert last["peak_mem_gb"] > 0 and last["leviathan_dense_ratio"]["debug/debug"] > 0
    record = json.loads(out.read_text())
    dense = record["shapes"]["debug/debug"]["dense"]
    assert dense["mfu"] == pytest.approx(dense["flops_per_s"] / record["peak_flops"])
    assert dense["flops_per_s"] == pytest.approx(dense["flops_per_token"] * dense["tokens_per_s"])
    assert record["settings"]["data"] == "minipile" and record["settings"]["loss_impl"] == "chunked"
    assert 9 < dense["loss_first"] < 14  # ~ln(200,376) = 12.2 at init: real ids, real targets


@pytest.mark.slow
def test_lev_paths_are_timed_for_leviathan_arms(tmp_path, capsys):
    from leviathan.bench.__main__ import main

    out = tmp_path / "b.json"
    assert main(["gpu", *CPU_ARGS, "--shapes", "debug_small@isobody", "--arms", "leviathan",
                 "--lev-steps", "1", "--out", str(out)]) == 0
    r = json.loads(out.read_text())["shapes"]["debug/debug_small"]["leviathan"]
    assert r["lev_unique_s"] > 0 and r["lev_table_s"] > 0
    assert r["lev_faster"] in ("unique", "table")
    assert "LEV unique" in capsys.readouterr().out


SPECS = ["v1/421M", "v2/1.2B", "debug@isobody", "smoke/13M"]


def test_shapes_file_holds_what_hydra_composes(tmp_path):
    """Composed (Hydra) and read back from a shapes file: the same ModelConfig for every arm of
    every shape, the same grids' arms and trainer=gpu settings."""
    from omegaconf import OmegaConf

    from leviathan.config import compose

    composed = {}
    for spec in SPECS:
        shape, grid = split_shape(spec)
        for arm, overrides in grid_arms(grid).items():
            cfg = compose("train", [f"model={shape}", *overrides])
            composed[spec, arm] = resolve_model_config(cfg.model)
            assert arm_config(spec, arm) == composed[spec, arm], (spec, arm)
    gpu = OmegaConf.to_container(compose("train", ["trainer=gpu"]).trainer, resolve=True)
    assert conf_node("trainer", "gpu") == gpu
    record = shapes_record(SPECS)
    path = tmp_path / "shapes.json"
    path.write_text(json.dumps(record))
    try:
        use_shapes_file(path)
        for (spec, arm), cfg in composed.items():
            assert arm_config(spec, arm) == cfg, (spec, arm)
        assert conf_node("trainer", "gpu") == gpu
        assert grid_arms("decoupled") == record["grids"]["decoupled"]
        with pytest.raises(ShapeError, match=r"shapes.json: no shape v2/200M.*bench shapes"):
            arm_config("v2/200M", "dense")
    finally:
        use_shapes_file(None)


def test_shape_errors_name_the_file(tmp_path):
    with pytest.raises(ShapeError, match="421X.yaml"):
        arm_config("v1/421X", "dense")
    with pytest.raises(ShapeError, match="no arm 'control'"):
        arm_config("v1/421M", "control")
    with pytest.raises(ShapeError, match="debug@isobody"):
        split_shape("debug")
    with pytest.raises(ShapeError, match="nogrid.yaml: no such config file"):
        grid_arms("nogrid")
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(ShapeError, match="bad.json: not a shapes file"):
        use_shapes_file(bad)


def test_without_hydra_and_without_a_shapes_file_it_says_what_to_do(tmp_path):
    proc = run_blocked(["gpu", "--out", str(tmp_path / "b.json")])
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Hydra is not installed here" in proc.stderr
    assert "python -m leviathan.bench shapes" in proc.stderr


@pytest.mark.slow
def test_sweep_estimate_uses_measured_steps_where_they_exist(tmp_path, capsys):
    """bench gpu (CPU, the smoke grid's 13M Dense arm) writes the results; the smoke grid's plan
    for that device (sweep.device=cpu, the runs at the bench's settings) costs that run from
    them, says so, and assumes sweep.mfu for the rest (no cost model in this root)."""
    from leviathan.bench.__main__ import main
    from leviathan.config import compose
    from leviathan.sweep.plan import format_plan, make_plan

    out = tmp_path / "sweeps" / "bench_gpu.json"
    assert main(["gpu", *CPU_ARGS, "--shapes", "smoke/13M", "--arms", "dense",
                 "--peak-flops", "1e9", "--out", str(out)]) == 0
    tps = json.loads(out.read_text())["shapes"]["custom/13M"]["dense"]["tokens_per_s"]
    overrides = ["+grid=smoke", f"paths.root_dir={tmp_path}", "sweep.device=cpu",
                 "trainer.micro_batch=2", "data.seq_len=16", "grid.power.enabled=false"]
    cfg = compose("sweep", overrides)
    plan = make_plan(cfg, overrides, tmp_path)
    peak = float(cfg.sweep.peak_flops)
    for r in plan.runs:
        if (r.size, r.arm) == ("13M", "dense"):
            assert r.cost_source == "measured"
            assert r.tokens / (r.gpu_hours * 3600) == pytest.approx(tps), r.run
        else:
            assert r.cost_source == "assumed" and r.mfu == pytest.approx(0.4), r.run
            assert r.gpu_hours == pytest.approx(r.flops / (0.4 * peak) / 3600)
    text = format_plan(plan)
    assert "GPU-hours of 6 runs on cpu: 1 measured, 5 assumed at sweep.mfu=0.4" in text
    # without the file: the assumption throughout, and the plan says so
    out.unlink()
    plan = make_plan(cfg, overrides, tmp_path)
    assert {r.cost_source for r in plan.runs} == {"assumed"}
    assert "6 assumed at sweep.mfu=0.4" in format_plan(plan)


@pytest.mark.slow
def test_gpu_suite_runs_its_parts_into_one_json_the_plan_reads(tmp_path, monkeypatch, capsys):
    """`bench gpu-suite` (on the CPU: tiny shapes, every part but the compiled bench) writes one
    JSON with every part's result; the plan reads its measurements: the grid part's shape
    (the others skipped for time: --grid-s 0, listed), gpu_eager's, and the real job's at the
    settings the train part recorded (eager here: the reader assumes no compile)."""
    from leviathan.bench.__main__ import main
    from leviathan.bench.gpu_suite import verdicts
    from leviathan.sweep import cost_records

    out = tmp_path / "suite.json"
    monkeypatch.setenv("LEVIATHAN_ROOT", str(tmp_path))  # where bench_gpu.json goes
    capsys.readouterr()
    assert main(["gpu-suite", "--device", "cpu", "--parts", "probe,grid,train,gpu_eager,loss",
                 "--grid-s", "0", "--train-steps", "4", "--steps", "2", "--budget-s", "400",
                 "--out", str(out)]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    record = json.loads(out.read_text())
    parts = record["parts"]
    assert [parts[p]["rc"] for p in ("probe", "grid", "gpu_eager", "loss")] == [0, 0, 0, 0]
    assert parts["probe"]["result"]["matmul_bf16_flops_per_s"] > 0
    assert parts["gpu_eager"]["result"]["dense_tokens_per_s"]["debug/debug_small"] > 0
    assert parts["loss"]["result"]["lean_peak_mb"] < parts["loss"]["result"]["plain_peak_mb"]
    assert list(parts["grid"]["shapes"]) == ["smoke_tiny/164K@smoke_tiny"]  # the first: always
    skipped = [f"{x['spec']} {x['arm']}" for x in parts["grid"]["skipped"]]
    assert len(skipped) == 5 and last["grid_skipped"] == skipped
    assert all(x["reason"].startswith("time: ") for x in parts["grid"]["skipped"])
    assert parts["train"]["settings"]["compile"] is False
    found = {(m.source.split(" ", 1)[1], m.step.arm): m for m in cost_records.read([out])}
    assert set(found) == {("grid smoke_tiny/164K@smoke_tiny dense", "dense"),
                          ("gpu_eager debug/debug_small dense", "dense"),
                          ("gpu_eager debug/debug_small leviathan", "leviathan"),
                          ("train dense", "dense"), ("train leviathan", "leviathan")}
    grid = found["grid smoke_tiny/164K@smoke_tiny dense", "dense"]
    assert grid.step.shape == "custom/164K" and not grid.step.job and grid.tokens_per_s > 0
    job = found["train dense", "dense"]
    cost = parts["train"]["dense"]["result"]["cost"]
    assert job.step.job and not job.step.compile and job.step.shape == "debug/debug_small"
    assert job.step.accumulation == 2 and job.tokens_per_s == cost["tokens_per_s"] > 0
    m = found["gpu_eager debug/debug_small dense", "dense"]
    assert m.device == "cpu" and not m.step.compile and str(out) in m.source
    # the goals are read from the compiled run where there is one, else the eager one
    fake = {"gpu_eager": {"result": {"dense_mfu": {"v1/421M": 0.2, "v2/1.2B": 0.4},
                                     "leviathan_dense_ratio": {"v2/1.2B": 0.95}}},
            "gpu_compiled": {"result": {"dense_mfu": {"v1/421M": 0.36}}}}
    goals = verdicts(fake)
    assert goals["dense_mfu v1/421M"] == {"value": 0.36, "goal": 0.35, "from": "gpu_compiled",
                                          "met": True}
    assert goals["dense_mfu v2/1.2B"]["met"] is False
    assert goals["leviathan_dense_ratio iso-body"]["met"] is True
    fake["grid"] = {"result": {"dense_mfu": {"v2/1.2B@decoupled": 0.5},  # before eager
                               "leviathan_dense_ratio": {"v2/1.2B@decoupled": 0.85}}}
    goals = verdicts(fake)
    assert goals["dense_mfu v2/1.2B"] == {"value": 0.5, "goal": 0.45, "from": "grid",
                                          "met": True}
    assert goals["leviathan_dense_ratio iso-body"]["from"] == "grid"


def test_the_grid_part_orders_every_shipped_shape_by_what_the_cost_model_needs(tmp_path):
    """39 distinct models (a model two grids share counted once, isobody's Leviathan apart from
    isoparametric's); the smallest rungs first with every arm, then one of each arm per size
    from the smallest, then the repeats; the same from a shapes file (a box without Hydra)."""
    from leviathan.bench.gpu_grid import SHIPPED, grid_shapes

    shapes = grid_shapes(list(SHIPPED))
    path = shapes_file(tmp_path, "", grids=",".join(SHIPPED))
    try:
        use_shapes_file(path)
        assert grid_shapes(list(SHIPPED)) == shapes
    finally:
        use_shapes_file(None)
    got = [(s.spec, s.arm) for s in shapes]
    assert len(got) == len(set(got)) == 39
    assert {s.tier for s in shapes[:7]} == {0} and {s.shape for s in shapes[:7]} == {
        "v1/60M", "v2/200M"}
    assert ("v1/60M@isobody", "leviathan") in got[:7]  # another depth: its own measurement
    assert not any(spec.endswith(("@data_scaling",)) for spec, _ in got)  # isoparametric's
    assert not any(spec.endswith("@isobody") and arm == "dense" for spec, arm in got)
    tier1 = [s for s in shapes if s.tier == 1]
    assert [s.size_n for s in tier1] == sorted(s.size_n for s in tier1)
    assert {(s.shape, s.arm) for s in tier1} >= {("v2/2.1B", "dense"), ("v1/989M", "dense"),
                                                  ("v2/1.2B", "dense_untied")}
    assert [s.spec for s in shapes if s.tier == 2] == [
        f"v1/{n}@isobody" for n in ("109M", "164M", "231M", "296M", "421M")]


@pytest.mark.slow
def test_gpu_grid_measures_every_shape_without_hydra_and_the_plan_costs_them(tmp_path):
    """bench gpu-grid on the smoke_tiny grid (CPU, eager) with torch and this package alone:
    every shape measured in the grid's order, one record; the plan for the CPU at the same
    settings costs each run of the grid from it."""
    from leviathan.sweep import cost_records

    out = tmp_path / "sweeps" / "grid.json"
    proc = run_blocked(["gpu-grid", "--grids", "smoke_tiny", "--device", "cpu", "--no-compile",
                        "--micro-batch", "2", "--seq-len", "16", "--shape-s", "0.2", "--steps",
                        "3", "--out", str(out), "--shapes-file",
                        shapes_file(tmp_path, "", grids="smoke_tiny")])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert last["measured"] == last["shapes"] == 6 and last["skipped"] == []
    record = json.loads(out.read_text())
    assert record["order"][:2] == [["smoke_tiny/164K@smoke_tiny", "dense"],
                                   ["smoke_tiny/164K@smoke_tiny", "leviathan"]]
    assert record["pending"] == [] and record["settings"]["compile"] is False
    ms = cost_records.read([out])
    assert len(ms) == 6 and all(m.tokens_per_s > 0 and not m.step.job for m in ms)
    assert all(r["steps_measured"] >= 3 for a in record["shapes"].values() for r in a.values())
    _, plan = plan_for(["+grid=smoke_tiny", "sweep.device=cpu", f"sweep.measured_mfu={out}",
                        "trainer.micro_batch=2", "data.seq_len=16"], tmp_path)
    assert {r.cost_source for r in plan.runs} == {"measured"} and len(plan.runs) == 6
