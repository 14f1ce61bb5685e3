"""`python -m analysis.fit_scaling --csv`: outputs, plots, bad input, --params body, --b free."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import REPO

from analysis.fit_scaling import main

SIZES = [60e6, 109e6, 200e6, 300e6, 421e6]


def write_csv(path: Path, rows: list[dict]) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def paper_like_rows(multiplier: float = 2.0) -> list[dict]:
    rows = []
    for n in SIZES:
        size = f"{n / 1e6:g}M"
        rows.append({"arm": "dense", "size": size, "pair": size, "params": n,
                     "params_body": 0.6 * n, "tokens": 20 * n, "loss": 400 * n ** -0.34 + 1.69})
        nl = 0.99 * n
        rows.append({"arm": "leviathan", "size": size, "pair": size, "params": nl,
                     "params_body": 0.6 * n, "tokens": 20 * n,
                     "loss": 400 * (multiplier * nl) ** -0.34 + 1.69})
    return rows


def assert_png(path: Path) -> None:
    import matplotlib.image as mpimg

    assert path.is_file() and path.stat().st_size > 5000, path
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 200
    assert float(np.std(img[..., :3])) > 0.01  # not a blank canvas


def test_csv_end_to_end_outputs(tmp_path, capsys):
    rows = paper_like_rows()
    rows += [
        {"arm": "leviathan", "size": "60M", "params": 59e6, "tokens": 1.2e9, "loss": 1.6},
        {"arm": "dense", "size": "109M", "params": 109e6, "tokens": 2e9, "loss": float("nan")},
        {"arm": "dense", "size": "200M", "params": 200e6, "tokens": 1e9, "loss": 2.5,
         "status": "RUNNING"},
    ]
    csv = write_csv(tmp_path / "runs.csv", rows)
    out = tmp_path / "fit"
    assert main(["--csv", str(csv), "--out", str(out), "--bootstrap", "200"]) == 0
    printed = capsys.readouterr().out
    assert "Multiplier (95% CI)" in printed

    fit = json.loads((out / "fit.json").read_text())
    fam = fit["families"]["default"]
    assert fam["dense"]["alpha"] == pytest.approx(0.34, rel=1e-6)
    assert fam["dense"]["b"] == 1.69 and fam["dense"]["b_fixed"] is True
    assert len(fam["dense"]["alpha_ci"]) == 2
    assert fam["shared_exponent"]["multiplier"] == pytest.approx(2.0, rel=1e-6)
    assert {e["reason"].split(" ")[0] for e in fit["excluded"]} == {"loss", "final", "unfinished"}

    m = pd.read_csv(out / "multipliers_by_run.csv")  # the paper's table: one row per run
    for col in ("params", "loss", "n_eff", "multiplier", "multiplier_lo", "multiplier_hi"):
        assert col in m.columns
    ok = m[m["reason"].isna()]
    assert len(ok) == 5 and np.allclose(ok["multiplier"], 2.0, rtol=1e-6)
    bad = m[m["reason"].notna()]
    assert len(bad) == 1 and "N_eff undefined" in bad["reason"].iloc[0]
    assert np.isnan(bad["multiplier"].iloc[0])
    # multipliers.csv: one row per (arm, size, basis); no flops column: no compute matching
    mm = pd.read_csv(out / "multipliers.csv").query("size != 'trend'")
    for col in ("arm", "size", "params", "loss", "basis", "n_eff", "multiplier",
                "multiplier_lo", "multiplier_hi", "extrapolated"):
        assert col in mm.columns
    assert sorted(set(mm["basis"])) == ["body", "params"] and len(mm) == 2 * 5
    by_params = mm[mm["basis"] == "params"].set_index("size")
    assert np.allclose(by_params.drop(index="60M")["multiplier"], 2.0, rtol=1e-6)
    assert by_params.loc["60M", "n_seeds"] == 2  # the 1.6 run is one of its two seeds

    summary = (out / "summary.md").read_text()
    assert "| Size | N | Dense loss | Leviathan loss | N_eff | Multiplier (95% CI) |" in summary
    assert "| 60M | 59.4M |" in summary and "2.00x" in summary
    assert "## Excluded runs" in summary and "unfinished (status RUNNING)" in summary
    assert "final validation loss is missing or NaN" in summary
    assert "Shared exponent" in summary and "b=1.82" in summary
    assert "compute matching: off (no flops column" in summary
    assert "LR selection: off" in summary
    assert_png(out / "scaling.png")
    assert not (out / "rare_tokens.png").exists()  # no bucket losses in a CSV


def test_csv_default_out_dir_is_beside_the_csv(tmp_path):
    csv = write_csv(tmp_path / "paper.csv", paper_like_rows(1.5))
    assert main(["--csv", str(csv), "--bootstrap", "50"]) == 0
    m = pd.read_csv(tmp_path / "paper_fit" / "multipliers_by_run.csv")
    assert np.allclose(m["multiplier"], 1.5, rtol=1e-6)
    m = pd.read_csv(tmp_path / "paper_fit" / "multipliers.csv").query("size != 'trend'")
    assert np.allclose(m[m["basis"] == "params"]["multiplier"], 1.5, rtol=1e-6)


def test_a_refit_keeps_one_previous_generation(tmp_path, capsys):
    """Each fit moves the last one's outputs to <out>/previous/ (replacing the one before);
    a fit that fails moves nothing."""
    csv = write_csv(tmp_path / "runs.csv", paper_like_rows())
    out = tmp_path / "fit"

    def fit(seed: int, path: Path = csv) -> int:
        return main(["--csv", str(path), "--out", str(out), "--bootstrap", "10",
                     "--seed", str(seed)])

    def seed_in(folder: Path) -> int:
        return json.loads((folder / "fit.json").read_text())["config"]["seed"]

    assert fit(1) == 0 and not (out / "previous").exists()
    assert fit(2) == 0 and (seed_in(out), seed_in(out / "previous")) == (2, 1)
    bad = write_csv(tmp_path / "bad.csv", [r for r in paper_like_rows() if r["size"] == "60M"])
    assert fit(3, bad) == 2 and (seed_in(out), seed_in(out / "previous")) == (2, 1)
    assert fit(4) == 0 and (seed_in(out), seed_in(out / "previous")) == (4, 2)
    assert not (out / "previous" / "previous").exists()
    assert {p.name for p in (out / "previous").iterdir()} == {p.name for p in out.iterdir()
                                                              if p.name != "previous"}
    hashes = {json.loads((d / "fit.json").read_text())["config_hash"] for d in
              (out, out / "previous")}
    assert len(hashes) == 2 and all(len(h) == 64 for h in hashes)


def test_params_body_uses_non_embedding_counts(tmp_path):
    csv = write_csv(tmp_path / "runs.csv", paper_like_rows())
    out = tmp_path / "fit"
    assert main(["--csv", str(csv), "--out", str(out), "--params", "body",
                 "--bootstrap", "50"]) == 0
    m = pd.read_csv(out / "multipliers_by_run.csv")
    assert np.allclose(m["params"], 0.6 * np.array(SIZES))


def test_b_free_and_custom_b_grid(tmp_path):
    rows = paper_like_rows()
    csv = write_csv(tmp_path / "runs.csv", rows)
    out = tmp_path / "fit"
    assert main(["--csv", str(csv), "--out", str(out), "--b", "free", "--bootstrap", "30",
                 "--b-grid", "1.6,1.7"]) == 0
    fit = json.loads((out / "fit.json").read_text())
    dense = fit["families"]["default"]["dense"]
    assert dense["b_fixed"] is False and dense["b"] == pytest.approx(1.69, abs=0.02)
    assert fit["config"]["b"] == "free"
    assert set(fit["families"]["default"]["b_sensitivity"][0]) >= {"1.6", "1.7"}


def test_bad_input_fewer_than_two_dense_sizes(tmp_path, capsys):
    rows = [r for r in paper_like_rows() if r["arm"] == "leviathan" or r["size"] == "60M"]
    csv = write_csv(tmp_path / "runs.csv", rows)
    assert main(["--csv", str(csv), "--bootstrap", "10"]) == 2
    err = capsys.readouterr().err
    assert "need at least two Dense sizes" in err
    assert "dense: 1 runs (1 finished, 1 usable)" in err
    assert "leviathan: 5 runs (5 finished, 5 usable)" in err


def test_seeds_on_another_token_budget_are_refused_naming_the_runs(tmp_path, capsys):
    """Seeds of one (size, arm) are pooled only at their size's Dense budget (issue 34.3: a
    sweep once gave Leviathan seeds that Dense did not run 40% fewer tokens)."""
    rows = paper_like_rows()
    rows += [dict(r, name=f"lev-60M-s{seed}", seed=seed, tokens=0.6 * r["tokens"])
             for r in rows[1:2] for seed in (1, 2)]
    csv = write_csv(tmp_path / "runs.csv", rows)
    assert main(["--csv", str(csv), "--bootstrap", "10"]) == 2
    err = capsys.readouterr().err
    assert "pooled only at one token budget" in err and "leviathan at size 60M: 720,000,000 " \
        "tokens (lev-60M-s1, lev-60M-s2) vs 1,200,000,000 tokens (" in err
    ok = [dict(r, tokens=r["tokens"] * 1.001) if r["arm"] == "leviathan" else r
          for r in paper_like_rows()]  # within fit.budget_tol: one budget
    assert main(["--csv", str(write_csv(tmp_path / "ok.csv", ok)), "--bootstrap", "10"]) == 0


def test_bad_input_no_finished_runs(tmp_path, capsys):
    rows = [dict(r, status="FAILED") for r in paper_like_rows()]
    csv = write_csv(tmp_path / "runs.csv", rows)
    assert main(["--csv", str(csv), "--bootstrap", "10"]) == 2
    err = capsys.readouterr().err
    assert "no finished runs" in err and "dense: 5 runs (0 finished, 0 usable)" in err


def test_bad_input_missing_columns_and_bad_b(tmp_path, capsys):
    csv = write_csv(tmp_path / "runs.csv", [{"arm": "dense", "params": 1e8, "loss": 3.0}])
    assert main(["--csv", str(csv)]) == 2
    assert "missing column(s) ['tokens']" in capsys.readouterr().err
    assert main(["--csv", str(csv), "--b", "banana"]) == 2  # --b is a shortcut for fit.b
    assert "fit.b: must be a number > 0, or free to fit it, got 'banana'" in \
        capsys.readouterr().err


def test_every_leviathan_run_below_b_is_listed_not_dropped(tmp_path):
    rows = [r for r in paper_like_rows() if r["arm"] == "dense"]
    rows += [{"arm": "leviathan", "size": "60M", "params": 59e6, "tokens": 1.2e9, "loss": 1.69},
             {"arm": "leviathan", "size": "109M", "params": 108e6, "tokens": 2e9,
              "loss": math.nan}]
    csv = write_csv(tmp_path / "runs.csv", rows)
    out = tmp_path / "fit"
    assert main(["--csv", str(csv), "--out", str(out), "--bootstrap", "20"]) == 0
    summary = (out / "summary.md").read_text()
    assert "loss 1.6900 <= b = 1.69: N_eff undefined" in summary
    assert "final validation loss is missing or NaN" in summary
    assert_png(out / "scaling.png")


def test_module_entry_point_runs(tmp_path):
    csv = write_csv(tmp_path / "runs.csv", paper_like_rows())
    proc = subprocess.run([sys.executable, "-m", "analysis.fit_scaling", "--csv", str(csv),
                           "--bootstrap", "20"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "wrote" in proc.stdout and (tmp_path / "runs_fit" / "summary.md").is_file()


def test_unreachable_tracking_server_is_a_clear_error(capsys, monkeypatch):
    import analysis.inputs.mlflow_input
    from leviathan.tracking.server import free_port

    monkeypatch.setattr(analysis.inputs.mlflow_input, "CONNECT_TIMEOUT", 1.0)
    uri = f"http://127.0.0.1:{free_port()}"
    assert main(["--latest", "--tracking-uri", uri, "--bootstrap", "10"]) == 2
    assert f"MLflow tracking server {uri} (--tracking-uri) is not reachable" in \
        capsys.readouterr().err  # a message, not a traceback


def test_latest_flag_with_csv_reads_the_csv(tmp_path):
    # `make fit-scaling ARGS="--csv runs.csv"` passes --latest too: the CSV wins
    csv = write_csv(tmp_path / "runs.csv", paper_like_rows())
    assert main(["--latest", "--csv", str(csv), "--bootstrap", "10"]) == 0
    assert (tmp_path / "runs_fit" / "fit.json").is_file()


def test_size_by_budget_grid_reports_ld_and_joint_fits(tmp_path):
    rows = []
    for n in (50e6, 100e6, 200e6, 400e6):
        for k in (5, 10, 20, 40):
            rows.append({"arm": "dense", "size": f"{n / 1e6:g}M", "params": n, "tokens": k * n,
                         "loss": 1.8 + 480 * n ** -0.35 + 2000 * (k * n) ** -0.37})
        rows.append({"arm": "leviathan", "size": f"{n / 1e6:g}M", "params": n, "tokens": 40 * n,
                     "loss": 1.8 + 480 * (2 * n) ** -0.35 + 2000 * (40 * n) ** -0.37})
        rows.append({"arm": "leviathan", "size": f"{n / 1e6:g}M", "params": n, "tokens": 5 * n,
                     "loss": 1.8 + 480 * (2 * n) ** -0.35 + 2000 * (5 * n) ** -0.37})
    csv = write_csv(tmp_path / "grid.csv", rows)
    out = tmp_path / "fit"
    assert main(["--csv", str(csv), "--out", str(out), "--bootstrap", "50"]) == 0
    fam = json.loads((out / "fit.json").read_text())["families"]["default"]
    assert fam["joint"]["alpha"] == pytest.approx(0.35, rel=1e-3)
    assert fam["joint"]["E_ci"][0] - 1e-6 <= 1.8 <= fam["joint"]["E_ci"][1] + 1e-6
    assert len(fam["data_fits"]) == 4  # L(D), E_N free, per size: Dense's 4 budgets (not 2)
    assert "L(D) leviathan 50M: E_N free needs three or more token budgets; found 2" in \
        fam["notes"]
    m = pd.read_csv(out / "multipliers_by_run.csv")
    assert len(m) == 8  # every Leviathan run has a row: 4 on the ladder, 4 with a reason
    assert (m["reason"].fillna("").str.contains("token budget below").sum()) == 4
    summary = (out / "summary.md").read_text()
    assert "Joint L(N, D) = E + A·N^-α + B·D^-β" in summary
    assert "L(D) = E_N + B·D^-β (E_N free), dense 50M" in summary
    assert "Multipliers from the joint law at each run's own D" in summary
    assert np.allclose(m["multiplier_joint"], 2.0, rtol=1e-3)


def test_dense_losses_that_do_not_fall_give_reasons_not_absurd_multipliers(tmp_path):
    # a smoke-sized sweep a few steps in: the bigger Dense model is still worse
    rows = [{"arm": "dense", "size": "tiny", "params": 1.2e6, "tokens": 2e5, "loss": 9.80},
            {"arm": "dense", "size": "small", "params": 2.5e6, "tokens": 2e5, "loss": 9.95},
            {"arm": "leviathan", "size": "tiny", "params": 0.9e6, "tokens": 2e5, "loss": 9.7},
            {"arm": "leviathan", "size": "small", "params": 2.0e6, "tokens": 2e5, "loss": 10.5}]
    csv = write_csv(tmp_path / "smoke.csv", rows)
    out = tmp_path / "fit"
    assert main(["--csv", str(csv), "--out", str(out), "--bootstrap", "20"]) == 0
    m = pd.read_csv(out / "multipliers_by_run.csv")
    assert m["multiplier"].isna().all()
    assert m["reason"].str.contains("Dense L(N) fit degenerate", regex=False).all()
    m = pd.read_csv(out / "multipliers.csv").query("size != 'trend'")
    assert m["multiplier"].isna().all() and m["reason"].str.contains("degenerate").all()
    summary = (out / "summary.md").read_text()
    assert "do not fall with N" in summary and "Shared exponent" not in summary
    assert_png(out / "scaling.png")


def test_parent_note_fits_mlflow_tag_limit(tmp_path):
    """The sweep parent's description (the headline tables) stays within MLflow's limit on a
    tag's length, cut at a line and saying where the rest is."""
    from mlflow.utils.validation import MAX_TAG_VAL_LENGTH

    from analysis.fit_scaling import parent_note

    (tmp_path / "headline.md").write_text("| 60M | leviathan | 2.00× |\n" * 2000)
    note = parent_note(tmp_path, "fit/20260101T000000Z-0123456789ab")
    assert len(note) <= MAX_TAG_VAL_LENGTH and "the rest is in `summary.md`" in note
    assert "fit/20260101T000000Z-0123456789ab/" in note and "\n| 60M | leviathan" in note
    (tmp_path / "headline.md").write_text("short\n")
    assert parent_note(tmp_path, "fit/x").startswith("short\n")
