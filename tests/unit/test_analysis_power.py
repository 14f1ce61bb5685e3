"""Issue 23: honest intervals, and the power analysis / design search that predicts them.

Every simulation goes through the analysis's own pieces (analysis.power.simulate: the LR rule, the
per-arm noise replicates, the batched Dense refits), all ladders at once."""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import pytest

from analysis.config import FIT_DELTA
from analysis.laws.bootstrap import dense_draws
from analysis.laws.powerlaw import x_eff
from analysis.power.design import DesignError, cells_for_grid, search
from analysis.power.model import PowerModel, cells_from_plan, design_cost
from analysis.power.simulate import simulate
from analysis.readings.lr_selection import keep_batch, mean_over, pooled_choice, select_lr

ONE_SEED = {"seeds": [0], "seeds_by_arm": {}, "seeds_by_size": {}, "lr_sizes": None}


@pytest.fixture(scope="module")
def iso(tmp_path_factory):
    """The isoparametric family: its base plan's cells (one seed, the rule's LR: each (arm,
    size)'s cost per run), the cells of the grid it shipped before the design search (one
    seed, three LRs at every size: the issue's "shipped" design), and that grid."""
    from dataclasses import asdict

    from leviathan.cli.design import base_plan
    from leviathan.config import compose
    from leviathan.sweep.grid import to_grid_config

    root = tmp_path_factory.mktemp("iso")
    overrides = ["+grid=isoparametric", f"paths.root_dir={root}"]
    cfg = compose("sweep", overrides)
    base = cells_from_plan(base_plan(cfg, overrides).frame())
    grid = {**asdict(to_grid_config(cfg.grid)), **ONE_SEED}
    return base, cells_for_grid(base, grid), grid


@pytest.mark.slow
@pytest.mark.parametrize("design", ["one_seed", "shipped"])
@pytest.mark.parametrize("sigma", [0.005, 0.01])
def test_shipped_isoparametric_intervals_cover_the_truth(iso, sigma, design):
    """>= 200 simulated ladders of the isoparametric design, true LEV over its control 1.10:
    every printed 95% interval (multiplier per size, LEV/control per size and pooled) covers
    the truth in >= 90% of them. one_seed: the grid as it shipped before the design search,
    its noise level given (fit.seed_noise): the half-width is within 20% of the estimates' own
    spread or wider (the kept loss, the least of three LRs, varies less than one run: the given
    level is the conservative side); shipped: the searched design now in conf/grid, its noise
    from its own seeds, the LR rule's miss at its unswept sizes (estimated per arm from the
    swept sizes, analysis/laws/lr_miss.py) included."""
    from dataclasses import asdict

    from leviathan.config import compose
    from leviathan.sweep.grid import to_grid_config

    base, cells, _ = iso
    if design == "shipped":
        cells = cells_for_grid(base, asdict(to_grid_config(
            compose("sweep", ["+grid=isoparametric"]).grid)))
    t0 = time.perf_counter()
    table = simulate(cells, PowerModel(noise={"all": sigma}, ladders=200, bootstrap=200,
                                       seed=11))
    print(f"\n{time.perf_counter() - t0:.1f}s\n", table.round(3).to_string())
    assert set(table["quantity"]) == {"multiplier", "lev_over_control",
                                      "lev_over_control_pooled", "lev_over_control_trend"}
    # (the shipped design at sigma 0.5%, LEV/control at 60M, covered 89% before issue 37: the
    # kept LR's residual miss; the swept sizes are now read at their LR curve's minimum)
    assert (table["coverage"] >= 0.90).all(), table[table["coverage"] < 0.90]
    assert (table["half_width"] >= 0.8 * table["empirical"]).all(), table[table["check"] > 0.2]
    if design == "shipped":  # never more than 20% narrower; at most 65% wider (measured: <=
        # 41% at 421M, the swept size with 2 seeds, whose interval draws the kept seeds'
        # scatter while the estimate reads all six runs at the curve's minimum; up to 55% for
        # the trend at sigma 1%: the conservative side, issue 37's closing note)
        assert (table["half_width"] <= 1.65 * table["empirical"]).all()


