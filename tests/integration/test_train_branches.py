"""WSD-S for real, on CPU against the real MLflow server: a constant-LR main run keeps snapshots;
two cooldown branches start from them as their own MLflow runs; each branch reproduces, step for
step, a WSD run of its own length trained straight through; a branch preempted by SIGTERM
resumes exactly."""

from __future__ import annotations

import signal

import pytest
import torch
from helpers.train import client, compose, one_value_per_step, run_cli, sigterm_at, tiny

pytestmark = [pytest.mark.integration, pytest.mark.slow]
WSD = ["trainer.cooldown_fraction=0.3", "trainer.ckpt_every=100"]


def _branch(data_dir, scratch, uri, name, steps, start, *extra):
    return tiny(data_dir, scratch, uri, f"run_name={name}", "trainer.schedule=wsd", *WSD,
                f"trainer.init_from={scratch / 'runs' / 'main' / f'step_{start}.ckpt'}",
                "+meta.cooldown=1", "+meta.branch_of=main", *extra, steps=steps)


def test_wsd_s_branches_continue_the_main_run_exactly(tmp_path, data_dir, mlflow_server):
    from leviathan.training.checkpoints import NoIntactCheckpoint
    from leviathan.training.run import train

    uri, s = mlflow_server, tmp_path / "s"
    # the main run: constant LR to step 7, keeping the checkpoints the branches start from
    main = train(compose(tiny(data_dir, s, uri, "run_name=main", "trainer.schedule=constant",
                              *WSD, "trainer.snapshot_steps=[4,7]", steps=7)))
    assert (s / "runs" / "main" / "step_4.ckpt").is_file()
    assert (s / "runs" / "main" / "step_7.ckpt").is_file()
    # a snapshot that fails its checksum is refused, naming trainer.init_from (issue 34.11)
    snap = s / "runs" / "main" / "step_4.ckpt"
    good = snap.read_bytes()
    snap.write_bytes(good[:1000] + bytes([good[1000] ^ 1]) + good[1001:])
    with pytest.raises(NoIntactCheckpoint, match=r"trainer.init_from: .*step_4.ckpt is corrupt "
                                                  r"\(sha256 .* differs from the recorded one\)"):
        train(compose(_branch(data_dir, s, uri, "branch-corrupt", 6, 4)))
    snap.write_bytes(good)
    # branch A: 6 steps in all, cooling down over the last 2 (from the main run's step 4)
    a = train(compose(_branch(data_dir, s, uri, "branch-a", 6, 4)))
    # branch B: 10 steps, cooling down over the last 3 (from step 7), preempted and resumed
    args = _branch(data_dir, s, uri, "branch-b", 10, 7)
    proc = run_cli(args)
    out = sigterm_at(proc, "step 8/")  # training under way: preempt it
    assert proc.returncode == 128 + signal.SIGTERM, out[-3000:]
    assert "starting from" in out and "preempted at step" in out
    b = train(compose(args))  # the same command again: resumes the branch, not the main run

    c = client(uri)
    runs = {r["run_id"]: c.get_run(r["run_id"]) for r in (main, a, b)}
    assert len(runs) == 3 and all(r.info.status == "FINISHED" for r in runs.values())
    for summary, cooldown in ((a, "1"), (b, "1")):
        tags = runs[summary["run_id"]].data.tags
        assert (tags["schedule"], tags["branch_of"], tags["cooldown"]) == ("wsd", "main", cooldown)
    assert runs[main["run_id"]].data.tags["schedule"] == "constant"
    assert "branch_of" not in runs[main["run_id"]].data.tags
    assert [st for st, _ in _steps(uri, b["run_id"])] == [8, 9, 10]  # its own steps, once each

    # each branch equals a WSD run of its length trained straight through, step for step
    for branch, steps, start in ((a, 6, 4), (b, 10, 7)):
        straight = train(compose(tiny(data_dir, tmp_path / f"ref{steps}", uri,
                                      f"run_name=ref{steps}", "trainer.schedule=wsd", *WSD,
                                      steps=steps)))
        for key in ("train/loss", "lr", "grad_norm"):
            ref = one_value_per_step(uri, straight["run_id"], key)
            got = (one_value_per_step(uri, main["run_id"], key)[:start]
                   + one_value_per_step(uri, branch["run_id"], key))
            torch.testing.assert_close(torch.tensor(got), torch.tensor(ref), rtol=1e-5,
                                       atol=1e-6, msg=lambda m, k=key: f"{k}: {m}")
        assert branch["final_val_loss"] == pytest.approx(straight["final_val_loss"], rel=1e-5)


def _steps(uri, run_id):
    return sorted((m.step, m.value) for m in client(uri).get_metric_history(run_id, "train/loss"))
