"""Power-law fits, effective sizes, bootstrap coverage and the worked multiplier-2 example."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis.config import FitConfig
from analysis.inputs.runs import AnalysisError, Runs, budget_ids, finalize
from analysis.laws.bootstrap import percentile_interval, resample_counts
from analysis.laws.powerlaw import effective_size, fit_power_law, fit_shared_exponent, refit_batch
from analysis.readings.paper_view import bootstrap_dense
from analysis.scaling import analyse

A_TRUE, ALPHA_TRUE, B = 400.0, 0.34, 1.69
SIZES = np.array([40e6, 60e6, 109e6, 200e6, 300e6, 421e6, 800e6])


def ladder(rng, noise=0.003, seeds=1, lev_multiplier=None, sizes=SIZES):
    """Synthetic runs: Dense on L = A N^-alpha + b with log-normal noise; Leviathan optional."""
    rows = []
    for i, n in enumerate(sizes):
        for s in range(seeds):
            loss = (A_TRUE * n ** -ALPHA_TRUE + B) * math.exp(rng.normal(0, noise))
            rows.append({"run_id": f"d{i}s{s}", "arm": "dense", "size": f"S{i}", "seed": str(s),
                         "params_total": n, "params_body": n / 2, "tokens": 20 * n,
                         "loss": loss})
            if lev_multiplier is not None:
                nl = 0.98 * n
                rows.append({"run_id": f"l{i}s{s}", "arm": "leviathan", "size": f"S{i}",
                             "seed": str(s), "params_total": nl, "params_body": n / 2,
                             "tokens": 20 * n,
                             "loss": A_TRUE * (lev_multiplier * nl) ** -ALPHA_TRUE + B})
    return Runs(table=finalize(pd.DataFrame(rows)), source="synthetic")


def test_exact_power_law_is_recovered_exactly():
    loss = A_TRUE * SIZES ** -ALPHA_TRUE + B
    fit = fit_power_law(SIZES, loss, b=B)
    assert fit.alpha == pytest.approx(ALPHA_TRUE, rel=1e-8)
    assert fit.A == pytest.approx(A_TRUE, rel=1e-6)
    assert fit.b == B and fit.b_fixed


def test_recovery_with_noise():
    rng = np.random.default_rng(7)
    runs = ladder(rng, noise=0.003, seeds=2)
    res = analyse(runs, FitConfig(bootstrap=200)).families
    fit = res["default"].dense
    assert fit.alpha == pytest.approx(ALPHA_TRUE, abs=0.02)
    assert fit.A == pytest.approx(A_TRUE, rel=0.25)
    lo, hi = res["default"].intervals["alpha"]
    assert lo < fit.alpha < hi


def test_free_b_is_recovered():
    n = np.geomspace(20e6, 5e9, 12)
    loss = A_TRUE * n ** -ALPHA_TRUE + B
    fit = fit_power_law(n, loss, b=None)
    assert not fit.b_fixed
    assert fit.b == pytest.approx(B, abs=0.01)
    assert fit.alpha == pytest.approx(ALPHA_TRUE, abs=0.01)


def test_bootstrap_interval_covers_truth_in_most_repetitions():
    # the code path behind FamilyResult.intervals["A"/"alpha"] (analyse -> paper_view)
    rng = np.random.default_rng(123)
    cfg = FitConfig(bootstrap=200)
    reps, cover_alpha, cover_a, widths = 40, 0, 0, []
    for _ in range(reps):
        dense = ladder(rng, noise=0.004, seeds=2).usable()
        fit = fit_power_law(dense["params"], dense["loss"], b=B)
        samples = bootstrap_dense(dense, fit, cfg, rng)
        lo, hi = percentile_interval(samples[:, 1], cfg.level)
        cover_alpha += lo <= ALPHA_TRUE <= hi
        widths.append(hi - lo)
        lo, hi = percentile_interval(samples[:, 0], cfg.level)
        cover_a += lo <= A_TRUE <= hi
    print(f"coverage alpha {cover_alpha}/{reps}, A {cover_a}/{reps}, "
          f"median alpha width {np.median(widths):.4f}")
    assert np.median(widths) < 0.1  # informative, not covering by being vacuous
    assert cover_alpha >= 0.8 * reps, f"95% interval covered alpha in {cover_alpha}/{reps}"
    assert cover_a >= 0.8 * reps, f"95% interval covered A in {cover_a}/{reps}"


def test_batched_refit_matches_scalar_fit():
    rng = np.random.default_rng(3)
    loss = (A_TRUE * SIZES ** -ALPHA_TRUE + B) * np.exp(rng.normal(0, 0.004, SIZES.size))
    fit = fit_power_law(SIZES, loss, b=B)
    lx = np.log(SIZES)
    x0 = lx.mean()
    counts = resample_counts(np.arange(SIZES.size), 5, rng)
    theta = refit_batch(lx - x0, np.log(loss), np.zeros(SIZES.size, int), counts, math.log(B),
                        [math.log(fit.A) - fit.alpha * x0, fit.alpha])
    for c, (a_c, alpha) in zip(counts, theta, strict=True):
        idx = np.repeat(np.arange(SIZES.size), c)
        ref = fit_power_law(SIZES[idx], loss[idx], b=B)
        assert alpha == pytest.approx(ref.alpha, abs=1e-6)
        assert a_c + alpha * x0 == pytest.approx(math.log(ref.A), abs=1e-5)


def test_resample_counts_two_stage_keeps_two_sizes():
    rng = np.random.default_rng(0)
    groups = np.array(["a", "a", "b", "b", "c", "c"])  # sizes with two seeds each
    counts = resample_counts(groups, 300, rng)
    assert counts.shape == (300, 6) and (counts.sum(axis=1) == 6).all()
    for c in counts:
        assert len({g for g, k in zip(groups, c, strict=True) if k}) >= 2


def test_worked_example_multiplier_is_exactly_two():
    # Dense: L = 1.69 + 1000 / sqrt(N)  (A = 1000, alpha = 0.5), by hand:
    #   N = 1e6 -> 2.69, 4e6 -> 2.19, 16e6 -> 1.94, 64e6 -> 1.815.
    # Leviathan with N = 2e6 reaches 2.19, the Dense loss at 4e6:
    #   N_eff = (A / (L - b))^(1/alpha) = (1000 / 0.5)^2 = 4e6, multiplier 4e6 / 2e6 = 2.
    # A second Leviathan run, N = 8e6 at 1.94, gives (1000 / 0.25)^2 = 16e6: also 2.
    table = pd.DataFrame({
        "run_id": ["d1", "d2", "d3", "d4", "l1", "l2"],
        "arm": ["dense"] * 4 + ["leviathan"] * 2,
        "size": ["1M", "4M", "16M", "64M", "4M", "16M"],
        "params_total": [1e6, 4e6, 16e6, 64e6, 2e6, 8e6],
        "tokens": [2e7, 8e7, 3.2e8, 1.28e9, 8e7, 3.2e8],
        "loss": [2.69, 2.19, 1.94, 1.815, 2.19, 1.94],
    })
    res = analyse(Runs(table=finalize(table), source="hand"), FitConfig(bootstrap=100)).families
    r = res["default"]
    assert r.dense.A == pytest.approx(1000.0, rel=1e-9)
    assert r.dense.alpha == pytest.approx(0.5, rel=1e-9)
    m = r.multipliers.set_index("run_id")
    assert m.loc["l1", "n_eff"] == pytest.approx(4e6, rel=1e-8)
    assert m.loc["l1", "multiplier"] == pytest.approx(2.0, rel=1e-8)
    assert m.loc["l2", "multiplier"] == pytest.approx(2.0, rel=1e-8)
    assert m.loc["l1", "dense_loss"] == pytest.approx(2.19)
    # both arms on alpha = 0.5 with A_lev = 1000 / sqrt(2): the shared estimate is 2 as well
    assert r.shared.multiplier == pytest.approx(2.0, rel=1e-8)
    assert r.shared.A_lev == pytest.approx(1000 / math.sqrt(2), rel=1e-8)
    # exact data leave nothing to resample: the interval collapses onto 2
    assert m.loc["l1", "multiplier_lo"] == pytest.approx(2.0, rel=1e-6)
    assert m.loc["l1", "multiplier_hi"] == pytest.approx(2.0, rel=1e-6)
    sens = r.b_sensitivity.set_index("run_id")
    assert sens.loc["l1", "1.69"] == pytest.approx(2.0, rel=1e-8)
    assert sens.loc["l1", "1.5"] != pytest.approx(2.0, rel=1e-3)  # b matters off the true b


def test_effective_size_undefined_at_or_below_b():
    fit = fit_power_law([1e6, 4e6], [2.69, 2.19], b=B)
    n_eff, mult = effective_size(fit, [B, 1.5, 2.19], [1e6, 1e6, 2e6])
    assert np.isnan(n_eff[:2]).all() and mult[2] == pytest.approx(2.0)


def test_shared_exponent_against_construction():
    n = np.geomspace(50e6, 1e9, 5)
    dense = A_TRUE * n ** -ALPHA_TRUE + B
    lev = A_TRUE * (1.7 * n) ** -ALPHA_TRUE + B
    sh = fit_shared_exponent(n, dense, n, lev, b=B)
    assert sh.multiplier == pytest.approx(1.7, rel=1e-6)
    assert sh.alpha == pytest.approx(ALPHA_TRUE, rel=1e-6)


def test_leviathan_alpha_and_multipliers_with_seeds():
    rng = np.random.default_rng(11)
    res = analyse(ladder(rng, noise=0.002, seeds=3, lev_multiplier=2.0),
                  FitConfig(bootstrap=200)).families
    r = res["default"]
    assert r.lev.alpha == pytest.approx(ALPHA_TRUE, abs=1e-6)  # noise-free Leviathan ladder
    m = r.multipliers
    assert len(m) == 3 * SIZES.size and (m["reason"] == "").all()
    assert m["multiplier"].between(1.7, 2.3).all()
    assert (m["multiplier_lo"] <= m["multiplier"]).all()
    assert (m["multiplier"] <= m["multiplier_hi"]).all()
    lo, hi = r.intervals["shared_multiplier"]
    assert lo <= 2.0 <= hi


def test_data_scaling_fit_and_data_multiplier():
    d = np.array([1e9, 2e9, 4e9, 8e9, 16e9])
    beta, bscale = 0.3, 300.0
    table = pd.DataFrame({
        "run_id": [f"d{i}" for i in range(5)] + ["lev"], "arm": ["dense"] * 5 + ["leviathan"],
        "size": ["60M"] * 6, "params_total": [60e6] * 5 + [59e6],
        "tokens": list(d) + [2e9], "loss": list(bscale * d ** -beta + B) +
        [bscale * (2 * 2e9) ** -beta + B],
    })
    res = analyse(Runs(table=finalize(table), source="ds"), FitConfig(bootstrap=50)).families
    r = res["default"]
    dense_fit = next(f for f in r.data_fits if f["arm"] == "dense")
    assert dense_fit["beta"] == pytest.approx(beta, rel=1e-6)
    assert dense_fit["B"] == pytest.approx(bscale, rel=1e-5)
    assert r.data_multipliers.iloc[0]["data_multiplier"] == pytest.approx(2.0, rel=1e-6)
    assert r.dense is None and any("two Dense sizes" in n for n in r.notes)


def test_grid_of_sizes_and_budgets_gets_a_joint_fit():
    rows = []
    for n in (50e6, 100e6, 200e6, 400e6):
        for k in (5, 10, 20, 40):
            loss = 1.8 + 480 * n ** -0.35 + 2000 * (k * n) ** -0.37
            rows.append({"arm": "dense", "size": f"{n:g}", "params_total": n,
                         "tokens": k * n, "loss": loss})
    table = pd.DataFrame(rows).assign(run_id=lambda d: [f"r{i}" for i in range(len(d))])
    res = analyse(Runs(table=finalize(table), source="grid"), FitConfig(bootstrap=50)).families
    j = res["default"].joint
    assert j.E == pytest.approx(1.8, rel=1e-3) and j.alpha == pytest.approx(0.35, rel=1e-3)
    assert j.beta == pytest.approx(0.37, rel=1e-3)
    assert res["default"].dense.n_points == 4  # L(N) on each size's largest budget
    assert len(res["default"].data_fits) == 4  # L(D) per size


def test_bad_input_one_dense_size_is_a_clear_error():
    table = pd.DataFrame({"run_id": ["a", "b", "c"], "arm": ["dense", "leviathan", "dense"],
                          "size": ["60M"] * 3, "params_total": [60e6, 59e6, 60e6],
                          "tokens": [1e9] * 3, "loss": [3.0, 2.9, 3.01]})
    with pytest.raises(AnalysisError, match="two Dense sizes") as err:
        analyse(Runs(table=finalize(table), source="one"), FitConfig(bootstrap=10))
    assert "dense: 2 runs" in str(err.value) and "leviathan: 1 runs" in str(err.value)


def test_bad_input_no_finished_runs():
    table = pd.DataFrame({"run_id": ["a", "b"], "arm": ["dense", "leviathan"],
                          "size": ["60M", "60M"], "params_total": [60e6, 59e6],
                          "tokens": [1e9] * 2, "loss": [np.nan, 3.0],
                          "status": ["FINISHED", "RUNNING"]})
    with pytest.raises(AnalysisError, match="no finished runs") as err:
        analyse(Runs(table=finalize(table), source="none"), FitConfig(bootstrap=10))
    assert "dense: 1 runs (1 finished, 0 usable)" in str(err.value)
    assert "leviathan: 1 runs (0 finished" in str(err.value)


def test_budget_ids_and_interval_helpers():
    assert budget_ids(np.array([1e9, 1.02e9, 2e9, np.nan]), 0.05).tolist() == [0, 0, 1, 0]
    lo, hi = percentile_interval(np.array([[1.0, np.nan], [3.0, np.nan], [np.inf, np.nan]]))
    assert lo[0] == pytest.approx(1.05) and np.isnan(lo[1]) and np.isnan(hi[1])
