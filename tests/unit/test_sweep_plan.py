"""Sweep planning: every grid composes, pairs match, counts equal the models', bad input fails."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
import torch
from helpers import REPO
from helpers.sweep import plan_for

from leviathan.models import build_model, count_params, factorized_rank, resolve_model_config
from leviathan.sweep.grid import GridError
from leviathan.sweep.plan import dedupe_overrides, format_plan, run_overrides, write_plan

GRIDS = sorted(p.stem for p in (REPO / "conf" / "grid").glob("*.yaml"))  # every grid


@pytest.mark.parametrize("grid", GRIDS)
def test_every_grid_plans(grid, tmp_path):
    cfg, plan = plan_for([f"+grid={grid}"], tmp_path)
    g = cfg.grid
    df = plan.frame()
    budgets = len(g.tokens or g.tokens_per_param) * (1 + len(g.cooldowns))
    runs = 0  # per (size, arm): its seeds there (seeds_by_arm, seeds_by_size) x its LRs
    rungs = [(s, list(g.arms)) for s in g.sizes] + [(s, ["dense"]) for s in g.dense_sizes]
    for size, arms in rungs:
        lrs = len(g.lr) if g.lr_sizes is None or size in g.lr_sizes else 1
        for arm in arms:
            seeds = list(g.seeds_by_arm.get(arm, g.seeds))[:g.seeds_by_size.get(size)]
            runs += len(seeds) * lrs
    assert len(df) == budgets * runs
    assert set(df.arm) == set(g.arms)  # the paper's families carry their control arm
    assert "factorized" in g.arms or grid not in ("isoparametric", "data_scaling")
    assert "dense_untied" in g.arms or grid != "decoupled"
    for (pair, _cd), members in df.groupby(["pair", df.cooldown.fillna(0)]):
        assert members.tokens.nunique() == 1  # matched pairs: identical budgets
        assert len({r.config["data"]["seed"] for r in plan.runs if r.pair == pair}) == 1
        arms = {a: m.iloc[0] for a, m in members.groupby("arm")}
        # a seed that Dense does not run (seeds_by_arm): the pair's Dense is that size's
        dense = arms.get("dense", df[(df.arm == "dense") & (df["size"] == members["size"].iloc[0])
                                     ].iloc[0])
        if set(arms) == {"dense"}:
            assert any(pair.startswith(s.rsplit("/", 1)[1]) for s in g.dense_sizes)
            continue
        lev = arms["leviathan"]
        if grid in ("isoparametric", "smoke", "smoke_tiny", "data_scaling"):
            for other in [lev] + ([arms["factorized"]] if "factorized" in arms else []):
                assert abs(other.params_total - dense.params_total) / dense.params_total <= 0.02
                assert other.n_layers > dense.n_layers
        if "factorized" in arms:  # the control runs on Leviathan's backbone
            assert arms["factorized"].n_layers == lev.n_layers
        if grid in ("isobody", "decoupled"):
            assert (lev.n_layers, lev.d_model) == (dense.n_layers, dense.d_model)
        if grid == "decoupled":
            assert 0 < (lev.params_total - dense.params_total) / dense.params_total < 0.02
            assert arms["dense_untied"].params_total > dense.params_total
        if grid not in ("smoke", "smoke_tiny", "data_scaling"):
            assert dense.tokens == round(20 * dense.params_total)
    # every run of a (size, budget, cooldown) point trains on one budget, its Dense run's,
    # whatever its arm and seed (issue 34.3: isobody's Leviathan seeds beyond Dense's trained
    # on 36-46% fewer tokens, their own N x 20)
    point = df.pair.str.rsplit("-s", n=1).str[0]
    assert (df.groupby([point, df.cooldown.fillna(0)]).tokens.nunique() == 1).all()
    for r in plan.runs:  # the plan's counts are the models' own accounting
        c = count_params(resolve_model_config(r.config["model"]))
        assert (r.params_total, r.params_input, r.params_body) == (c.total, c.input, c.body)
        assert r.config["meta"]["sweep"] == grid and r.config["run_name"] == r.run
        assert r.config["meta"]["arm"] == r.arm
    if grid == "data_scaling":  # WSD-S: cooled-down branches at 5 N ... 100 N
        dense = df[(df.arm == "dense") & df.cooldown.notna()].sort_values("tokens")
        ratios = dense.tokens / dense.params_total
        assert (ratios - pd.Series([5, 10, 20, 50, 100], index=ratios.index)).abs().max() < 0.01
        assert set(df[df.cooldown.isna()].schedule) == {"constant"}
        assert set(df[df.cooldown.notna()].schedule) == {"wsd"}


def test_isoparametric_controls_on_the_leviathan_backbone_with_their_gap(tmp_path):
    """factorized_wide (rank=span) and lev_codebooks (splines=false): Leviathan's depth, not
    parameter-matched (so not held to iso_tolerance), the gap to Dense in the plan; they come
    with grid=isoparametric_controls (isoparametric plus them)."""
    _cfg, plan = plan_for(["+grid=isoparametric_controls", "grid.lr=[1.0]"], tmp_path)
    table = format_plan(plan)
    by = {(r.pair, r.arm): r for r in plan.runs}
    for (pair, arm), r in by.items():
        if arm not in ("factorized_wide", "lev_codebooks"):
            continue
        lev = by[(pair, "leviathan")]
        dense = by.get((pair, "dense")) or next(  # a seed Dense does not run: its size's Dense
            p for p in plan.runs if p.arm == "dense" and p.size == r.size)
        assert (r.n_layers, r.params_body, r.params_head) == (
            lev.n_layers, lev.params_body, lev.params_head)
        assert not r.param_matched and lev.param_matched and by[(pair, "factorized")].param_matched
        assert r.param_gap == pytest.approx(r.params_total / dense.params_total - 1)
        assert f"| {r.params_total:,} | {r.param_gap:+.1%} * |" in table
        mc = resolve_model_config(r.config["model"])
        if arm == "lev_codebooks":  # LEV minus its splines: fewer parameters than Leviathan
            assert not mc.lev.splines and r.params_input < lev.params_input
        else:  # a table of LEV's rank (min(D, h + d_seed)): more parameters than any arm
            assert factorized_rank(mc) == min(mc.d_model, 256) and r.param_gap > 0.1
    gaps = [r.param_gap for r in plan.runs if r.arm == "factorized_wide"]
    assert f"* factorized_wide is not parameter-matched: {min(gaps):+.1%} to {max(gaps):+.1%}" \
        in table


def test_an_unmatched_arm_is_not_held_to_the_tolerance_but_a_matched_one_is(tmp_path):
    wide = ("+grid.arms.factorized=['model.arm=factorized','model.depth_rule=isoparametric',"
            "'{}']")
    _cfg, plan = plan_for(["+grid=smoke", wide.format("model.factorized.rank=64")], tmp_path)
    assert all(r.param_gap > 0.02 for r in plan.runs if r.arm == "factorized")
    with pytest.raises(GridError, match=r"cannot be matched isoparametrically: .* factorized"):
        plan_for(["+grid=smoke", wide.format("model.depth_rule=fixed")], tmp_path)


def test_smoke_counts_equal_built_models(tmp_path):
    _cfg, plan = plan_for(["+grid=smoke"], tmp_path)
    for r in plan.runs:
        with torch.device("meta"):
            model = build_model(resolve_model_config(r.config["model"]))
        assert sum(p.numel() for p in model.parameters()) == r.params_total


def test_plan_files_and_hashes(tmp_path):
    _cfg, plan = plan_for(["+grid=smoke", "trainer.lr=0.002"], tmp_path)
    path = write_plan(plan, tmp_path / "sweeps" / plan.name)
    df = pd.read_csv(path.parent / "plan.csv")
    for col in "run,pair,arm,size,d_model,n_layers,params_total,tokens".split(","):
        assert col in df.columns
    manifest = json.loads(path.read_text())
    assert manifest["code_version"]["git_commit"]
    assert manifest["launcher"]["name"] == "local"
    assert len({v["config_hash"] for v in manifest["runs"].values()}) == len(plan.runs)
    assert all(r.config["trainer"]["lr"] == 0.002 for r in plan.runs)  # CLI reaches every run
    # the same command gives the same hashes; another value gives other hashes
    _c, again = plan_for(["+grid=smoke", "trainer.lr=0.002"], tmp_path)
    _c, other = plan_for(["+grid=smoke", "trainer.lr=0.001"], tmp_path)
    assert [r.config_hash for r in again.runs] == [r.config_hash for r in plan.runs]
    assert not {r.config_hash for r in other.runs} & {r.config_hash for r in plan.runs}


def test_overrides_split_and_dedupe():
    task = ["+grid=smoke", "sweep.dry_run=true", "launcher=slurm", "launcher.partition=x",
            "trainer.lr=1", "model.lev.d_seed=64", "trainer=gpu"]
    assert run_overrides(task) == ["trainer.lr=1", "model.lev.d_seed=64", "trainer=gpu"]
    assert dedupe_overrides(["trainer=debug", "a.b=1", "trainer=gpu", "a.b=2"]) == [
        "trainer=gpu", "a.b=2"]


@pytest.mark.parametrize("overrides,match", [
    (["+grid=smoke", "grid.sizes=[v1/999M]"], "v1/999M"),
    (["+grid=smoke", "grid.iso_tolerance=0.0001"], "grid.iso_tolerance"),
    (["+grid=smoke", "grid.family=nope"], "grid.family"),
    (["+grid=smoke", "+grid.arms.bogus=['model.arm=dense']"], "grid.arms.bogus"),
    (["+grid=smoke", "grid.seeds=[]"], "grid.seeds"),
    (["+grid=smoke", "model.arm=wizard"], "model.arm"),
    # checked before the ladder rules divide by them (a ZeroDivisionError before)
    (["+grid=isoparametric", "data.seq_len=0"], r"data\.seq_len: must be an integer >= 1"),
    (["+grid=isoparametric", "trainer.lr=0"], r"trainer\.lr: must be a number > 0"),
])
def test_bad_grids_fail_naming_the_key(overrides, match, tmp_path):
    with pytest.raises((GridError, ValueError), match=match):
        plan_for(overrides, tmp_path)
    assert not (tmp_path / "sweeps").exists()  # nothing written


def test_seeds_dense_does_not_run_train_on_dense_budget_and_a_gap_is_refused(tmp_path):
    """isobody-like (Leviathan smaller than Dense) with Leviathan seeds Dense does not run: every
    run of a size trains on its Dense budget; a plan whose runs of one point differ is refused
    naming both runs."""
    from leviathan.sweep.rules import check_pairs

    _cfg, plan = plan_for(["+grid=smoke_tiny", "grid.sizes=[smoke_tiny/164K]",
                           "grid.family=isobody", "grid.seeds=[0]",
                           "+grid.seeds_by_arm.leviathan=[0,1,2]", "grid.tokens=null",
                           "grid.tokens_per_param=[0.1]",
                           "grid.arms.leviathan=['model.arm=leviathan','model.head=untied',"
                           "'model.depth_rule=fixed']"], tmp_path)
    df = plan.frame()
    dense, lev = df[df.arm == "dense"], df[df.arm == "leviathan"]
    assert len(dense) == 1 and len(lev) == 3 and lev.params_total.max() < dense.params_total[0]
    assert set(lev.tokens) == {round(0.1 * dense.params_total[0])}
    late = next(r for r in plan.runs if r.arm == "leviathan" and r.seed == 2)
    late.tokens -= 1024
    with pytest.raises(GridError, match=rf"{late.run} \(leviathan, seed 2\) on "):
        check_pairs(plan.runs)


def test_missing_data_path_fails_before_anything(tmp_path):
    with pytest.raises(ValueError, match="/no/such/pile"):
        plan_for(["+grid=smoke", "data=pile", "data.path=/no/such/pile/*.jsonl.zst"], tmp_path)


def _cli(args, cwd):
    return subprocess.run([sys.executable, "-m", "leviathan.sweep", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_cli_dry_run_and_errors(tmp_path):
    out = _cli(["+grid=isoparametric", "sweep.dry_run=true", "grid.power.enabled=false",
                f"paths.root_dir={tmp_path}"], REPO)  # (the power analysis: its own test)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "isoparametric-109M-20N-s0-leviathan-lr1 " in out.stdout and "Dry run" in out.stdout
    assert "isoparametric-752M-20N-s0-dense-lr1 " in out.stdout  # a Dense-only rung
    assert "factorized" in out.stdout
    for control in ("factorized_wide", "lev_codebooks"):  # opt-in: grid=isoparametric_controls
        assert control not in out.stdout
    assert (tmp_path / "sweeps" / "isoparametric" / "plan.csv").exists()
    out = _cli(["sweep.dry_run=true", f"paths.root_dir={tmp_path}"], REPO)
    assert out.returncode == 2 and "+grid=<name>" in out.stderr and "smoke" in out.stderr
    out = _cli(["+grid=nosuchgrid", f"paths.root_dir={tmp_path}"], REPO)
    assert out.returncode != 0 and "nosuchgrid" in (out.stderr + out.stdout)


@pytest.mark.parametrize("grid, rungs", [("decoupled", ["2.1B"]), ("isobody", ["752M", "989M"])])
def test_paper_grids_have_dense_only_rungs_above_their_pairs(grid, rungs, tmp_path):
    """Issue 24: an effective size beyond the largest Dense point is read by extrapolation, so
    `decoupled` and `isobody` train Dense-only rungs >= 1.5x their largest paired size, on the
    ladder's shape rule, and the dry run's table shows each with its cost."""
    from leviathan.sweep.plan import format_plan

    cfg, plan = plan_for([f"+grid={grid}"], tmp_path)
    df = plan.frame()
    arms_at = df["size"].map(df.groupby("size").arm.nunique())  # a rung: Dense only
    paired, only = df[arms_at > 1], df[arms_at == 1]
    top = paired[paired.arm == "dense"].params_total.max()
    assert sorted(set(only["size"])) == sorted(rungs) and set(only.arm) == {"dense"}
    assert only.params_total.min() >= 1.5 * top
    head = {"decoupled": 128, "isobody": 64}[grid]  # v2 >= 700M: 128; v1: 64
    for r in only.itertuples():
        assert r.d_model / r.n_heads == head
        mc = next(p.config["model"] for p in plan.runs if p.run == r.run)
        assert mc["ffn_hidden"] == -(-8 * r.d_model // (3 * 64)) * 64  # round_up(8/3 d, 64)
        assert mc["head"] == ("tied" if grid == "decoupled" else "untied")  # the Dense arm's
        assert r.tokens == round(20 * r.params_total) and r.flops > 0 and r.gpu_hours > 0
    text = format_plan(plan)
    for r in only.itertuples():  # the dry run's table: every rung with its FLOPs and GPU-hours
        assert f"| {r.run} | {r.pair} | dense | {r.size} |" in text
        assert text.split(f"| {r.run} |")[1].split("\n")[0].endswith(
            f"| {r.flops:.3g} | {r.mfu:.3g} | {r.gpu_hours:.3g} | {r.cost_source} |")
    assert f"{len(df)} runs ({len(df[df.arm == 'dense'])} dense" in text  # the totals count them


def test_a_seed_varies_init_and_data_order_and_the_pair_still_shares_it(tmp_path):
    """Issue 23.2: data.seed follows seed (a seed changes the initialisation and the data order
    together); the arms of a pair share it and the pair check holds; set explicitly, it stays."""
    _cfg, plan = plan_for(["+grid=smoke", "grid.seeds=[0,1,2]"], tmp_path)
    by_pair: dict = {}
    for r in plan.runs:
        assert r.config["data"]["seed"] == r.config["seed"] == r.seed
        by_pair.setdefault(r.pair, set()).add(r.config["data"]["seed"])
    assert all(len(s) == 1 for s in by_pair.values())  # one data order per pair
    assert {next(iter(s)) for s in by_pair.values()} == {0, 1, 2}  # and one per seed
    _cfg, plan = plan_for(["+grid=smoke", "grid.seeds=[0,1]", "data.seed=5"], tmp_path / "b")
    assert {r.config["data"]["seed"] for r in plan.runs} == {5}
    assert {r.config["seed"] for r in plan.runs} == {0, 1}


@pytest.mark.slow
def test_dry_run_prints_and_writes_the_power_analysis_within_a_minute(tmp_path):
    """Issue 23.5: every dry run simulates the plan (grid.power) beside its GPU-hours and
    writes sweeps/<sweep>/power.csv, in <= 60 s for the shipped isoparametric grid."""
    import time

    t0 = time.perf_counter()
    out = _cli(["+grid=isoparametric", "sweep.dry_run=true", f"paths.root_dir={tmp_path}"], REPO)
    took = time.perf_counter() - t0
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Power analysis (200 simulated ladders" in out.stdout and took <= 60, took
    power = pd.read_csv(tmp_path / "sweeps" / "isoparametric" / "power.csv")
    assert {"quantity", "size", "half_width", "empirical", "coverage", "detectable",
            "gpu_hours"} <= set(power.columns)
    assert "lev_over_control_pooled" in set(power["quantity"])
    out = _cli(["+grid=isoparametric", "sweep.dry_run=true", "grid.power.ladders=5",
                f"paths.root_dir={tmp_path}"], REPO)
    assert out.returncode == 2 and "grid.power.ladders" in out.stderr


@pytest.mark.slow
def test_design_cli_writes_a_grid_the_sweep_launches_unchanged(tmp_path):
    """Issue 23.6: the design search's winner is a grid YAML that plans as is; a budget below
    the cheapest admissible design fails naming the key and the smallest budget that works."""
    import yaml

    out = subprocess.run([sys.executable, "-m", "leviathan.sweep.design", "+grid=isoparametric",
                          "design.budget_gpu_h=300", f"design.out={tmp_path}",
                          "design.name=iso_small", f"paths.root_dir={tmp_path}"], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Best designs within 300 GPU-hours" in out.stdout
    grid = yaml.safe_load((tmp_path / "iso_small.yaml").read_text())
    assert grid.pop("defaults") == ["schema", "_self_"]  # as every conf/grid file
    assert grid["name"] == "iso_small" and grid["seeds_by_arm"]["leviathan"]
    from leviathan.sweep.grid import expand, to_grid_config

    runs = expand(to_grid_config(grid), "iso_small")
    assert {r.arm for r in runs} == {"dense", "leviathan", "factorized"}
    out = subprocess.run([sys.executable, "-m", "leviathan.sweep.design", "+grid=isoparametric",
                          "design.budget_gpu_h=3", f"paths.root_dir={tmp_path}"], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert "design.budget_gpu_h: 3 GPU-hours is below the cheapest admissible design" in \
        out.stderr and "the smallest budget that works" in out.stderr


def test_the_shipped_isoparametric_design_runs_what_its_header_says(tmp_path):
    """Issue 37.3: the design searched again (LR optima drifting per arm, calibrated costs) as
    planned: 4 seeds of Leviathan and its control at 60M and 109M, 3 at 164M-296M, 2 at 421M,
    three LRs at every paired size, Dense one seed per pair at three LRs, one seed and one LR
    on each Dense-only rung; within the GPU-hours of the grid it replaces (~1,296 by the cost
    model) and near the search's ~1,192."""
    sweeps = REPO / "sweeps"
    _, plan = plan_for(["+grid=isoparametric", f"sweep.cost_model={sweeps / 'cost_model.json'}",
                        f"sweep.measured_mfu={sweeps / 'bench_gpu.json'}"], tmp_path)
    df = plan.frame()
    count = df.groupby(["size", "arm"]).size()
    lev_seeds = {"60M": 4, "109M": 4, "164M": 3, "231M": 3, "296M": 3, "421M": 2}
    for size, n in lev_seeds.items():
        assert count[(size, "leviathan")] == count[(size, "factorized")] == n * 3
        assert count[(size, "dense")] == 3
    assert count[("752M", "dense")] == count[("989M", "dense")] == 1
    assert 1100 <= df["gpu_hours"].sum() <= 1296


