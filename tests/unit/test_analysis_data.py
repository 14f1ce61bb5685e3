"""Data scaling with the right asymptote, and the extrapolation mark on every reading (issue 24).

At one size the loss levels off at E + A·N^-alpha, not at E: with b pinned at 1.69 the data-2x
world (Leviathan's tokens worth a constant 2x) read 2.1-2.25x at 5-20 N falling to 1.4x at
100 N, beta 0.09 against a true 0.30. With E_N free (or the joint L(N, D) across sizes) the 2x
is recovered at every budget, with an interval and the † where D_eff lies beyond the Dense
budgets. Every other reading of an effective size (the per-run table, multipliers_by_run.csv,
the joint law's, the multiplier against tokens) carries the same mark.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from analysis.fit_scaling import main
from analysis.power.model import PowerModel
from analysis.power.simulate import data_world
from analysis.power.worlds import DATA_B, DATA_BETA, shapes


def assert_png(path) -> None:
    import matplotlib.image as mpimg

    img = mpimg.imread(path)
    assert img.shape[0] > 200 and img.shape[1] > 200 and float(img[..., :3].std()) > 0.01


INTERFACE = ["arm", "size", "tokens", "loss", "d_eff", "data_multiplier", "data_multiplier_lo",
             "data_multiplier_hi", "extrapolated"]


def fit_csv(tmp_path, df: pd.DataFrame, *args, curves: pd.DataFrame | None = None,
            bootstrap: int = 200):
    df.to_csv(tmp_path / "runs.csv", index=False)
    argv = ["--csv", str(tmp_path / "runs.csv"), "--out", str(tmp_path / "fit"), "--bootstrap",
            str(bootstrap), *args]
    if curves is not None:
        curves.to_csv(tmp_path / "curves.csv", index=False)
        argv += ["--curves", str(tmp_path / "curves.csv")]
    assert main(argv) == 0
    out = tmp_path / "fit"
    return out, json.loads((out / "fit.json").read_text())["families"]["default"]


def test_constant_2x_data_multiplier_is_recovered_at_every_budget(tmp_path):
    out, fam = fit_csv(tmp_path, data_world(2.0))  # one size, 5 N ... 100 N, no noise
    m = pd.read_csv(out / "data_multipliers.csv")
    assert set(INTERFACE) <= set(m.columns)
    assert len(m) == 5 and set(m["arm"]) == {"leviathan"}  # one row per non-Dense run
    assert np.allclose(m["data_multiplier"], 2.0, rtol=0.05), m["data_multiplier"].tolist()
    n = m["dense_params"].iloc[0]
    per_n = (m["tokens"] / n).round().astype(int).tolist()
    assert per_n == [5, 10, 20, 50, 100]
    # 5-20 N read inside the Dense budgets; 100 N needs D_eff = 200 N, twice the longest
    assert not m.loc[m["tokens"] <= 20.5 * n, "extrapolated"].any()
    top = m.iloc[-1]
    assert top["extrapolated"] and top["extrapolation"] == pytest.approx(2.0, rel=0.05)
    assert (m["extrapolated"] == (m["d_eff"] > m["dense_tokens_hi"] * (1 + 1e-6))).all()
    dense = next(f for f in fam["data_fits"] if f["arm"] == "dense")
    assert dense["beta"] == pytest.approx(DATA_BETA, rel=0.02)  # not 0.09
    # E_N = b + A·N^-alpha (the toy worlds' A): where 109M levels off, far above b = 1.69
    truth = PowerModel()
    e_n = truth.b + (truth.top_loss - truth.b) * (shapes()["params"].min() / n) ** truth.alpha
    assert dense["E_N"] == pytest.approx(e_n, rel=1e-3) and e_n > 3.0
    assert dense["E_N_ci"][0] - 1e-6 <= e_n <= dense["E_N_ci"][1] + 1e-6
    summary = (out / "summary.md").read_text()
    assert "L(D) = E_N + B·D^-β (E_N free), dense 109M" in summary
    assert "| 109M | leviathan | 10.9B |" in summary and "†2.00× above" in summary
    assert "† extrapolated: D_eff lies beyond the Dense token budgets" in summary
    assert "**fit only (excludes run-to-run noise)**: one seed" in summary  # one seed
    assert len(fam["data_multipliers"]) == 5
    assert_png(out / "data_scaling.png")  # the L(D) read, arrows to D_eff, † beyond


def test_data_multiplier_intervals_include_seed_noise(tmp_path):
    out, _ = fit_csv(tmp_path, data_world(2.0, seeds=3, noise=0.002, seed=1), bootstrap=400)
    m = pd.read_csv(out / "data_multipliers.csv")
    assert len(m) == 15 and (m["interval"] == "seeds").all()
    covered = (m["data_multiplier_lo"] <= 2.0) & (2.0 <= m["data_multiplier_hi"])
    assert covered.mean() >= 0.8, m[["tokens", "data_multiplier", "data_multiplier_lo",
                                     "data_multiplier_hi"]]
    assert (m["data_multiplier_hi"] / m["data_multiplier_lo"] < 1.8).all()  # informative
    mean = np.exp(np.log(m["data_multiplier"]).groupby(m["tokens"]).mean())
    assert np.allclose(mean, 2.0, rtol=0.05), mean  # the seeds' mean at every budget
    assert m.groupby("tokens")["extrapolated"].all().iloc[-1]  # 100 N: always beyond
    summary = (out / "summary.md").read_text()
    assert "run-to-run noise of both arms included" in summary
    assert "run-to-run noise from the sweep's seeds (per arm), as the headline" in summary


def test_joint_law_reads_data_multipliers_across_sizes(tmp_path):
    out, fam = fit_csv(tmp_path, data_world(2.0, sizes=("60M", "164M", "421M")))
    assert fam["joint"]["beta"] == pytest.approx(DATA_BETA, rel=0.01)
    m = pd.read_csv(out / "data_multipliers.csv")
    assert len(m) == 15 and (m["law"] == "joint L(N, D)").all()
    assert np.allclose(m["data_multiplier"], 2.0, rtol=0.05)
    top = m[m["tokens"] / m["dense_params"] > 99]
    assert top["extrapolated"].all() and np.allclose(top["extrapolation"], 2.0, rtol=0.05)
    assert not m[m["tokens"] / m["dense_params"] < 21]["extrapolated"].any()
    assert "| joint L(N, D) |" in (out / "summary.md").read_text()
    assert_png(out / "data_scaling.png")
    by_run = pd.read_csv(out / "multipliers_by_run.csv")  # one seed, no level: no interval
    assert (by_run["interval_joint"] == "fit").all() and by_run["multiplier_joint_lo"].isna().all()
    assert "intervals: fit only (excludes run-to-run noise), none shown" in (
        out / "summary.md").read_text()


def test_two_budgets_without_a_joint_law_give_reasons_not_numbers(tmp_path):
    df = data_world(2.0, budgets=(10.0, 20.0))
    out, fam = fit_csv(tmp_path, df)
    m = pd.read_csv(out / "data_multipliers.csv")
    assert len(m) == 2 and m["data_multiplier"].isna().all()
    assert m["reason"].str.contains("three or more distinct x").all()
    assert not m["extrapolated"].any()
    assert "L(D) dense 109M: E_N free needs three or more token budgets; found 2" in fam["notes"]


E, A, ALPHA, B_D, BETA = 1.69, 400.0, 0.34, 410.0, 0.30
SIZES = {"50M": 50e6, "100M": 100e6, "200M": 200e6, "400M": 400e6}


def loss(n, d, worth=1.0):
    return E + A * (worth * n) ** -ALPHA + B_D * d ** -BETA


def ln_loss(n, t=None, worth=1.0):
    """An L(N) world (no data term; along a run the gap to b shrinks by the same factor for
    every size, so that L(N) at any t is a power law with b = E and N_eff = worth x N)."""
    return E + A * (worth * n) ** -ALPHA * (1.0 if t is None else (t / 1e9) ** -0.1)


def test_per_run_table_and_multipliers_by_run_mark_extrapolation(tmp_path):
    rows = [{"arm": arm, "size": s, "params": n, "tokens": 20 * n,
             "loss": ln_loss(n, worth=w)} for s, n in SIZES.items()
            for arm, w in (("dense", 1.0), ("leviathan", 1.5))]
    out, _ = fit_csv(tmp_path, pd.DataFrame(rows), bootstrap=50)
    m = pd.read_csv(out / "multipliers_by_run.csv").set_index("size")
    assert {"extrapolated", "extrapolation"} <= set(m.columns)
    assert m.loc["400M", "extrapolated"]  # N_eff 600M > the largest Dense size 400M
    assert m.loc["400M", "extrapolation"] == pytest.approx(1.5, rel=0.01)
    inside = m.drop(index="400M")
    assert not inside["extrapolated"].any() and (inside["extrapolation"] == 1.0).all()
    summary = (out / "summary.md").read_text()
    table = summary[summary.index("### The paper's table"):]
    assert "| 400M | 400M |" in table and "†1.50× above |" in table
    assert "† extrapolated: N_eff lies outside the fitted Dense sizes" in table
    assert table.count("†1.") == 1


def test_joint_law_multipliers_carry_the_mark(tmp_path):
    rows = [{"arm": "dense", "size": s, "params": n, "tokens": k * n, "loss": loss(n, k * n)}
            for s, n in SIZES.items() for k in (5, 10, 20, 40)]
    rows += [{"arm": "leviathan", "size": s, "params": n, "tokens": 40 * n,
              "loss": loss(n, 40 * n, 2.0)} for s, n in SIZES.items()]
    out, _ = fit_csv(tmp_path, pd.DataFrame(rows), bootstrap=50)
    m = pd.read_csv(out / "multipliers_by_run.csv").set_index("size")
    assert np.allclose(m["multiplier_joint"], 2.0, rtol=1e-3)
    assert m.loc["400M", "extrapolated_joint"]  # 800M, above the largest Dense N
    assert m.loc["400M", "extrapolation_joint"] == pytest.approx(2.0, rel=1e-3)
    assert not m.loc[["50M", "100M"], "extrapolated_joint"].any()
    summary = (out / "summary.md").read_text()
    assert "400M at 16B tokens 2x †2.00×" in summary


def test_multiplier_against_tokens_carries_the_mark(tmp_path):
    runs, curves = [], []
    for s, n in SIZES.items():
        for arm, w in (("dense", 1.0), ("leviathan", 1.5)):
            run = f"{arm}-{s}"
            for k in range(1, 9):
                curves.append({"run": run, "tokens": 20 * n * k / 8,
                               "loss": ln_loss(n, 20 * n * k / 8, w)})
            runs.append({"run": run, "arm": arm, "size": s, "params": n, "tokens": 20 * n,
                         "loss": curves[-1]["loss"]})
    out, _ = fit_csv(tmp_path, pd.DataFrame(runs), curves=pd.DataFrame(curves), bootstrap=30)
    t = pd.read_csv(out / "multiplier_vs_tokens.csv")
    assert {"extrapolated", "extrapolation", "n_dense_max"} <= set(t.columns)
    # at every t every Dense size reaches it only up to its own budget: the largest Dense N at t
    assert (t["extrapolated"] == (t["n_eff"] > t["n_dense_max"] * (1 + 1e-6))).all()
    top = t[t["size"] == "400M"]
    assert top["extrapolated"].all() and np.allclose(top["extrapolation"], 1.5, rtol=0.01)
    assert not t[t["size"] == "50M"]["extrapolated"].any()
    summary = (out / "summary.md").read_text()
    line = next(li for li in summary.splitlines() if li.startswith("Multiplier at the last"))
    assert "400M 1.5x at 4B †1.50× above" in line and "50M 1.5x at 1B," in line
    assert (out / "multiplier_vs_tokens.png").stat().st_size > 10000
    assert not math.isnan(t["extrapolation"].max())


def test_one_seed_data_multipliers_cover_with_a_given_level_and_say_fit_only_without(tmp_path):
    """Issue 37.5: on the one-seed data-scaling design (one size, 5 N ... 100 N, noise 0.5%) the
    data multipliers read fit.seed_noise as the headline does: with the level given, each
    budget's interval covers the true 2x (400 ladders through the analysis: 92-95% at every
    budget, docs/coverage/); without one they are labelled fit only and cover ~50-80%."""
    from analysis.config import FitConfig
    from analysis.inputs.csv_input import load_csv
    from analysis.readings.data_multipliers import data_multipliers

    data_world(2.0).to_csv(tmp_path / "runs.csv", index=False)  # noise-free: the truth
    base = load_csv(tmp_path / "runs.csv").table
    rng = np.random.default_rng(5)
    cover = {}
    for level in (0.005, None):
        cfg = FitConfig(bootstrap=80, seed_noise={"all": level} if level else {})
        rows = []
        for _ in range(60 if level else 20):
            fam = base.assign(loss=base["loss"] * np.exp(0.005 * rng.standard_normal(len(base))))
            rows.append(data_multipliers(None, fam, cfg, rng))
        m = pd.concat(rows)
        assert set(m["interval"]) == {"given" if level else "fit"}
        hit = (m["data_multiplier_lo"] <= 2.0) & (2.0 <= m["data_multiplier_hi"])
        cover[level] = hit.groupby((m["tokens"] / m["dense_params"]).round()).mean()
    assert (cover[0.005] >= 0.8).all() and cover[0.005].mean() >= 0.9, cover[0.005]
    assert cover[None].mean() < 0.85, cover[None]  # the fit's spread alone


def test_per_run_table_carries_each_sizes_seed_noise_and_covers(tmp_path):
    """Issue 37.5: each Leviathan run's multiplier in the paper's per-run table is drawn with
    the headline's noise at its size (the Dense law refitted on every replicate, the run's own
    loss redrawn at its (arm, size)'s level): in the power model's world (1% noise, Leviathan
    worth 1.1x, two seeds a size, Dense one borrowing their level) its intervals cover the truth
    at every size (it resampled the run's two seeds before: 82% at 421M); the full measurement
    on the shipped design is in docs/coverage/."""
    from analysis.config import FitConfig
    from analysis.power.worlds import shapes
    from analysis.readings.paper_view import paper_view

    s = shapes("v1")
    s = s[s["arm"].isin(["dense", "leviathan"])]
    model = PowerModel()
    dense_n = s[s["arm"] == "dense"].set_index("size")["params"]
    a = model.scale(float(dense_n.min()))
    runs = pd.concat([s.assign(seed=str(k)) for k in range(2)], ignore_index=True)
    runs = runs[(runs["arm"] == "leviathan") | (runs["seed"] == "0")].reset_index(drop=True)
    worth = np.where(runs["arm"] == "leviathan", 1.1, 1.0)
    runs = runs.assign(run_id=runs["arm"] + runs["size"] + runs["seed"], name="",
                       pair=runs["size"] + runs["seed"],
                       clean=model.loss(worth * runs["size"].map(dense_n).to_numpy(), a))
    truth = 1.1 * runs["size"].map(dense_n) / runs["params"]
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(60):
        ladder = runs.assign(loss=runs["clean"] * (1 + 0.01 * rng.standard_normal(len(runs))))
        lev = ladder["arm"] == "leviathan"
        m = paper_view(ladder[~lev], ladder[lev], FitConfig(bootstrap=80), rng).multipliers
        t = m["run_id"].map(dict(zip(ladder[lev]["run_id"], truth[lev], strict=True)))
        rows.append(m.assign(covers=(m["multiplier_lo"] <= t) & (t <= m["multiplier_hi"])))
    m = pd.concat(rows)
    assert set(m["interval"]) == {"seeds"} and (m["seed_noise"] > 0).all()
    cover = m.groupby("size")["covers"].mean()
    assert (cover >= 0.86).all() and cover.mean() >= 0.9, cover


def test_joint_law_multipliers_carry_the_headline_noise(tmp_path):
    """The joint L(N, D)'s multipliers in the per-run table get an interval drawn with the
    headline's noise (two seeds: the sweep's seeds) that covers the truth (one seed without a
    level: none, labelled fit only: test_joint_law_reads_data_multipliers_across_sizes)."""
    world = data_world(2.0, sizes=("60M", "164M", "421M"), seeds=2, noise=0.003, seed=3)
    out, _ = fit_csv(tmp_path, world, bootstrap=100)
    m = pd.read_csv(out / "multipliers_by_run.csv")
    assert (m["interval_joint"] == "seeds").all()
    assert ((m["multiplier_joint_lo"] <= m["multiplier_joint"])
            & (m["multiplier_joint"] <= m["multiplier_joint_hi"])).all()
    # the truth: Leviathan's tokens are worth 2x, so at its own D it is worth the N whose loss
    # with D tokens equals Dense's with 2D
    model = PowerModel()
    dense_n = world[world["arm"] == "dense"].groupby("size")["params"].first()
    scale, n = model.scale(float(shapes()["params"].min())), m["size"].map(dense_n).to_numpy()
    d = m["tokens"].to_numpy()
    gap = scale * n ** -model.alpha + DATA_B * ((2 * d) ** -DATA_BETA - d ** -DATA_BETA)
    truth = (scale / gap) ** (1 / model.alpha) / m["params"]
    hit = (m["multiplier_joint_lo"] <= truth) & (truth <= m["multiplier_joint_hi"])
    assert hit.mean() >= 0.8, pd.DataFrame({"truth": truth, "lo": m["multiplier_joint_lo"],
                                            "hi": m["multiplier_joint_hi"]})
    assert "intervals: run-to-run noise from the sweep's seeds (per arm), the law refitted" in (
        out / "summary.md").read_text()
