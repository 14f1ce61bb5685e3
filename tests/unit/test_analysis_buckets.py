"""Rare tokens (issue 24.7): quantile buckets and log-spaced training-count buckets read side by
side, each per-bucket Leviathan/Dense perplexity ratio with a seed interval. Synthetic worlds
where the per-bucket gain is known, through the library and the CLI (--csv --buckets)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis.fit_scaling import main
from analysis.inputs.runs import bucket_order
from analysis.readings.buckets import bucket_ratios, scheme_of, seed_interval

SIZES = {"50M": 5e7, "100M": 1e8, "200M": 2e8}
QUANTILE = [f"q{10 * i:02d}-{10 * i + 10}" for i in range(10)]
COUNT = ["0", "1e0-1e1", "1e1-1e2", "1e2-1e3", "1e3-1e4", "1e4-1e5"]
GAIN = {name: -0.8 * (len(names) - i) / len(names)  # log-ratio: rarest gains most
        for names in (QUANTILE, COUNT) for i, name in enumerate(names)}


def world(seeds: int, noise: float, seed: int = 0, *, shared: float = 0.0):
    """runs.csv and buckets.csv rows: Dense and Leviathan at each size and seed, every run
    logging both schemes; L_lev = L_dense + GAIN[bucket] (+ noise). `shared`: seed-level noise
    both arms of a pair share (the pairing removes it)."""
    rng = np.random.default_rng(seed)
    runs, buckets = [], []
    for size, n in SIZES.items():
        for s in range(seeds):
            common = {b: rng.normal(0, shared) for b in GAIN}
            for arm in ("dense", "leviathan"):
                rid = f"{arm}-{size}-s{s}"
                loss = 1.69 + 400 * (n * (2 if arm == "leviathan" else 1)) ** -0.34
                runs.append({"run": rid, "arm": arm, "size": size, "seed": s, "params": n,
                             "tokens": 20 * n, "loss": loss})
                for i, (b, g) in enumerate(GAIN.items()):
                    mean = 8.0 - 0.5 * (i % 10) + (g if arm == "leviathan" else 0.0)
                    buckets.append({"run": rid, "bucket": b,
                                    "loss": mean + common[b] + rng.normal(0, noise)})
    return pd.DataFrame(runs), pd.DataFrame(buckets)


def ratios(seeds, noise, seed=0, cfg=None, **kw):
    runs, buckets = world(seeds, noise, seed, **kw)
    table = runs.rename(columns={"run": "run_id", "params": "params_total"}).assign(
        seed=runs["seed"].astype(str))
    b = buckets.rename(columns={"run": "run_id"})
    b["order"] = [bucket_order(n, i) for i, n in enumerate(b["bucket"])]
    return bucket_ratios(b, table, cfg=cfg)


def test_scheme_is_read_from_the_bucket_name():
    assert [scheme_of(n) for n in ("q00-10", "q90-100", "0", "1e0-1e1", "2-4", "b1_1-10")] == \
        ["quantile", "quantile", "count", "count", "count", "count"]


def test_both_schemes_side_by_side_in_order_with_exact_noise_free_ratios():
    r = ratios(seeds=1, noise=0.0)
    assert set(r["scheme"]) == {"quantile", "count"}
    for scheme, names in (("quantile", QUANTILE), ("count", COUNT)):
        g = r[(r["scheme"] == scheme) & (r["size"] == "100M")]
        assert list(g["bucket"]) == names  # rare -> frequent within each scheme
        assert np.allclose(g["ppl_ratio"], np.exp([GAIN[n] for n in names]))
    assert r["ppl_ratio_lo"].isna().all() and set(r["interval"]) == {"fit"}  # no noise given


def test_seed_intervals_cover_the_true_ratio_about_as_often_as_they_say():
    hits = total = 0
    for seed in range(20):
        r = ratios(seeds=4, noise=0.02, seed=seed)
        truth = np.exp(r["bucket"].map(GAIN))
        hits += int(((r["ppl_ratio_lo"] <= truth) & (truth <= r["ppl_ratio_hi"])).sum())
        total += len(r)
    assert set(r["interval"]) == {"paired seeds"} and (r["n_seeds"] == 4).all()
    assert 0.90 <= hits / total <= 0.99, hits / total  # nominal 95%


def test_pairing_removes_the_noise_both_arms_of_a_seed_share():
    paired = ratios(seeds=4, noise=0.005, shared=0.1)
    width = np.log(paired["ppl_ratio_hi"] / paired["ppl_ratio_lo"])
    assert width.max() < 0.05  # the shared 0.1 noise cancels in the per-seed difference
    arm = pd.Series([1.0, 1.2, 0.9, 1.1], index=["0", "1", "2", "3"])
    unpaired = seed_interval(arm, arm.set_axis(["a", "b", "c", "d"]) - 0.1, 0.95)
    assert unpaired[0] == pytest.approx(0.1) and unpaired[4] == "Welch (unpaired seeds)"
    assert unpaired[1] < 0 < 0.2 < unpaired[2]  # unpaired, the seeds' spread counts in full
    paired_same = seed_interval(arm, arm - 0.1, 0.95)  # the same numbers, paired by seed
    assert paired_same[4] == "paired seeds"
    assert paired_same[1] == pytest.approx(0.1) and paired_same[2] == pytest.approx(0.1)


def test_cli_reads_buckets_csv_and_reports_both_schemes_with_intervals(tmp_path):
    runs, buckets = world(seeds=3, noise=0.01)
    runs.to_csv(tmp_path / "runs.csv", index=False)
    buckets.to_csv(tmp_path / "buckets.csv", index=False)
    out = tmp_path / "fit"
    assert main(["--csv", str(tmp_path / "runs.csv"), "--buckets", str(tmp_path / "buckets.csv"),
                 "--out", str(out), "--bootstrap", "50"]) == 0
    r = pd.read_csv(out / "bucket_ratios.csv", dtype={"bucket": str})
    assert {"scheme", "ppl_ratio", "ppl_ratio_lo", "ppl_ratio_hi", "n_seeds"} <= set(r.columns)
    assert len(r) == len(SIZES) * len(GAIN)
    rare = r[r["bucket"] == "0"]  # never-seen tokens: the largest gain
    assert np.allclose(rare["ppl_ratio"], math.exp(GAIN["0"]), rtol=0.03)
    assert ((rare["ppl_ratio_lo"] < rare["ppl_ratio"]) & (rare["ppl_ratio"]
                                                          < rare["ppl_ratio_hi"])).all()
    summary = (out / "summary.md").read_text()
    assert "by training-frequency quantile (equal shares" in summary
    assert "by training count (log-spaced bins" in summary
    assert "| Size | Arm | 0 | 1e0-1e1 | 1e1-1e2 | 1e2-1e3 | 1e3-1e4 | 1e4-1e5 |" in summary
    assert "| Size | Arm | q00-10 | q10-20 |" in summary
    assert "95% interval over seeds" in summary
    assert (out / "rare_tokens.png").stat().st_size > 10000


def test_buckets_csv_must_join_the_runs(tmp_path, capsys):
    runs, buckets = world(seeds=1, noise=0.0)
    runs.to_csv(tmp_path / "runs.csv", index=False)
    buckets.assign(run="nosuchrun").to_csv(tmp_path / "buckets.csv", index=False)
    assert main(["--csv", str(tmp_path / "runs.csv"), "--buckets", str(tmp_path / "buckets.csv"),
                 "--bootstrap", "10"]) == 2
    assert "run ['nosuchrun'] not in" in capsys.readouterr().err


def test_one_seed_ratios_read_the_headlines_noise():
    """Issue 37.5: with one seed a bucket ratio's interval comes from the level the headline
    reads (fit.seed_noise), and is labelled fit only without one; the true ratio is covered."""
    from analysis.config import FitConfig

    hits = total = 0
    for seed in range(6):
        r = ratios(seeds=1, noise=0.02, seed=seed,
                   cfg=FitConfig(bootstrap=200, seed_noise={"all": 0.0057}))  # >= 0.02 nats
        truth = np.exp(r["bucket"].map(GAIN))
        hits += int(((r["ppl_ratio_lo"] <= truth) & (truth <= r["ppl_ratio_hi"])).sum())
        total += len(r)
    assert set(r["interval"]) == {"given"}, set(r["interval"])
    assert 0.85 <= hits / total <= 1.0, hits / total
    r = ratios(seeds=1, noise=0.02, cfg=FitConfig(bootstrap=50))
    assert set(r["interval"]) == {"fit"} and r["ppl_ratio_lo"].isna().all()
