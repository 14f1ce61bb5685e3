"""b checked against the data (issue 24.5, acceptance d): the summary shows the Dense L(N) fitted
with b free, with its interval, beside the b used, and warns when that b lies outside it; with
fit.b=free the fit recovers the world's b. Toy worlds whose loss follows total parameters
(L = b + A·N^-0.34, 3 seeds, 0.2% seed noise) on the real v1 shapes, through the CLI."""

from __future__ import annotations

import json

import pytest

from analysis.fit_scaling import main
from analysis.power.simulate import toy_world

WARNING = "**Warning: b = 1.69 lies outside the free-b fit's 95% interval"


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
    assert "family 'default': b = 1.69 lies outside" in printed  # and in the log

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
    assert "over the Dense sizes, one seed: no run-to-run noise" in printed
