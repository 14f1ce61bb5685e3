"""Issue 34.7: Hydra keeps no copy of a command line's secrets. Every @hydra.main entry point's
primary config has `hydra.output_subdir: null` (no .hydra/config.yaml, hydra.yaml,
overrides.yaml: what an entry point records, it records masked itself), and a sweep's dry run
with a login in tracking.uri leaves it in no file. The training job's own canary run is
tests/integration/test_train_run.py::test_a_login_in_the_uri_is_in_no_file_the_run_writes."""

from __future__ import annotations

import re
import subprocess
import sys

from helpers import REPO


def _hydra_entry_points() -> dict[str, str]:
    """{module file: its primary config name} of every @hydra.main in the packages."""
    out = {}
    for path in [*(REPO / "leviathan").rglob("*.py"), *(REPO / "analysis").rglob("*.py")]:
        for m in re.finditer(r"^@hydra\.main\((.*)$", path.read_text(), flags=re.M):
            name = re.search(r"config_name=\"([a-z_]+)\"", m.group(1))
            assert name, f"{path}: @hydra.main without a literal config_name"
            out[str(path.relative_to(REPO))] = name.group(1)
    return out


def test_no_hydra_entry_point_writes_a_copy_of_its_config():
    from hydra import compose, initialize_config_dir

    from leviathan.config import conf_dir, register_schemas

    entry = _hydra_entry_points()
    assert {"leviathan/train.py", "leviathan/sweep/__main__.py",
            "leviathan/sweep/design.py"} <= set(entry)
    register_schemas()
    with initialize_config_dir(version_base="1.3", config_dir=str(conf_dir())):
        for module, name in entry.items():
            cfg = compose(name, return_hydra_config=True)
            assert cfg.hydra.output_subdir is None, (module, name)


def test_a_sweep_dry_run_leaves_a_login_in_no_file(tmp_path):
    canary = "CanaryLogin34x7"
    out = subprocess.run(
        [sys.executable, "-m", "leviathan.sweep", "+grid=smoke_tiny", "sweep.dry_run=true",
         "grid.power.enabled=false", f"tracking.uri=http://alice:{canary}@127.0.0.1:9",
         f"paths.root_dir={tmp_path / 'root'}"], cwd=tmp_path, capture_output=True, text=True,
        timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any("hydra" in p.parts for p in files) and any(p.name == "plan.csv" for p in files)
    leaks = [str(p.relative_to(tmp_path)) for p in files if canary.encode() in p.read_bytes()]
    assert leaks == [] and canary not in out.stdout + out.stderr
