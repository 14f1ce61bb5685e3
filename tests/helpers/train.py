"""Tiny training runs on CPU for the integration tests: the overrides, the CLI, MLflow reads.

Mechanics tests (resume, tracking, DDP, failures) read the debug corpus through the 2,048-id
debug_2k vocabulary with `model=debug_small` (a 200k head would dominate their cost and
checkpoint size); `vocab="o200k_base"` keeps the real vocabulary where its numerics are the
point (the tiny run per arm, the rare-token buckets).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from helpers import REPO


def compose(overrides: list[str]):
    from leviathan.config import compose as compose_config

    return compose_config("train", overrides)


def tiny(data_dir: Path, scratch: Path, uri: str, *extra: str, steps: int = 8,
         arm: str = "dense", vocab: str = "debug_2k") -> list[str]:
    head = "tied" if arm == "dense" else "untied"
    small = ["model=debug_small", "data.tokenizer=debug_2k"] if vocab == "debug_2k" else []
    return [*small, f"model.arm={arm}", f"model.head={head}", "model.d_model=32", "model.n_heads=2",
            "data=debug", "data.seq_len=32", "trainer=debug", "trainer.global_batch=2",
            "trainer.micro_batch=1", f"trainer.max_steps={steps}", "trainer.val_every=4",
            "trainer.ckpt_every=4", "trainer.val_batches=2", "trainer.warmup_steps=1",
            f"tracking.uri={uri}", "tracking.experiment=test-train", "tracking.flush_every_s=0.5",
            f"paths.data_dir={data_dir}", f"paths.scratch_dir={scratch}", *extra]


def client(uri):
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


def history(uri, run_id, key) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client(uri).get_metric_history(run_id, key))


def one_value_per_step(uri, run_id, key) -> list[float]:
    h = history(uri, run_id, key)
    steps = [s for s, _ in h]
    assert len(steps) == len(set(steps)), f"{key}: duplicated steps {steps}"
    return [v for _, v in h]


def run_cli(overrides: list[str], env: dict | None = None, **kw) -> subprocess.Popen:
    env = dict(env if env is not None else os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "leviathan.train", *overrides], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, **kw)


def sigterm_at(proc: subprocess.Popen, prefix: str, timeout: float = 300) -> str:
    """Read the job's output until a line starts with `prefix` (e.g. "step 2/": training is
    under way), send it a real SIGTERM, wait for it to exit; returns all it printed."""
    import signal

    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith(prefix):
            proc.send_signal(signal.SIGTERM)
            break
    return "".join(lines) + proc.communicate(timeout=timeout)[0]

