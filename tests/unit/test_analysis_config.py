"""The `fit` config group (issue 25.5): `make fit-scaling fit.b=free fit.bootstrap=2000` composes
like every entry point, the argparse flags are shortcuts for fit.<key>, and a bad fit.* value
fails in one line naming the key."""

from __future__ import annotations

import dataclasses
import json
import subprocess

import pandas as pd
import pytest
from helpers import REPO

from analysis.config import FitConfig, FitConfigError, compose_fit
from analysis.fit_scaling import main


def runs_csv(path):
    rows = []
    for n in (60e6, 109e6, 200e6, 300e6, 421e6):
        for arm, worth in (("dense", 1.0), ("leviathan", 2.0)):
            rows.append({"arm": arm, "size": f"{n / 1e6:g}M", "params": n, "tokens": 20 * n,
                         "loss": 1.69 + 400 * (worth * n) ** -0.34})
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_composed_defaults_are_the_schema_defaults_and_overrides_apply():
    cfg, fit = compose_fit([])
    assert fit == FitConfig() and fit.b == 1.69
    assert str(cfg.tracking.experiment) and str(cfg.paths.sweeps_dir)  # the sweep config too
    _, fit = compose_fit(["fit.b=free", "fit.bootstrap=2000", "fit.b_grid=[1.6,1.8]"])
    assert fit.b is None and fit.bootstrap == 2000 and fit.b_grid == (1.6, 1.8)


def test_every_fit_key_has_a_comment():
    from leviathan.configdoc import field_comments

    missing = [f.name for f in dataclasses.fields(FitConfig)
               if not field_comments(FitConfig).get(f.name)]
    assert not missing


@pytest.mark.parametrize("override, message", [
    ("fit.b=0", "fit.b: must be a number > 0, or free to fit it, got 0"),
    ("fit.b=banana", "fit.b: must be a number > 0, or free to fit it, got 'banana'"),
    ("fit.bootstrap=0", "fit.bootstrap: must be an integer >= 1, got 0"),
    ("fit.bootstrap=abc", "fit.bootstrap: Value 'abc' of type 'str' could not be converted"),
    ("fit.level=1.5", "fit.level: must be a number in (0, 1), got 1.5"),
    ("fit.params=embedding", "fit.params: must be one of total, body, got 'embedding'"),
    ("fit.b_grid=[]", "fit.b_grid: give at least one b"),
    ("fit.b_grid=[1.6,-1]", "fit.b_grid: must be a list, each item a number > 0"),
    ("fit.nope=1", "fit.nope: unknown key; allowed keys: b, params, bootstrap"),
])
def test_bad_fit_value_is_one_line_naming_the_key(tmp_path, capsys, override, message):
    with pytest.raises(FitConfigError, match="^fit"):
        compose_fit([override])
    assert main(["--csv", str(runs_csv(tmp_path / "runs.csv")), override]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_flags_are_shortcuts_for_fit_keys(tmp_path):
    csv = runs_csv(tmp_path / "runs.csv")
    assert main(["--csv", str(csv), "--out", str(tmp_path / "flags"), "--b", "free",
                 "--bootstrap", "20", "--b-grid", "1.6,1.7", "--seed", "3"]) == 0
    assert main(["--csv", str(csv), "--out", str(tmp_path / "keys"), "fit.b=free",
                 "fit.bootstrap=20", "fit.b_grid=[1.6,1.7]", "fit.seed=3"]) == 0
    flags, keys = (json.loads((tmp_path / d / "fit.json").read_text())
                   for d in ("flags", "keys"))
    assert flags["config"] == keys["config"]
    assert keys["config"]["b"] == "free" and keys["config"]["bootstrap"] == 20
    assert keys["families"] == flags["families"]  # the same fit, to the last digit


def test_make_fit_scaling_passes_config_overrides():
    out = subprocess.run(["make", "-n", "fit-scaling", "fit.b=free", "fit.bootstrap=2000",
                          "SWEEP=demo"], cwd=REPO, capture_output=True, text=True, timeout=60)
    line = [ln for ln in out.stdout.splitlines() if "analysis.fit_scaling" in ln][-1]
    assert "--sweep demo" in line and "fit.b=free" in line and "fit.bootstrap=2000" in line


def test_readme_lists_every_fit_key_with_its_default():
    readme = (REPO / "README.md").read_text()
    for f in dataclasses.fields(FitConfig):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        shown = f"[{', '.join(f'{b:g}' for b in default)}]" if isinstance(default, tuple) \
            else f"{default:g}" if isinstance(default, float) else str(default)
        assert f"| `fit.{f.name}` | `{shown}` |" in readme, f.name
