"""The analysis's reference cases: fixed inputs (tests/data/analysis_reference/inputs/) through the
commands that run the analysis, and the outputs they wrote when the cases were made.

- `fits`: `python -m analysis.fit_scaling --csv ...` on toy worlds and the test suite's synthetic
  sweeps (controls, decoupled, one seed, a noise level given or measured on a pilot, LR sweeps,
  WSD cooldowns with curves, rare-token buckets, excluded runs, an N x D grid, data scaling, a
  flat ladder, two families, a demo-like smoke sweep), and `--chinchilla` on Epoch's extraction;
- `sweep`: the dry run's power report (`python -m leviathan.sweep +grid=smoke
  sweep.dry_run=true`: power.csv and the printed section) and the design search
  (`python -m leviathan.sweep.design +grid=smoke ...`: the printed table and the grid it writes).

Every CSV, markdown and JSON output is kept (plots are not). Two values are not the analysis's
and are masked on both sides: fit.json's `fitted_at` (the time of the fit) and
chinchilla_fit.json's `seconds` (how long it took). tests/unit/test_analysis_reference.py
regenerates the outputs and compares them byte for byte:

    cd tests && python -m helpers.analysis_reference fits DIR    # write the `fits` outputs to DIR
    cd tests && python -m helpers.analysis_reference --write      # rewrite the committed outputs

BLAS threads are pinned to one (the last digit of a float may depend on them); a change that
means to change an output rewrites the reference in the same commit and says why.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from helpers import REPO, SHARED, TESTS

REFERENCE = TESTS / "data" / "analysis_reference"
INPUTS = REFERENCE / "inputs"
CHINCHILLA = SHARED / "reference" / "chinchilla_svg_extracted_data.csv"
MASKED = {"fit.json": "fitted_at", "chinchilla_fit.json": "seconds"}
ONE_THREAD = {k: "1" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}

# case -> the command line after `python -m analysis.fit_scaling` (run in INPUTS; `--out` added)
FITS = {
    "controls": ["--csv", "controls.csv", "--bootstrap", "60"],
    "untying": ["--csv", "untying.csv", "--bootstrap", "60"],
    "families": ["--csv", "families.csv", "--bootstrap", "40"],
    "one_seed": ["--csv", "one_seed.csv", "--bootstrap", "40"],
    "noise_given": ["--csv", "one_seed.csv", "--bootstrap", "40", "+fit.seed_noise.all=0.005"],
    "noise_from": ["--csv", "one_seed.csv", "--bootstrap", "40", "--noise-from", "pilot.csv"],
    "b19": ["--csv", "b19.csv", "--bootstrap", "60"],
    "b19_free": ["--csv", "b19.csv", "--bootstrap", "60", "--b", "free"],
    "data": ["--csv", "data.csv", "--bootstrap", "60"],
    "data_one_size": ["--csv", "data_one_size.csv", "--bootstrap", "60"],
    "lr": ["--csv", "lr.csv", "--bootstrap", "40"],
    "lr_pooled": ["--csv", "lr.csv", "--bootstrap", "40", "fit.lr_estimator=pooled"],
    "lr_vertex": ["--csv", "lr.csv", "--bootstrap", "40", "fit.lr_estimator=vertex"],
    "wsd": ["--csv", "wsd.csv", "--curves", "wsd_curves.csv", "--bootstrap", "40"],
    "curves_all": ["--csv", "curves_all.csv", "--curves", "curves_all_curves.csv",
                   "--bootstrap", "40"],
    "buckets": ["--csv", "buckets.csv", "--buckets", "buckets_buckets.csv", "--bootstrap", "40"],
    "paper": ["--csv", "paper.csv", "--bootstrap", "60"],
    "paper_body": ["--csv", "paper.csv", "--bootstrap", "40", "--params", "body"],
    "grid": ["--csv", "grid.csv", "--bootstrap", "40"],
    "flat": ["--csv", "flat.csv", "--bootstrap", "20"],
    "demo": ["--csv", "demo.csv", "--curves", "demo_curves.csv", "--buckets",
             "demo_buckets.csv", "--bootstrap", "60"],
    "chinchilla": ["--chinchilla", str(CHINCHILLA), "--bootstrap", "20"],
}
SWEEP = ["+grid=smoke", "paths.root_dir={root}"]
DESIGN = ["design.budget_gpu_h=0.0001", "design.target=multiplier", "design.out={out}"]
CASES = {"fits": sorted(FITS), "sweep": ["power_report", "design"]}


def mask(name: str, text: str) -> str:
    """The file's text with its masked value (MASKED) replaced by "<masked>"."""
    key = MASKED.get(name)
    if key is None:
        return text
    return re.sub(rf'("{key}": )[^,\n]*', r'\1"<masked>"', text)


