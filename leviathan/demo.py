"""`make demo`: the whole platform end to end on this machine, in minutes.

1. the tokenizer (o200k_base): loaded, or staged from a known vocabulary file, or a clear note
   on how to provide it; 2. the built-in demo corpus, prepared with o200k_base; 3. a local MLflow
   server on 127.0.0.1 (reused if one answers); 4. the `smoke` grid with the local launcher;
   5. `make fit-scaling` on it; 6. the summary table, the plots and the dashboard address.
Extra arguments are Hydra overrides for the sweep (e.g. `grid.tokens=[4096]`).
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[1]
# Where a vocabulary file may already lie (a shared checkout beside the repo, or a named file).
VOCAB_CANDIDATES = ("{env}", "{repo}/../shared/tokenizers/{name}.tiktoken",
                    "{repo}/tokenizers/{name}.tiktoken")


def step(n: int, title: str) -> float:
    log.info(f"\n== [{n}/6] {title}")
    return time.monotonic()


def ensure_tokenizer(name: str = "o200k_base") -> bool:
    """True when tiktoken can load `name`; stages a known local vocabulary file if needed."""
    from leviathan.data.tokenizer import TokenizerError, get_encoding, stage

    try:
        get_encoding(name)
        log.info(f"tokenizer {name}: available")
        return True
    except TokenizerError as first:
        for pattern in VOCAB_CANDIDATES:
            path = Path(pattern.format(env=os.environ.get("LEVIATHAN_TOKENIZER_FILE", ""),
                                       repo=REPO, name=name))
            if path.is_file():
                staged = stage(path)
                log.info(f"tokenizer {name}: staged {path} -> {staged}")
                get_encoding(name)
                return True
        log.error(f"tokenizer {name} is not available on this machine.\n{first}\n"
                  f"(or set LEVIATHAN_TOKENIZER_FILE=/path/to/{name}.tiktoken and rerun make "
                  "demo)")
        return False


def compose(overrides: list[str]):
    """The smoke sweep's config, and one of its runs' config (grid overrides + the user's)."""
    from leviathan.config import compose as compose_config
    from leviathan.sweep.plan import dedupe_overrides, run_overrides

    cfg = compose_config("sweep", ["+grid=smoke", *overrides])
    run = compose_config("train", dedupe_overrides([*cfg.grid.overrides,
                                                    *run_overrides(overrides)]))
    return cfg, run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m leviathan.demo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=int(os.environ.get("MLFLOW_PORT", 5000)))
    ap.add_argument("--bootstrap", type=int, default=1000, help="resamples for the intervals")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides for the smoke sweep")
    args = ap.parse_args(argv)
    from leviathan.errors import LeviathanError
    from leviathan.logs import setup_logging

    setup_logging()
    try:
        return demo(args)
    except LeviathanError as e:  # what the user can fix; anything else shows its traceback
        log.error(f"error: {e}")
        return 2


def demo(args: argparse.Namespace) -> int:
    """The six steps; a LeviathanError on the way is printed by main."""
    t_start = time.monotonic()
    uri = f"http://127.0.0.1:{args.port}"
    overrides = [f"tracking.uri={uri}", *args.overrides]

    step(1, "tokenizer")
    if not ensure_tokenizer():
        return 2

    step(2, "demo corpus (minipile), prepared with o200k_base")
    from leviathan.data import ensure_data

    cfg, run_cfg = compose(overrides)
    data = ensure_data(run_cfg.data)
    log.info(f"data ready: {data.prepared_dir}")

    step(3, "MLflow tracking server")
    from leviathan.tracking.server import ensure_local_server

    server = ensure_local_server(uri, str(cfg.paths.mlflow_dir))
    log.info(f"MLflow at {uri}" + (" (reused)" if server.process is None else
                                   f" (started, pid {server.process.pid}; it keeps running)"))

    step(4, "sweep +grid=smoke (local launcher)")
    sweep = subprocess.run([sys.executable, "-m", "leviathan.sweep", "+grid=smoke", *overrides],
                           cwd=REPO)
    if sweep.returncode != 0:
        log.error(f"the sweep failed (exit {sweep.returncode}); see the messages above")
        return sweep.returncode

    step(5, "make fit-scaling SWEEP=smoke")
    name = str(cfg.sweep.name or cfg.grid.name)
    out = Path(str(cfg.paths.sweeps_dir)).resolve() / name / "fit"
    fit = subprocess.run([sys.executable, "-m", "analysis.fit_scaling", "--sweep", name,
                          "--tracking-uri", uri, "--out", str(out),
                          "--bootstrap", str(args.bootstrap)], cwd=REPO)
    if fit.returncode != 0:
        return fit.returncode

    step(6, "results")
    summary = out / "summary.md"
    print(summary.read_text())
    print("plots:")
    for png in sorted(out.glob("*.png")):
        print(f"  {png}")
    from leviathan.tracking import runs as tr

    exp_id = tr.experiment_id(tr.client(uri), str(cfg.tracking.experiment), create=False)
    where = tr.runs_url(uri, exp_id) if exp_id else uri
    print(f"\nfiles: {out}\ndashboard: {where} (or `make dashboard`)")
    log.info(f"demo finished in {time.monotonic() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
