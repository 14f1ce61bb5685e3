"""b checked against the data (issue 24.5, acceptance d): the summary shows the Dense L(N) fitted
with b free, with its interval, beside the b used, and warns when that b lies outside it; with
fit.b=free the fit recovers the world's b. Toy worlds whose loss follows total parameters
(L = b + A·N^-0.34, 3 seeds, 0.2% seed noise) on the real v1 shapes, through the CLI."""

from __future__ import annotations

import json

import pytest

from analysis.fit_scaling import main
from analysis.power.simulate import toy_world

WARNING = "**Warning: b = 1.69 is rejected by the free-b fit (p = "


def fit(tmp_path, capsys, b: float, *args: str, seeds: int = 3) -> tuple[dict, str]:
    csv = tmp_path / f"b{b}.csv"
    if not csv.exists():
        toy_world("params", b=b, noise=0.002, seeds=seeds).to_csv(csv, index=False)
    out = tmp_path / f"fit{len(list(tmp_path.iterdir()))}"
    assert main(["--csv", str(csv), "--out", str(out), "--bootstrap", "400", *args]) == 0
    family = json.loads((out / "fit.json").read_text())["families"]["default"]
    captured = capsys.readouterr()
    return family, captured.out + captured.err


def test_b_1_9_world_warns_and_fit_b_free_recovers_it(tmp_path, capsys):
    fam, printed = fit(tmp_path, capsys, 1.9)
    check = fam["b_check"]
    assert check["b_fixed"] and check["b_used"] == 1.69 and check["outside"]
    assert check["b_lo"] <= 1.9 <= check["b_hi"] and check["interval"] == "seeds"
    assert "b check: the Dense L(N) with b free gives b = " in printed
    assert "beside b = 1.69 used here" in printed
    assert WARNING in printed  # in summary.md, printed
    assert "family 'default': b = 1.69 is rejected" in printed  # and in the log

    fam, printed = fit(tmp_path, capsys, 1.9, "fit.b=free")
    dense = fam["dense"]
    assert dense["b_fixed"] is False and dense["b"] == pytest.approx(1.9, abs=0.05)
    check = fam["b_check"]  # the same free fit, with its seed-noise interval
    assert check["b"] == pytest.approx(dense["b"], rel=1e-9)
    assert check["b_lo"] <= 1.9 <= check["b_hi"] and not check["b_fixed"]
    assert "Hoffmann et al.'s, which fit.b=free replaces" in printed


def test_b_1_69_world_gives_no_warning(tmp_path, capsys):
    fam, printed = fit(tmp_path, capsys, 1.69)
    check = fam["b_check"]
    assert check["b_lo"] <= 1.69 <= check["b_hi"] and not check["outside"]
    assert "b check: the Dense L(N) with b free" in printed and WARNING not in printed


def test_one_seed_interval_is_over_the_sizes_and_says_so(tmp_path, capsys):
    fam, printed = fit(tmp_path, capsys, 1.9, seeds=1)
    assert fam["b_check"]["interval"] == "fit"
    assert "fit only (excludes run-to-run noise): the free fit's own scatter" in printed


def dense_ladders(n: int, b: float, seed: int = 0):
    """n Dense ladders of the v1 sizes (two seeds at the paired sizes, one on the rungs 752M and
    989M, as the isoparametric grid ran them), L = b + A·N^-0.34 times (1 + 0.01 z)."""
    import numpy as np
    import pandas as pd

    from analysis.power.model import PowerModel
    from analysis.power.worlds import shapes

    d = shapes("v1")
    d = d[d["arm"] == "dense"]
    model = PowerModel(b=b)
    clean = model.loss(d["params"].to_numpy(float), model.scale(float(d["params"].min())))
    seeds = np.where(d["size"].isin(["752M", "989M"]), 1, 2)
    base = pd.DataFrame({"arm": "dense", "size": np.repeat(d["size"].to_numpy(), seeds),
                         "params": np.repeat(d["params"].to_numpy(float), seeds),
                         "tokens": np.repeat(d["tokens"].to_numpy(float), seeds),
                         "clean": np.repeat(clean, seeds)})
    base["seed"] = base.groupby("size").cumcount().astype(str)
    base["run_id"] = base["size"] + "-s" + base["seed"]
    rng = np.random.default_rng(seed)
    for _ in range(n):
        yield base.assign(loss=base["clean"] * (1 + 0.01 * rng.standard_normal(len(base)))), rng


def test_b_check_false_alarms_are_calibrated_and_it_states_its_power():
    """Where b = 1.69 is true the check's p-value is uniform, so it warns in 5% of ladders (the
    percentile interval it had warned in 11-15%); it states its power against b = 1.80. The full
    measurement (400 ladders of the shipped isoparametric design through the analysis) is
    docs/coverage/secondary_readings.py's record."""
    import numpy as np

    from analysis.config import FitConfig
    from analysis.readings.b_check import check_b, power_text

    cfg = FitConfig(bootstrap=80)
    checks = [check_b(ladder, cfg, rng) for ladder, rng in dense_ladders(40, 1.69)]
    p = np.array([c["p"] for c in checks])
    warns = np.mean([c["outside"] for c in checks])
    assert warns <= 0.125, warns  # 5% nominal; 0.125 = 5 of 40
    assert 0.3 <= np.mean(p < 0.5) <= 0.7 and 0.1 <= np.mean(p < 0.25) <= 0.42, np.sort(p)
    assert all(c["interval"] == "seeds" and c["b_lo"] <= c["b"] <= c["b_hi"] for c in checks)
    power = np.array([c["power"] for c in checks])
    assert np.all((0 <= power) & (power <= 1)) and checks[0]["power_b"] == 1.80
    assert power_text(checks[0]).startswith("a b of 1.80 would be seen in ")
    assert power_text(checks[0]).endswith("% of ladders of this design (80 simulated)")
