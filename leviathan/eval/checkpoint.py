"""Find a run's files and load its model for evaluation.

A run is named by its scratch folder (<scratch>/runs/<run key>: last.ckpt, config.yaml,
mlflow_run_id, summary.json — written by leviathan.training), by a checkpoint file inside it,
or by its MLflow run id (the folder is then found from the run's `paths.scratch_dir` param and
`run_key` tag; config.yaml comes from the run's artifacts when the folder lacks it).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leviathan.errors import LeviathanError
from leviathan.tracking.runs import CKPT as CKPT_NAME
from leviathan.tracking.runs import CONFIG as CONFIG_FILE
from leviathan.tracking.runs import RunFolder, run_folder_of

RUN_ID_RE = re.compile(r"^[0-9a-f]{32}$")


class CheckpointError(LeviathanError, RuntimeError):
    """The run, its checkpoint or its config cannot be found or read; the message says which."""


@dataclass
class RunFiles:
    run_dir: Path  # the run's scratch folder
    checkpoint: Path  # the Lightning checkpoint evaluated
    config: Any  # the resolved training config (DictConfig)
    run_id: str | None  # the MLflow run id (None: the run was never tracked)
    tracking_uri: str | None  # where that run lives (the training config's tracking.uri)


def locate(target: str | os.PathLike, *, tracking_uri: str | None = None) -> RunFiles:
    """RunFiles for a run folder, a checkpoint file, or an MLflow run id."""
    from omegaconf import OmegaConf

    s = str(target)
    path = Path(s).expanduser()
    if path.is_file():
        ckpt, run_dir = path, path.parent
    elif path.is_dir():
        run_dir = path
        ckpt = run_dir / CKPT_NAME
        if not ckpt.is_file():
            found = sorted(run_dir.glob("*.ckpt"), key=lambda p: p.stat().st_mtime)
            if not found:
                raise CheckpointError(f"{run_dir}: no {CKPT_NAME} (or any *.ckpt) in this folder;"
                                      " has the run saved a checkpoint yet?")
            ckpt = found[-1]
    elif RUN_ID_RE.match(s):
        return _from_run_id(s, tracking_uri)
    else:
        raise CheckpointError(f"{s!r} is neither a checkpoint file, a run folder, nor an MLflow "
                              "run id (32 hex digits)")
    cfg_path = RunFolder(run_dir).config
    run_id = RunFolder(run_dir).run_id()
    if cfg_path.is_file():
        config = OmegaConf.load(cfg_path)
    elif run_id and tracking_uri:
        config = _artifact_config(run_id, tracking_uri)
    else:
        raise CheckpointError(f"{cfg_path}: missing (the resolved training config written beside "
                              "the checkpoint), and no MLflow run to fetch it from")
    from leviathan.tracking.credentials import use_credentials

    uri = tracking_uri or OmegaConf.select(config, "tracking.uri")
    if uri:  # the run's own login when no other is set (config.yaml: userinfo masked)
        uri = use_credentials(uri, None if tracking_uri else
                              OmegaConf.select(config, "tracking.credentials_file"))
    return RunFiles(run_dir=run_dir, checkpoint=ckpt, config=config, run_id=run_id,
                    tracking_uri=uri)


def _artifact_config(run_id: str, uri: str):
    import tempfile

    from mlflow.tracking import MlflowClient
    from omegaconf import OmegaConf

    with tempfile.TemporaryDirectory() as tmp:
        try:
            p = MlflowClient(uri).download_artifacts(run_id, CONFIG_FILE, tmp)
        except Exception as e:
            raise CheckpointError(f"MLflow run {run_id} at {uri}: cannot fetch its {CONFIG_FILE} "
                                  f"artifact ({type(e).__name__}: {str(e)[:200]})") from e
        return OmegaConf.load(p)


def _from_run_id(run_id: str, uri: str | None) -> RunFiles:
    from mlflow.tracking import MlflowClient

    from leviathan.tracking.server import check_reachable

    if not uri:
        raise CheckpointError(f"{run_id} looks like an MLflow run id: set tracking.uri (or "
                              "eval.tracking_uri) to the server that holds it")
    check_reachable(uri)
    try:
        run = MlflowClient(uri).get_run(run_id)
    except Exception as e:
        raise CheckpointError(f"MLflow run {run_id} not found at {uri} "
                              f"({type(e).__name__}: {str(e)[:200]})") from e
    folder = run_folder_of(run)
    if folder is None:
        raise CheckpointError(f"MLflow run {run_id} has no paths.scratch_dir param or run_key "
                              "tag: pass its scratch folder instead")
    run_dir = folder.path
    if not run_dir.is_dir():
        raise CheckpointError(f"MLflow run {run_id}: its scratch folder {run_dir} (from the "
                              "paths.scratch_dir param and run_key tag) is not on this machine")
    files = locate(run_dir, tracking_uri=uri)
    files.run_id = files.run_id or run_id
    return files


def load_model(files: RunFiles, device: str = "cpu"):
    """(model in eval mode on `device`, checkpoint global step) from the run's checkpoint."""
    import torch

    from leviathan.models import build_model

    try:
        # our own file (Lightning checkpoint with RNG and data state, hence not weights_only)
        ckpt = torch.load(files.checkpoint, map_location="cpu", weights_only=False, mmap=True)
    except Exception as e:
        raise CheckpointError(f"{files.checkpoint}: cannot be read as a checkpoint "
                              f"({type(e).__name__}: {str(e)[:200]})") from e
    state = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    if state is None:
        raise CheckpointError(f"{files.checkpoint}: no state_dict (not a Lightning checkpoint)")
    weights = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    if not weights:
        raise CheckpointError(f"{files.checkpoint}: no model.* weights in its state_dict")
    if "model" not in files.config:
        raise CheckpointError(f"{files.run_dir / CONFIG_FILE}: no `model` section")
    model = build_model(files.config.model)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{files.checkpoint}: weights do not fit the config's model "
                              f"(missing {missing[:5]}, unexpected {unexpected[:5]}); was "
                              f"{CONFIG_FILE} changed?")
    step = int(ckpt.get("global_step", -1))
    del ckpt, state
    return model.to(device).eval(), step


def tokenizer_name(files: RunFiles) -> str:
    from omegaconf import OmegaConf

    return str(OmegaConf.select(files.config, "data.tokenizer", default="o200k_base"))