def test_a_runs_config_from_its_template_equals_hydras_own(tmp_path):
    """make_plan composes each (size, arm, budget) once and sets the per-run keys (seed,
    run_name, meta.pair, a branch's meta.cooldown / meta.branch_of) on a copy: every run's
    config, resolved, equals Hydra's compose of that run's own overrides (two seeds, two LRs,
    cooldown branches, a command-line override)."""
    from omegaconf import OmegaConf

    from leviathan.sweep.grid import expand, to_grid_config
    from leviathan.sweep.plan import PER_RUN_KEYS, _compose_run

    cfg, _ = plan_for(["+grid=smoke", "grid.sizes=[smoke/13M,smoke/20M]", "grid.seeds=[0,1]",
                       "grid.lr=[0.5,1.0]", "grid.cooldowns=[1.0]"], tmp_path)
    specs = expand(to_grid_config(cfg.grid), "t")
    assert len(specs) > 8 and any(s.cooldown for s in specs)
    cache: dict = {}
    for spec in specs:
        extra = [f"seed={spec.seed}", f"run_name={spec.name}", f"meta.pair={spec.pair}",
                 "trainer.max_steps=7"]
        if spec.cooldown is not None:
            extra += [f"+meta.cooldown={spec.cooldown:g}", f"+meta.branch_of={spec.main}"]
        fast = OmegaConf.to_container(_compose_run(spec, extra, cache), resolve=True)
        slow = OmegaConf.to_container(_compose_run(spec, extra), resolve=True)
        fast.pop("hydra", None)
        slow.pop("hydra", None)
        assert fast == slow, spec.name
    assert len(cache) < len(specs) / 2  # templates were reused
    assert set(PER_RUN_KEYS) >= {"seed", "run_name", "meta.pair"}