def test_a_seeded_design_predicts_its_own_spread(iso):
    """Issue 23.5's self-check: with the design's own seeds (no level given), the predicted
    half-width of every headline number (multiplier per arm and size, LEV/control per size and
    pooled) is never more than 20% narrower than the simulated spread of the estimates, on the
    interval's scale (their sd times the level's quantile of Student's t on the Welch-
    Satterthwaite degrees of freedom of its noise sources: a level measured from few seeds must
    widen an interval that much), and at most 65% wider: the conservative side, where the LR
    is swept at every size the loss is read at the minimum of a quadratic through all its
    seeds and LRs, which varies less than the kept seeds' mean the replicates draw (measured:
    up to 54% at 231M LEV/control, 61% for the trend; coverage >= 90%)."""
    from dataclasses import replace

    base, _, _ = iso
    cells = [replace(c, seeds=4 if c.arm != "dense" else 2, lrs=(0.5, 1.0, 2.0))
             for c in base]
    table = simulate(cells, PowerModel(noise={"all": 0.01}, ladders=200, bootstrap=200,
                                       seed=3))
    print("\n", table[["quantity", "arm", "size", "half_width", "empirical", "check",
                        "coverage", "bias"]].round(3).to_string())
    assert (table["half_width"] >= 0.8 * table["empirical"]).all(), table[table["check"] > 0.2]
    assert (table["half_width"] <= 1.65 * table["empirical"]).all(), table[table["check"] > 0.3]
    assert (table["coverage"] >= 0.9).all()  # the trend's slope included


def test_one_seed_and_no_noise_level_shows_no_lev_interval(tmp_path):
    """The headline: with one seed and no noise level, the multipliers say 'fit only' and LEV
    over its control (per size and pooled) has no interval; a given level brings them back."""
    from analysis.fit_scaling import main
    from analysis.power.simulate import toy_world

    csv = tmp_path / "one.csv"
    toy_world("params", {"leviathan": 1.3, "factorized": 1.1}, seeds=1, noise=0.005).to_csv(
        csv, index=False)
    assert main(["--csv", str(csv), "--out", str(tmp_path / "a"), "--bootstrap", "60"]) == 0
    s = (tmp_path / "a" / "summary.md").read_text()
    assert "(no interval: one seed and no noise level)" in s
    assert "**LEV over its control, pooled**" in s
    lev = [ln for ln in s.splitlines() if "LEV over its control" in ln and ln.startswith("|")]
    assert lev and all("[" not in ln for ln in lev)  # no LEV/control interval anywhere
    assert "fit only (excludes run-to-run noise)" in s
    assert main(["--csv", str(csv), "--out", str(tmp_path / "b"), "--bootstrap", "60",
                 "+fit.seed_noise.all=0.005"]) == 0
    s = (tmp_path / "b" / "summary.md").read_text()
    lev = [ln for ln in s.splitlines() if "LEV over its control" in ln and ln.startswith("|")]
    assert all("[" in ln for ln in lev)
    assert "run-to-run noise from a level measured elsewhere" in s
    pooled = pd.read_csv(tmp_path / "b" / "lev_vs_control_pooled.csv")
    per = pd.read_csv(tmp_path / "b" / "lev_vs_control.csv").query("size != 'trend'")
    for (basis,), p in pooled.groupby(["basis"]):
        sizes = per[per["basis"] == basis]
        assert p["ratio_lo"].item() <= p["ratio"].item() <= p["ratio_hi"].item()
        # a pooled ratio is tighter than any one size's
        assert (np.log(p["ratio_hi"] / p["ratio_lo"]).item()
                < np.log(sizes["ratio_hi"] / sizes["ratio_lo"]).min())


