"""The `paths` config group: every filesystem location; everything else interpolates from here.

Beside the package rather than in one subsystem: training (scratch_dir), sweeps (sweeps_dir),
data (data_dir) and the tracking server (mlflow_dir) all read it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PathsConfig:
    root_dir: str = "${oc.env:LEVIATHAN_ROOT,.}"  # the repository root (relative paths resolve from
    #   the cwd)
    data_dir: str = "${oc.env:LEVIATHAN_DATA,${paths.root_dir}/data}"  # corpora and prepared
    #   datasets
    scratch_dir: str = "${oc.env:LEVIATHAN_SCRATCH,${paths.root_dir}/scratch}"  # checkpoints and ru
    #   n state: <scratch_dir>/runs/<run key>
    sweeps_dir: str = "${paths.root_dir}/sweeps"  # one folder per sweep: plan, manifest, analysis
    mlflow_dir: str = "${paths.root_dir}/.mlflow"  # the local MLflow server's SQLite store and
    #   artifacts