def keep(folder: Path) -> None:
    """Leave the files a comparison reads: no plots, the masked values masked."""
    for p in sorted(folder.iterdir()):
        if p.suffix == ".png":
            p.unlink()
        elif p.name in MASKED:
            p.write_text(mask(p.name, p.read_text()))


def write_fits(dest: Path) -> None:
    from analysis.fit_scaling import main

    os.chdir(INPUTS)  # runs.source (in fit.json and summary.md) is the CSV's name as given
    for case, args in FITS.items():
        if main([*args, "--out", str(dest / case)]) != 0:
            raise SystemExit(f"case {case}: fit_scaling failed")
        keep(dest / case)


def _command(module: str, args: list[str]) -> str:
    out = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True,
                         text=True, env={**os.environ, **ONE_THREAD})
    if out.returncode != 0:
        raise SystemExit(f"{module} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return out.stdout


def write_sweep(dest: Path) -> None:
    """The dry run's power report and the design search on the smoke grid."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        args = [a.format(root=root) for a in SWEEP]
        text = _command("leviathan.sweep", [*args, "sweep.dry_run=true"])
        sweep_dir = root / "sweeps" / "smoke"
        power = dest / "power_report"
        power.mkdir(parents=True)
        section = text[text.index("Power analysis"):text.index("\n", text.index("(written to"))]
        (power / "power_report.md").write_text(section.replace(str(sweep_dir), "<sweep_dir>")
                                               + "\n")
        shutil.copy(sweep_dir / "power.csv", power / "power.csv")
        design = dest / "design"
        design.mkdir()
        text = _command("leviathan.sweep.design",
                        [*args, *(a.format(out=design) for a in DESIGN)])
        (design / "design.md").write_text(text[:text.index("\nWrote the best design")] + "\n")


def regenerate(which: str, dest: Path) -> None:
    """Write the outputs of the cases `which` (fits | sweep) under dest/<case>/, in a fresh
    interpreter with one BLAS thread."""
    subprocess.run([sys.executable, "-m", "helpers.analysis_reference", which, str(dest)],
                   cwd=TESTS, check=True, capture_output=True,
                   env={**os.environ, **ONE_THREAD,  # this checkout's code, not an install's
                        "PYTHONPATH": os.pathsep.join([str(TESTS), str(REPO)])})


def differences(which: str, made: Path) -> list[str]:
    """What differs between the committed outputs of the cases `which` and those in `made`."""
    import difflib

    out = []
    for case in CASES[which]:
        want = {p.name for p in (REFERENCE / case).iterdir()}
        got = {p.name for p in (made / case).iterdir()} if (made / case).is_dir() else set()
        if want != got:
            out.append(f"{case}: files {sorted(got)} instead of {sorted(want)}")
        for name in sorted(want & got):
            a, b = (REFERENCE / case / name).read_bytes(), (made / case / name).read_bytes()
            if a != b:
                diff = difflib.unified_diff(a.decode().splitlines(), b.decode().splitlines(),
                                            f"reference/{case}/{name}", f"now/{case}/{name}",
                                            n=1, lineterm="")
                out.append("\n".join(list(diff)[:12]))
    return out


def main(argv: list[str]) -> int:
    if argv == ["--write"]:
        for which in CASES:
            for case in CASES[which]:
                shutil.rmtree(REFERENCE / case, ignore_errors=True)
            regenerate(which, REFERENCE)
        return 0
    which, dest = argv
    {"fits": write_fits, "sweep": write_sweep}[which](Path(dest).resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