def test_noise_from_a_pilot_sweep(tmp_path, capsys):
    """--noise-from reads each arm's noise from a pilot's seeds; an unseeded pilot is refused."""
    from analysis.fit_scaling import main
    from analysis.power.simulate import toy_world

    toy_world("params", {"leviathan": 1.3, "factorized": 1.1}, seeds=3, noise=0.01,
              seed=5).to_csv(tmp_path / "pilot.csv", index=False)
    toy_world("params", {"leviathan": 1.3, "factorized": 1.1}, seeds=1, noise=0.005).to_csv(
        tmp_path / "one.csv", index=False)
    assert main(["--csv", str(tmp_path / "one.csv"), "--out", str(tmp_path / "f"),
                 "--bootstrap", "40", "--noise-from", str(tmp_path / "pilot.csv")]) == 0
    s = (tmp_path / "f" / "summary.md").read_text()
    assert "measured elsewhere (fit.seed_noise / --noise-from): dense 0." in s
    assert main(["--csv", str(tmp_path / "one.csv"), "--out", str(tmp_path / "g"),
                 "--bootstrap", "40", "--noise-from", str(tmp_path / "one.csv")]) == 2
    assert "no arm has two or more seeds" in capsys.readouterr().err


def _flat_vs_sharp(rule: str, sigma: float, seeds: int, m: int = 400) -> float:
    """Median relative error of Leviathan's multiplier when Dense's LR curve is sharp (5% per
    octave^2) and Leviathan's flat, 3 LRs at 6 sizes, `seeds` seeds, the kept losses picked by
    `rule` (per_seed: the old best of each seed; mean, pooled: analysis.readings.lr_selection's)."""
    rng = np.random.default_rng(1)
    n = np.geomspace(60e6, 420e6, 6)
    a_true, alpha, b = 1.81 * 60e6 ** 0.34, 0.34, 1.69
    u = np.log2([0.5, 1.0, 2.0])
    kept = {}
    for arm, curv, worth in (("dense", 0.05, 1.0), ("leviathan", 0.0, 1.3)):
        clean = b + a_true * (worth * n) ** -alpha  # (6,)
        grid = clean[None, :, None, None] * (1 + curv * u ** 2) * (
            1 + sigma * rng.standard_normal((m, 6, seeds, 3)))
        if rule == "per_seed":
            per = np.argmin(grid, axis=-1)
        elif rule == "mean":
            per = keep_batch(grid)[1]
        else:
            choice = pooled_choice(mean_over(grid, np.arange(seeds)))  # (M, 6)
            per = np.repeat(choice[..., None], seeds, axis=-1)
        kept[arm] = np.take_along_axis(grid, per[..., None], axis=-1)[..., 0].mean(axis=-1)
    fit = dense_draws(n, np.log(kept["dense"]), np.ones((m, 6)), [a_true, alpha], b, FIT_DELTA)
    mult = x_eff(fit[:, :1], fit[:, 1:], b, kept["leviathan"]) / n
    return float(np.median(mult / 1.3) - 1)


@pytest.mark.parametrize("sigma", [0.005, 0.01])
def test_flat_vs_sharp_lr_curves_pooled_choice_is_unbiased(sigma):
    """Issue 23.3: one arm's LR curve flat, the other's sharp, 3 LRs, 6 sizes. The best LR of
    each seed biases the flat arm's loss down by ~0.85 sigma whatever the seeds, and so its
    multiplier up (~3% at sigma 0.5%, ~6% at 1%); the seed-mean choice (fit.lr_estimator=mean)
    shrinks that only as 1/sqrt(seeds) (+1.6% / +3.2% at 3 seeds); choosing each size's LR on
    the arm's other sizes (fit.lr_estimator=pooled) is unbiased within 1% from one seed on."""
    for seeds in (1, 2, 3):
        old = _flat_vs_sharp("per_seed", sigma, seeds)
        mean = _flat_vs_sharp("mean", sigma, seeds)
        new = _flat_vs_sharp("pooled", sigma, seeds)
        print(f"\nsigma {sigma:.1%}, {seeds} seeds: per-seed {old:+.2%}, seed mean {mean:+.2%}, "
              f"pooled {new:+.2%}")
        assert old > 0.02 and mean > 0.01  # the flat arm's winner's curse
        assert abs(new) < 0.01


