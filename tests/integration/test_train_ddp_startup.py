"""A rank of a real training job whose peers never come (issue 41.3): it stops after
trainer.ddp_timeout_s with one line, or at once on SIGTERM, instead of waiting in torch's
rendezvous for half an hour. Rank 1 of 2 is started alone, as a launcher starts each rank
(Lightning's environment variables); nothing listens at its MASTER_ADDR:MASTER_PORT."""

from __future__ import annotations

import os
import signal
import socket
import time

import pytest
from helpers.train import run_cli, tiny

pytestmark = pytest.mark.integration


def _alone_as_rank_1(data_dir, tmp_path, timeout_s: float):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2",
           "NODE_RANK": "1", "LOCAL_RANK": "0", "RANK": "1"}
    args = tiny(data_dir, tmp_path, "http://127.0.0.1:9", "trainer.num_nodes=2",
                "trainer.strategy=ddp", f"trainer.ddp_timeout_s={timeout_s}")
    return run_cli(args, env=env), port


def test_rank_that_cannot_reach_its_peers_stops_after_ddp_timeout_s(data_dir, tmp_path):
    proc, port = _alone_as_rank_1(data_dir, tmp_path, 3)
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 2, out[-3000:]
    errors = [ln for ln in out.splitlines() if ln.startswith("error: ")]
    assert errors == [ln for ln in out.splitlines() if "error: rank 1 of 2" in ln], out[-3000:]
    assert errors[0].startswith(f"error: rank 1 of 2 could not meet its peers at 127.0.0.1:{port}"
                                " within trainer.ddp_timeout_s=3 (DistNetworkError: ")
    assert "Traceback" not in out


def test_sigterm_while_waiting_for_peers_stops_at_once(data_dir, tmp_path):
    proc, _port = _alone_as_rank_1(data_dir, tmp_path, 600)
    lines = []
    for line in proc.stdout:  # Lightning's line just before torch's rendezvous
        lines.append(line)
        if "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in line:
            break
    proc.send_signal(signal.SIGTERM)  # in the rendezvous, or just before it: stops either way
    t0 = time.monotonic()
    out = "".join(lines) + proc.communicate(timeout=120)[0]
    took = time.monotonic() - t0
    assert proc.returncode == 128 + signal.SIGTERM, out[-3000:]
    assert "received SIGTERM while starting (before the first training step)" in out
    assert took < 20, took  # the grace (3 s) and the exit, not trainer.ddp_timeout_s=600
    print(f"\nexited {took:.1f} s after SIGTERM")
