"""Entry points start without the heavy libraries (issue 25): composing any primary config the
way each entry point does, every CLI's `--help`, and `sweep.status` on an empty sweep import
none of torch, lightning, mlflow, submitit, matplotlib. Held by import inspection in one fresh
interpreter, not by timing; each step reports what it newly imported, so a failure names it."""

from __future__ import annotations

import ast
import json
import subprocess
import sys

from helpers import REPO

HEAVY = ("torch", "lightning", "mlflow", "submitit", "matplotlib")

# every module with `if __name__ == "__main__"` (and every __main__.py) under leviathan/ and
# analysis/, with how the script below runs its `--help` ("hydra": a @hydra.main app)
CLIS = {
    "leviathan.train": "hydra",
    "leviathan.sweep.__main__": "hydra",
    "leviathan.sweep.design": "hydra",
    "leviathan.sweep.status": "argparse",
    "leviathan.sweep.selfcheck": "argparse",
    "leviathan.eval.__main__": "argparse",
    "leviathan.bench.__main__": "bench",
    "leviathan.bench.data": "bench",
    "leviathan.bench.gpu": "bench",
    "leviathan.bench.gpu_suite": "bench",
    "leviathan.bench.gpu_grid": "bench",
    "leviathan.bench.shapes": "bench",
    "leviathan.bench.loss": "bench",
    "leviathan.bench.tracking": "bench",
    "leviathan.demo": "argparse",
    "leviathan.configdoc": "render",
    "leviathan.cli.dashboard": "argparse",
    "leviathan.tracking.service": "argparse",
    "leviathan.data.tokenizer": "argparse",
    "leviathan.data.minipile": "argparse",
    "leviathan.data.prepare": "argparse",
    "leviathan.data.debug_vocab": "argparse",
    "analysis.fit_scaling": "argparse",
    "analysis.coverage": "argparse",
    "analysis.toyworld": "argparse",
}

SCRIPT = r'''
import contextlib, importlib, io, json, sys, tempfile
from pathlib import Path

HEAVY, CLIS = json.loads(sys.argv[1]), json.loads(sys.argv[2])
steps, before = [], set()


def step(name, fn, *args):
    # run fn quietly (SystemExit caught); record its exit code and the heavy modules it imported
    global before
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            result = fn(*args)
        except SystemExit as e:
            result = e.code
    now = {m for m in HEAVY if m in sys.modules}
    steps.append([name, sorted(now - before), result if isinstance(result, int) else None])
    before = now


def attr(module, name):
    return getattr(importlib.import_module(module), name)


def hydra_main(module, argv):
    sys.argv = [module, *argv]
    return attr(module, "main")()


from leviathan.config import compose, conf_dir, ladder_config
from leviathan.data.config import to_data_config
from leviathan.eval.config import eval_config
from leviathan.models.config import to_model_config
from leviathan.sweep.grid import to_grid_config
from leviathan.sweep.launcher_config import to_launcher_config
from leviathan.tracking.config import tracking_config
from leviathan.training.config import trainer_config


def train_config():  # leviathan.train, cli.dashboard; the typed configs training reads
    cfg = compose("train", [])
    to_model_config(cfg.model), to_data_config(cfg.data), trainer_config(cfg)
    tracking_config(cfg)


def sweep_config(grid):  # leviathan.sweep, sweep.status, eval, fit_scaling
    cfg = compose("sweep", [f"+grid={grid}", "sweep.dry_run=true"])
    to_grid_config(cfg.grid), to_launcher_config(cfg.launcher), eval_config(cfg.eval)


def selfcheck_config(launcher):  # sweep.selfcheck, before it makes the executor
    to_launcher_config(compose("sweep", [f"launcher={launcher}",
                                         f"launcher.folder={tmp}"]).launcher)


def fit_scaling_settings(argv):  # conf/fit.yaml: the sweep config plus the `fit` group
    parser = attr("analysis.fit_scaling", "build_parser")()
    attr("analysis.fit_scaling", "site_settings")(parser.parse_args(argv))


tmp = Path(tempfile.mkdtemp())
(tmp / "empty").mkdir()
step("compose train", train_config)
for grid in sorted(p.stem for p in (conf_dir() / "grid").glob("*.yaml")):
    step(f"compose sweep +grid={grid}", sweep_config, grid)
for launcher in ("slurm", "local"):
    step(f"compose sweep launcher={launcher} (selfcheck)", selfcheck_config, launcher)
step("leviathan.demo compose", attr("leviathan.demo", "compose"), [])
step("leviathan.eval site_config", attr("leviathan.cli.eval", "site_config"), [])
step("leviathan.cli.dashboard _defaults", attr("leviathan.cli.dashboard", "_defaults"), [])
step("analysis.fit_scaling site_settings", fit_scaling_settings, [])
step("analysis.fit_scaling site_settings fit.b=free", fit_scaling_settings,
     ["fit.b=free", "fit.bootstrap=2000", "--level", "0.9"])
step("ladder_config (analysis.toyworld)", ladder_config, "v1", "60M")
for sweep in ("empty", "no_such_sweep"):
    step(f"leviathan.sweep.status {sweep}", attr("leviathan.sweep.status", "main"),
         [sweep, "--sweeps-dir", str(tmp)])
for module, kind in CLIS.items():
    if kind == "argparse":
        step(f"{module} --help", attr(module, "main"), ["--help"])
    elif kind == "render":
        step(f"{module} render", attr(module, "render"))
    elif kind == "bench" and module.endswith("__main__"):
        bench = importlib.import_module(module)
        step(f"{module} (usage)", bench.main, [])
        for name in bench.BENCHES:
            step(f"{module} {name} --help", bench.main, [name, "--help"])
for module, kind in CLIS.items():
    if kind == "hydra":  # last: each composes under Hydra's own --help
        step(f"{module} --help", hydra_main, module, ["--help"])
print(json.dumps(steps))
'''


def entry_points() -> set[str]:
    """Modules under leviathan/ and analysis/ that run as a program."""
    found = set()
    for pkg in ("leviathan", "analysis"):
        for path in (REPO / pkg).rglob("*.py"):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts)
            if path.name == "__main__.py":
                found.add(name)
                continue
            for node in ast.parse(path.read_text()).body:
                if (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
                        and isinstance(node.test.left, ast.Name)
                        and node.test.left.id == "__name__"):
                    found.add(name)
    return found


def test_every_entry_point_is_listed():
    assert entry_points() == set(CLIS), "add new entry points to CLIS (and drop removed ones)"


def test_entry_points_import_no_heavy_library():
    proc = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(HEAVY), json.dumps(CLIS)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    steps = json.loads(proc.stdout.strip().splitlines()[-1])
    bad = [f"{name}: {', '.join(mods)}" for name, mods, _ in steps if mods]
    assert not bad, "heavy imports at start-up:\n" + "\n".join(bad)
    codes = {name: code for name, _, code in steps}
    helps = {name: code for name, code in codes.items() if name.endswith("--help")}
    assert set(helps.values()) == {0}, helps  # each printed its help and exited 0
    assert {f"{m} --help" for m, kind in CLIS.items() if kind in ("argparse", "hydra")} \
        <= helps.keys()
    # no manifest (an empty folder, or none): the status command says so and exits 2
    assert codes["leviathan.sweep.status empty"] == 2
    assert codes["leviathan.sweep.status no_such_sweep"] == 2
