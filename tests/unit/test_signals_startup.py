"""A preemption signal before the first training step stops the process at once (issue 41.3):
in Python code through the handler, in torch's C++ rendezvous through the watcher thread; once
training runs, the signal waits for the next step boundary as before. Real processes, real
signals, a real TCPStore that nobody serves."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import pytest
from helpers import wait_for

PRELUDE = """
import logging, signal, sys, time
logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
from leviathan.training.signals import PreemptionFlag
"""


def _start(body: str) -> subprocess.Popen:
    code = PRELUDE + textwrap.dedent(body)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _sleeping(pid: int) -> bool:
    """The process's main thread waits in the kernel (state S), e.g. inside a C++ call."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "S"


def _signal_when_ready(proc: subprocess.Popen, sig: int, blocked: bool = False
                       ) -> tuple[str, float]:
    """Wait for the child's `ready` line (and, `blocked`, for it to sit in the call after it),
    signal it; (all it printed, seconds to exit)."""
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.strip() == "ready":
            break
    if blocked:
        wait_for(lambda: _sleeping(proc.pid), 30, "the child to block", poll=0.05)
    proc.send_signal(sig)
    t0 = time.monotonic()
    out = proc.communicate(timeout=60)[0]
    return "".join(lines) + out, time.monotonic() - t0


def test_signal_while_starting_in_python_stops_now():
    proc = _start("""
        flag = PreemptionFlag(starting=True, startup_grace_s=30).install()
        print("ready", flush=True)
        while True:
            time.sleep(0.01)  # start-up work in Python
    """)
    out, took = _signal_when_ready(proc, signal.SIGTERM)
    assert proc.returncode == 128 + signal.SIGTERM, out
    assert "received SIGTERM while starting (before the first training step): stopping" in out
    assert took < 10 and "still blocked" not in out  # the handler, not the watcher


def test_signal_while_blocked_in_the_rendezvous_ends_the_process_after_the_grace():
    """torch's TCPStore client retries in C++ for its whole timeout (here 120 s) without
    running Python handlers: the watcher ends the process `startup_grace_s` after the signal."""
    proc = _start("""
        import socket
        from datetime import timedelta
        import torch.distributed as dist
        s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
        flag = PreemptionFlag(starting=True, startup_grace_s=1).install()
        print("ready", flush=True)
        dist.TCPStore("127.0.0.1", port, 2, False, timeout=timedelta(seconds=120))
        print("connected?!", flush=True)
    """)
    out, took = _signal_when_ready(proc, signal.SIGTERM, blocked=True)
    assert proc.returncode == 128 + signal.SIGTERM, out
    assert "received SIGTERM while starting (before the first training step) and still " \
           "blocked 1 s later (waiting for the other ranks?): exiting with status 143" in out
    assert took < 15 and "connected" not in out


def test_usr2_while_starting_calls_the_previous_handler_first():
    """Under submitit, USR2's previous handler requeues the job (rank 0) and exits."""
    proc = _start("""
        def submitit_like(signum, frame):
            print("requeue asked", flush=True)
            sys.exit(255)
        signal.signal(signal.SIGUSR2, submitit_like)
        flag = PreemptionFlag(starting=True, startup_grace_s=30).install()
        print("ready", flush=True)
        while True:
            time.sleep(0.01)
    """)
    out, _took = _signal_when_ready(proc, signal.SIGUSR2)
    assert "requeue asked" in out and proc.returncode == 255, out


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_once_training_runs_a_signal_waits_for_the_step_boundary(sig):
    proc = _start("""
        flag = PreemptionFlag(starting=True, startup_grace_s=0.2).install()
        flag.reinstall()  # fit has started (on_train_start)
        print("ready", flush=True)
        while flag.received is None:
            time.sleep(0.01)
        time.sleep(1)  # 5 x the grace: the watcher stopped at fit start, nothing ends this
        print(f"recorded {flag.received}; checkpoint, then stop", flush=True)
    """)
    out, _took = _signal_when_ready(proc, sig)
    assert proc.returncode == 0, out
    assert f"recorded {int(sig)}; checkpoint, then stop" in out
    assert "checkpointing at the next step boundary" in out
