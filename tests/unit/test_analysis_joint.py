"""The joint L(N, D) fit reproduces Epoch AI's Chinchilla refit within their standard errors."""

from __future__ import annotations

import time

import numpy as np
import pytest
from helpers import SHARED

from analysis.fit_scaling import main
from analysis.inputs.csv_input import load_chinchilla
from analysis.laws.joint import EPOCH_CHINCHILLA, bootstrap_joint, fit_joint

CHINCHILLA = SHARED / "reference" / "chinchilla_svg_extracted_data.csv"


@pytest.fixture(scope="module")
def chinchilla():
    if not CHINCHILLA.is_file():
        pytest.fail(f"missing {CHINCHILLA} (shared/reference beside the repo)")
    return load_chinchilla(CHINCHILLA)


@pytest.fixture(scope="module")
def chinchilla_fit(chinchilla):
    t0 = time.perf_counter()
    fit = fit_joint(chinchilla["N"], chinchilla["D"], chinchilla["loss"])
    return fit, time.perf_counter() - t0


def test_chinchilla_data_is_the_240_point_subset(chinchilla):
    assert len(chinchilla) == 240  # 245 minus the five highest losses
    assert chinchilla["loss"].max() < 4.0
    assert np.allclose(chinchilla["D"] * 6 * chinchilla["N"] > 0, True)


def test_chinchilla_joint_fit_within_epoch_standard_errors(chinchilla_fit):
    fit, seconds = chinchilla_fit
    assert fit.n_points == 240 and fit.n_starts == 4500
    for name, (value, se) in EPOCH_CHINCHILLA.items():
        got = getattr(fit, name)
        assert abs(got - value) <= se, f"{name} = {got:.4g}, Epoch {value} ± {se}"
    assert seconds < 30, f"the 4,500-start fit took {seconds:.1f}s"


def test_chinchilla_bootstrap_standard_errors_are_epochs_order(chinchilla, chinchilla_fit):
    fit, _ = chinchilla_fit
    se = bootstrap_joint(chinchilla["N"], chinchilla["D"], chinchilla["loss"], fit, n_rep=100)
    for name, (_, epoch_se) in EPOCH_CHINCHILLA.items():
        assert 0.5 * epoch_se < se[name]["se"] < 2.0 * epoch_se, (name, se[name])


def test_joint_fit_recovers_a_synthetic_law_and_effective_size():
    n = np.repeat(np.geomspace(50e6, 2e9, 5), 4)
    d = n * np.tile([5.0, 10.0, 20.0, 40.0], 5)
    loss = 1.75 + 400 * n ** -0.33 + 1500 * d ** -0.3
    fit = fit_joint(n, d, loss)
    assert fit.E == pytest.approx(1.75, rel=1e-4)
    assert fit.alpha == pytest.approx(0.33, rel=1e-3) and fit.beta == pytest.approx(0.3, rel=1e-3)
    l2 = 1.75 + 400 * (2 * 100e6) ** -0.33 + 1500 * 2e9 ** -0.3  # a run worth 2x at D = 2e9
    assert fit.effective_params(l2, 2e9) / 100e6 == pytest.approx(2.0, rel=1e-3)


def test_joint_fit_rejects_too_few_points():
    with pytest.raises(ValueError, match="needs >= 6 points"):
        fit_joint([1e8, 2e8], [1e9, 2e9], [3.0, 2.9])


@pytest.mark.slow
def test_cli_chinchilla_prints_fit_beside_epoch(tmp_path, capsys):
    assert main(["--chinchilla", str(CHINCHILLA), "--out", str(tmp_path), "--bootstrap",
                 "50"]) == 0
    out = capsys.readouterr().out
    assert "Chinchilla joint fit on 240 points" in out and "(Epoch 1.817 ± 0.026)" in out
    assert (tmp_path / "chinchilla_fit.json").stat().st_size > 0