def test_pooled_choice_leaves_each_size_out_of_its_own_choice():
    """fit.lr_estimator=pooled on a runs table: size a's own best LR (0.5, by 0.7%) is
    not what it keeps: its LR comes from b and c (both best at LR 1, after centring each on its
    own level); b and c keep LR 1 too (a's vote is outweighed); a size whose multipliers no other
    size shares keeps its own seed-mean best; an LR another size diverged at is never chosen."""
    curves = {"a": [2.98, 3.00, 3.01], "b": [2.83, 2.80, 2.83], "c": [2.63, 2.60, 2.62],
              "d": [2.55, 2.50, 2.52]}
    rows = []
    for size, losses in curves.items():
        lrs = (0.5, 1.0, 2.0) if size != "d" else (0.25, 1.0, 4.0)
        for seed in ("0", "1"):
            for lr, loss in zip(lrs, losses, strict=True):
                rows.append({"family": "f", "arm": "leviathan", "size": size, "seed": seed,
                             "lr": lr, "tokens": 1e9, "status": "FINISHED", "reason": "",
                             "loss": loss})
    table = pd.DataFrame(rows)
    lr = select_lr(table, estimator="pooled")
    ch = lr.choices.set_index("size")
    assert ch.loc[["a", "b", "c"], "lr"].tolist() == [1.0, 1.0, 1.0]
    assert (ch.loc[["a", "b", "c"], "estimator"] == "pooled").all()
    assert ch.loc["d", "lr"] == 1.0 and ch.loc["d", "estimator"] == "mean"
    kept = table.drop(index=lr.excluded.index)
    assert len(kept) == 8 and set(kept["lr"]) == {1.0}
    assert "not kept" in lr.excluded[table.index[(table["size"] == "a") & (table["lr"] == 0.5)]
                                     ].iloc[0]
    means = np.array([[3.0, 2.9, 3.1], [3.0, np.inf, 3.1], [2.0, 2.1, 2.2]])  # b diverged at 1
    assert pooled_choice(means).tolist() == [0, 0, 0]


def test_vertex_estimator_reads_the_optimum_from_a_quadratic():
    """fit.lr_estimator=vertex: loss = L* + 0.05 (log2 lr - 0.3)^2 (one curvature, pooled
    across sizes), optimum off the grid: the chosen LR is 2^0.3 and the kept runs' losses move
    to L*; the seed-mean choice would keep lr 1 at L* + 0.0045."""
    rows = []
    for size, lstar in (("a", 3.0), ("b", 2.8), ("c", 2.6)):
        for seed in ("0", "1"):
            for lr in (0.5, 1.0, 2.0):
                rows.append({"family": "f", "arm": "dense", "size": size, "seed": seed,
                             "lr": lr, "tokens": 1e9, "status": "FINISHED", "reason": "",
                             "loss": lstar + 0.05 * (math.log2(lr) - 0.3) ** 2})
    table = pd.DataFrame(rows)
    lr = select_lr(table, estimator="vertex")
    ch = lr.choices
    assert np.allclose(ch["lr"], 2 ** 0.3, rtol=1e-6) and (ch["estimator"] == "vertex").all()
    kept = lr.fitted(table).drop(index=lr.excluded.index)
    assert len(kept) == 6 and (kept["lr"] == 1.0).all()
    assert np.allclose(kept.groupby("size")["loss"].mean(), [3.0, 2.8, 2.6], rtol=1e-9)


@pytest.mark.slow
def test_design_search_beats_the_shipped_grid_at_its_cost(iso):
    """At the one-seed isoparametric grid's own GPU-hours, the search (the largest pair kept)
    finds a design whose pooled LEV/control half-width is at most 3/4 of that grid's, within 2
    minutes (measured: 5.9% against 8.5%: the LR rule's miss at unswept sizes is a bias
    estimated per arm, issue 37); the winner written as a grid costs what the search says; and
    the grid shipped now (conf/grid/isoparametric.yaml, searched this way on the cost model's
    GPU-hours) is at least as good as this search's winner in the assumed world."""
    from dataclasses import asdict

    from leviathan.cli.design import run_search
    from leviathan.config import compose
    from leviathan.sweep.grid import to_grid_config

    base, cells, grid = iso
    budget = design_cost(cells)
    t0 = time.perf_counter()
    text, winner, header = run_search(_frame(base), grid, {"budget_gpu_h": budget})
    took = time.perf_counter() - t0
    print(f"\n{took:.1f}s\n{text}\n{header}")
    old = float(text.split("The grid as it stands: ")[1].split("±")[1].split("%")[0])
    best = float(text.split("\n| 1 | ")[1].split("±")[1].split("%")[0])
    assert best <= 0.75 * old and took < 120
    assert winner["seeds_by_arm"]["leviathan"] and winner["lr_sizes"]
    assert winner["sizes"][-1] == "v1/421M"  # the largest pair is kept
    won = cells_for_grid(base, {**grid, **winner})
    assert design_cost(won) == pytest.approx(float(text.split("\n| 1 | ")[1].split(" |")[0]),
                                             rel=1e-3)
    shipped = cells_for_grid(base, asdict(to_grid_config(
        compose("sweep", ["+grid=isoparametric"]).grid)))
    model = PowerModel(ladders=200, bootstrap=200)
    from analysis.power.design import _score

    # the shipped grid: this search's winner on the cost model's GPU-hours (its header; its cost
    # there: test_the_shipped_isoparametric_design_runs_what_its_header_says), with each arm's
    # LR optimum drifting; at these (assumed) costs it would cost more than the one-seed grid,
    # and in the assumed world it is at least as narrow as this search's winner
    assert _score(simulate(shipped, model), "lev_over_control_pooled") <= best / 100 + 0.002


