"""The LR rule's miss as a bias, per arm (analysis/laws/lr_miss.py; issue 37.1, 37.2)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis.config import FitConfig, FitConfigError

SIZES = [60e6, 109e6, 164e6, 231e6, 296e6, 421e6]


def law(n: float) -> float:
    return 1.69 + (3.5 - 1.69) * (n / 60e6) ** -0.34


def _ladder(drift: dict, noise: float, seed: int = 0, swept=(0, 5),
            curvature: float = 0.01) -> pd.DataFrame:
    """Dense and Leviathan runs: LR swept (0.5, 1, 2 x the rule's) at the `swept` sizes, the
    rule's LR elsewhere; each arm's optimum `drift[arm]` octaves from the rule at the largest
    size, linear in log N from 0 at the smallest (the rule's LR is a power law of the body
    parameters, as lr_rule's)."""
    from analysis.inputs.runs import finalize

    rng = np.random.default_rng(seed)
    rows = []
    span = math.log(SIZES[-1] / SIZES[0])
    for i, n in enumerate(SIZES):
        lrs = (0.5, 1.0, 2.0) if i in swept else (1.0,)
        rule = 3e-4 * (n / 2 / 1e8) ** (-1 / 3)
        for arm, worth in (("dense", 1.0), ("leviathan", 1.2)):
            opt = drift.get(arm, 0.0) * math.log(n / SIZES[0]) / span
            for s in range(3):
                for lr in lrs:
                    loss = law(worth * n) * (1 + curvature * (math.log2(lr) - opt) ** 2) * (
                        1 + noise * rng.standard_normal())
                    rows.append({"run_id": f"{arm}{i}s{s}lr{lr}", "arm": arm, "size": f"S{i}",
                                 "seed": str(s), "lr": lr * rule, "params_total": n,
                                 "params_body": n / 2, "tokens": 20 * n, "loss": loss})
    return finalize(pd.DataFrame(rows))


def test_an_unswept_sizes_loss_is_corrected_for_its_arms_drifting_optimum():
    """Leviathan's optimum drifts 0 -> +1 octave over the ladder, Dense's stays on the rule; LR
    swept at the ends only. With (almost) no run noise and no per-size scatter
    (fit.lr_spread=0), the line through the swept optima finds each middle size's distance from
    its optimum, and its loss is corrected by exactly the miss a.D^2 planted (up to 1.0% of the
    loss at 296M); Dense's middle sizes are left alone; the summary's LR-miss table names the
    offsets. Without the correction the middle Leviathan losses are that much too high."""
    from analysis.inputs.runs import Runs
    from analysis.report.summary import summary_md
    from analysis.scaling import analyse

    table = _ladder({"leviathan": 1.0}, noise=1e-5)
    res = analyse(Runs(table=table, source="t"), FitConfig(bootstrap=50, lr_spread=0.0))
    fitted = res.table[res.table["reason"] == ""] if "reason" in res.table else res.table
    miss = res.families["default"].lr_miss
    span = math.log(SIZES[-1] / SIZES[0])
    for i in range(1, len(SIZES) - 1):
        for arm, worth, drift in (("leviathan", 1.2, 1.0), ("dense", 1.0, 0.0)):
            planted = 0.01 * (drift * math.log(SIZES[i] / SIZES[0]) / span) ** 2
            row = miss.groups[(miss.groups["arm"] == arm) & (miss.groups["size"] == f"S{i}")]
            assert row["expected"].iloc[0] == pytest.approx(planted, abs=2e-4)
            assert row["distance"].iloc[0] == pytest.approx(
                -drift * math.log(SIZES[i] / SIZES[0]) / span, abs=0.03)
            runs = fitted[(fitted["arm"] == arm) & (fitted["size"] == f"S{i}")]
            assert runs["loss"].mean() == pytest.approx(law(worth * SIZES[i]), rel=3e-4)
    off = miss.offsets.set_index(["arm", "size"])["offset"]
    assert off[("leviathan", "S0")] == pytest.approx(0.0, abs=0.03)
    assert off[("leviathan", "S5")] == pytest.approx(1.0, abs=0.03)
    assert off[("dense", "S5")] == pytest.approx(0.0, abs=0.03)
    assert miss.offsets["curvature"].to_numpy() == pytest.approx(0.01, rel=0.05)
    text = summary_md(Runs(table=table, source="t"), FitConfig(bootstrap=50, lr_spread=0.0),
                      res)
    assert "The LR rule's miss" in text and "| leviathan | S5 | +0.99 ± 0.00 |" in text


def test_the_miss_is_drawn_in_every_interval_with_its_uncertainty():
    """With the default per-size scatter (fit.lr_spread 0.5 octave) each unswept group's
    replicates draw the miss again: one draw per group shared by its seeds, a larger sd where
    the line reaches further from the swept sizes; the summary's noise line says so."""
    from analysis.inputs.runs import Runs
    from analysis.report.headline import noise_line
    from analysis.scaling import analyse

    res = analyse(Runs(table=_ladder({"leviathan": 1.0}, noise=0.003), source="t"),
                  FitConfig(bootstrap=200)).families["default"]
    g = res.lr_miss.groups.set_index(["arm", "size"])
    assert not g.loc[("leviathan", "S1"), "swept"] and g.loc[("leviathan", "S0"), "swept"]
    assert (g.loc[[("leviathan", f"S{i}") for i in range(1, 5)], "sd"] > 0.001).all()
    noise = res.matching.noise
    assert set(noise.unswept) == {f"{a}|S{i}" for a in ("dense", "leviathan")
                                  for i in range(1, 5)}
    assert "corrected for its expected miss" in noise_line(noise)


def test_the_lr_model_holds_its_coverage_where_the_arms_optima_drift():
    """The analysis's LR model on simulated ladders of the issue-23 isoparametric design (seeds
    17 -> 2, LR swept at 60M and 421M; analysis.power.simulate runs the analysis's own LR
    choice, LR model, noise model and Dense refits on every ladder): with Leviathan's optimum
    drifting 0 -> +1 octave and the control's 0 -> -0.5 (a world the model does not assume:
    the per-size scatter it assumes comes on top), every per-size interval covers >= 90% and no
    bias exceeds 1.5% (beyond the median's own sampling error over these ladders)."""
    from analysis.power.model import Cell, PowerModel
    from analysis.power.simulate import simulate

    params = dict(zip(["60M", "109M", "164M", "231M", "296M", "421M", "752M", "989M"],
                      [59.8e6, 109e6, 164.5e6, 230.9e6, 296.1e6, 421e6, 752e6, 989e6],
                      strict=True))
    seeds = {"60M": 17, "109M": 9, "164M": 6, "231M": 4, "296M": 3, "421M": 2}
    cells = []
    for size, n in params.items():
        lrs = (0.5, 1.0, 2.0) if size in ("60M", "421M") else (1.0,)
        cells.append(Cell("dense", size, n, 2 if size in seeds else 1, lrs, 1.0))
        if size in seeds:
            cells += [Cell(a, size, n, seeds[size], lrs, 1.0) for a in ("leviathan",
                                                                         "factorized")]
    model = PowerModel(noise={"all": 0.01}, lr_drift={"leviathan": 1.0, "factorized": -0.5},
                       ladders=160, bootstrap=100, seed=3)
    t = simulate(cells, model)
    per_size = t[t["quantity"].isin(("multiplier", "lev_over_control"))]
    assert (per_size["coverage"] >= 0.90).all(), per_size[["arm", "size", "coverage"]]
    # the median's own sampling error over 160 ladders (1.25 sd / sqrt(M); the sd from the
    # estimates' spread): at 296M it is ~1.2%, so 1.5% is asked of the 200-ladder CLI record
    # (docs/coverage) and here within twice that error
    se = 1.25 * np.log1p(per_size["empirical"]) / 1.96 / math.sqrt(model.ladders)
    assert (per_size["bias"].abs() <= 0.015 + 2 * se).all(), per_size[["arm", "size", "bias"]]
    assert (per_size["bias"].abs() <= 0.015).mean() >= 0.8


def test_pooled_lr_choice_is_refused_with_two_swept_sizes():
    """fit.lr_estimator=pooled with two swept sizes: each would learn its LR from one other;
    refused in one line naming the key and the sizes (the analysis), and grid.power's own
    lr_estimator likewise in the dry run's grid check; three swept sizes run."""
    from analysis.inputs.runs import Runs
    from analysis.scaling import analyse

    table = _ladder({}, noise=0.003)
    with pytest.raises(FitConfigError, match=r"fit\.lr_estimator=pooled: default dense sweeps "
                                             r"LR at 2 size\(s\) \(S0, S5\)"):
        analyse(Runs(table=table, source="t"), FitConfig(bootstrap=20, lr_estimator="pooled"))
    three = _ladder({}, noise=0.003, swept=(0, 2, 5))
    analyse(Runs(table=three, source="t"), FitConfig(bootstrap=20, lr_estimator="pooled"))

    from leviathan.config import compose
    from leviathan.sweep.grid import GridError, to_grid_config

    cfg = compose("sweep", ["+grid=decoupled", "grid.power.lr_estimator=pooled"])
    with pytest.raises(GridError, match=r"grid\.power\.lr_estimator: pooled .* sweeps 2 "
                                        r"\(v2/200M, v2/1\.2B\)"):
        to_grid_config(cfg.grid)
    to_grid_config(compose("sweep", ["+grid=isoparametric",  # six swept sizes: it runs
                                     "grid.power.lr_estimator=pooled"]).grid)


def test_a_one_seed_arm_reads_its_sweeps_with_the_other_arms_noise():
    """Dense at one seed (as the shipped grids run it) and Leviathan at three: Dense's swept
    sizes are still read at their curve's minimum (the LR curve's points weighted by the
    family's seed scatter, as its intervals borrow it), not left at the best LR's single run
    (the least of three noisy runs: biased low, which moved every multiplier by -2% at 60M in
    simulation); its unswept sizes are corrected from its own line."""
    from analysis.inputs.runs import Runs
    from analysis.scaling import analyse

    table = _ladder({"leviathan": 1.0}, noise=0.003)
    table = table[(table["arm"] != "dense") | (table["seed"] == "0")]
    res = analyse(Runs(table=table, source="t"), FitConfig(bootstrap=50)).families["default"]
    g = res.lr_miss.groups.set_index(["arm", "size"])
    assert g.loc[("dense", "S0"), "how"] == g.loc[("dense", "S5"), "how"] == \
        "swept: the quadratic's minimum"
    assert (g.loc[[("dense", f"S{i}") for i in range(1, 5)], "how"]
            == "line through the swept optima").all()
