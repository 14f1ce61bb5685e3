"""tracking.enabled=false: the run recorded in its folder only (leviathan/tracking/folder.py)."""

from __future__ import annotations

import json
import sys

from leviathan.tracking.folder import METRICS_FILE, RECORD_FILE, FolderTracker, read_metrics


def test_a_run_and_its_resumed_attempt_in_the_folder(tmp_path):
    first = FolderTracker(tmp_path)
    first.start(tags={"arm": "dense", "none": None}, params={"model.d_model": 64})
    first.log_metrics({"train/loss": 3.0, "lr": 1e-3}, step=1)
    first.log_metrics({"train/loss": 2.5, "bad": float("nan")}, step=2)
    first.sync()  # what a checkpoint at step 2 makes durable
    first.log_metrics({"train/loss": 2.4}, step=3)  # after the checkpoint: re-run on resume
    first.finish("KILLED")
    record = json.loads((tmp_path / RECORD_FILE).read_text())
    assert record["status"] == "KILLED" and record["tags"] == {"arm": "dense"}
    assert record["params"] == {"model.d_model": "64"}
    again = FolderTracker(tmp_path)  # the resumed attempt continues the same record
    assert again.run_uid == first.run_uid and again.run_id is None
    again.start(params={"model.d_model": 128, "new": 1})  # first values kept, as MLflow does
    again.log_metrics({"train/loss": 2.3}, step=3)
    again.log_metrics({"val/loss": 2.6}, step=3)
    again.log_artifact(tmp_path / "summary.json")
    again.finish("FINISHED")
    with open(tmp_path / METRICS_FILE, "a") as f:
        f.write('{"step": 4, "train/lo')  # a kill mid-write
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == [1, 2, 3]  # one row per step, the torn line skipped
    assert rows[2]["train/loss"] == 2.3 and rows[2]["val/loss"] == 2.6  # the later attempt wins
    assert "bad" not in rows[1]  # non-finite values are not recorded (as RunTracker)
    record = json.loads((tmp_path / RECORD_FILE).read_text())
    assert record["status"] == "FINISHED"
    assert record["params"] == {"model.d_model": "64", "new": "1"}
    assert record["artifacts"][0]["path"].endswith("summary.json")


def test_the_folder_tracker_imports_no_mlflow():
    import subprocess

    code = ("import sys; import leviathan.tracking.folder; "
            "assert 'mlflow' not in sys.modules, 'mlflow imported'")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0