def _frame(base) -> pd.DataFrame:
    """A plan frame of base cells (one run each) for run_search."""
    return pd.DataFrame([{"run": f"{c.arm}-{c.size}", "arm": c.arm, "size": c.size,
                          "params_total": c.params, "seed": 0, "lr_scale": 1.0,
                          "gpu_hours": c.gpu_hours, "branch_of": None} for c in base])


def test_design_search_bad_input_names_the_key(iso):
    from leviathan.cli.design import run_search

    base, _, grid = iso
    with pytest.raises(DesignError, match=r"design\.budget_gpu_h: 5 GPU-hours is below the "
                       r"cheapest admissible design \([0-9.]+ GPU-hours: the smallest budget"):
        search(base, (0.5, 1.0, 2.0), 5.0, PowerModel(ladders=20, bootstrap=20))
    no_control = [c for c in base if c.arm != "factorized"]
    with pytest.raises(DesignError, match=r"design\.target: 'lev_over_control_pooled' needs a "
                       "control arm"):
        search(no_control, (0.5, 1.0, 2.0), 500.0, PowerModel(ladders=20, bootstrap=20))
    with pytest.raises(DesignError, match=r"design\.budget_gpu_h: give the GPU-hour budget"):
        run_search(_frame(base), grid, {"budget_gpu_h": None})


@pytest.mark.slow
def test_the_search_puts_seeds_where_the_noise_is(iso):
    """Issue 36.3: at the shipped isoparametric grid's GPU-hours, in a world whose noise grows
    5x over the ladder (grid.power.noise_slope), the searched design puts more seeds at the
    largest pair than the shipped one (Neyman by variance x cost, not by cost alone), its
    target covers its truth (a design that does not never ranks), and the slope is a target."""
    import math
    from dataclasses import asdict

    from leviathan.config import compose
    from leviathan.sweep.grid import to_grid_config

    base, _, grid = iso
    shipped = cells_for_grid(base, asdict(to_grid_config(
        compose("sweep", ["+grid=isoparametric"]).grid)))
    growing = PowerModel(noise={"all": 0.003}, noise_slope=math.log(5) / math.log(421 / 60),
                         ladders=100, bootstrap=100)
    found = search(base, (0.5, 1.0, 2.0), design_cost(shipped), growing, top=3)
    won = {c.size: c.seeds for c in found[0].cells if c.arm == "leviathan"}
    was = {c.size: c.seeds for c in shipped if c.arm == "leviathan"}
    assert won["421M"] > was["421M"] and won["421M"] / won["60M"] > was["421M"] / was["60M"]
    pooled = found[0].table[found[0].table["quantity"] == "lev_over_control_pooled"]
    assert (pooled["coverage"] >= 0.9).all()
    slope = search(base, (0.5, 1.0, 2.0), design_cost(shipped), growing, target="slope",
                   top=3)[0]
    trend = slope.table[slope.table["quantity"] == "lev_over_control_trend"]
    assert trend["coverage"].item() >= 0.9 and slope.width == pytest.approx(
        max(trend["half_width"].item(), trend["empirical"].item()))
