"""Where a run lives and how it is found, in one place: the run folder, the MLflow names, the
queries. Training writes through it; the sweep, its status, eval and the analysis read through it.

Run folder: ``<paths.scratch_dir>/runs/<run key>`` holds last.ckpt (the newest checkpoint),
the older ones kept beside it (prev_<step>.ckpt) and their checksums (checkpoints.json), WSD-S
snapshots (step_<step>.ckpt), the MLflow run id, the resolved config, its hash, the MLflow
outbox (what the server has not confirmed yet) and, once finished, summary.json (`RunFolder`).
The run key is `run_name`, else ``<arm>-<size>-<config hash[:12]>`` (`run_key`).

MLflow: every training run carries the tags in `Tag` (kind=train, sweep, pair, arm, size,
family, config_hash, ...); a sweep has one parent run (kind=sweep). Parameter counts are params
``n_params/<total|input|head|body>``. The queries below page through MLflow's search.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def write_atomic(path: Path, text: str) -> None:
    """Write a run-folder file whole or not at all (a temporary file renamed over it)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class Tag:
    """MLflow tag names (a run's identity; `meta.*` in the run config supplies the sweep ones)."""

    KIND = "kind"  # train | sweep | ...
    SWEEP = "sweep"  # sweep name
    PAIR = "pair"  # matched-pair id within the sweep: <size>-<budget>-s<seed>
    ARM = "arm"  # dense | leviathan | a control (leviathan.sweep.grid.CONTROLS)
    SIZE = "size"  # the Dense size's ladder name, e.g. 109M
    FAMILY = "family"  # isoparametric | isobody | decoupled | data_scaling | ...
    SEED = "seed"  # model-init seed
    LR = "lr"  # the run's peak learning rate (trainer.lr)
    SCHEDULE = "schedule"  # cosine | wsd | constant (a WSD-S main run: never cooled down)
    COOLDOWN = "cooldown"  # WSD-S branch: the multiple of the token budget it decays to
    BRANCH_OF = "branch_of"  # WSD-S branch: the main run's name
    CONFIG_HASH = "config_hash"  # sha256 of what the run computes (training.config.config_hash)
    DATA_FINGERPRINT = "data_fingerprint"  # hash of the first batches of the run's data layout
    GIT_COMMIT = "git_commit"  # code version (with -dirty)
    RUN_KEY = "run_key"  # the run folder's name
    FAILURE_REASON = "failure_reason"  # why a FAILED/KILLED run stopped
    FAILED_AT_STEP = "failed_at_step"
    FAILURE_KIND = "failure_kind"  # a failure the sweep's status names: disk_full
    PREEMPTED_AT_STEP = "preempted_at_step"
    HEARTBEAT = "heartbeat"  # unix seconds; a live job's writer sets it every
    #   tracking.heartbeat_every_s (a RUNNING run whose beats stopped is lost)
    RUN_UID = "run_uid"  # the run's idempotency key (also in <run folder>/mlflow_run.json): a
    #   retry, a resumed attempt or a sync finds the run by it instead of creating another
    FIT_LATEST = "fit_latest"  # sweep parent: artifact folder of its newest fit
    #   (fit/<UTC time>-<fit config hash[:12]>: every fit logs a folder of its own)
    FIT_CONFIG_HASH = "fit_config_hash"  # sweep parent: the newest fit's config hash (sha256)
    PLANNED_RUNS = "planned_runs"  # sweep parent: the runs of its plan (set at each launch); the
    #   job that ends the last of them ends the parent (leviathan.tracking.mlflow_ops.end_sweep)
    PARENT = "mlflow.parentRunId"  # MLflow's own: nested under the sweep's parent run
    RUN_NAME = "mlflow.runName"  # MLflow's own
    NOTE = "mlflow.note.content"  # MLflow's own: the run's description (markdown, on its page)


# an experiment's kind (MLflow's own tag): without it MLflow 3's UI guesses, and an experiment
# without traces opens on the GenAI overview ("Traces 0"); model development opens on its runs
EXPERIMENT_KIND, MODEL_DEVELOPMENT = "mlflow.experimentKind", "custom_model_development"


KIND_TRAIN, KIND_SWEEP = "train", "sweep"
N_PARAMS = "n_params/{}"  # param name of a parameter count: total | input | head | body


# ------------------------------------------------------------------ the run folder
CKPT = "last.ckpt"
CKPT_MANIFEST = "checkpoints.json"  # size, sha256 and step of every checkpoint file written here
CORRUPT = ".corrupt"  # suffix of a checkpoint moved aside because it failed its check
RUN_ID = "mlflow_run_id"
SUMMARY = "summary.json"
CONFIG = "config.yaml"
CONFIG_HASH = "config_hash"
IDENTITY = "mlflow_run.json"  # run_uid, tracking uri, experiment, run name, tags, parent run
OUTBOX = "mlflow_outbox.jsonl"  # MLflow operations the server has not confirmed yet
EVAL = "eval"
RESUME_VERDICT = "resume.json"  # rank 0's choice of checkpoint for the other ranks of an attempt
RANK_FAILURES = "rank_failures"  # one file per rank that failed: its error and when


def run_key(cfg: Any, chash: str) -> str:
    """The run's folder name: run_name, else <arm>-<size>-<config hash prefix>."""
    name = cfg.get("run_name") if hasattr(cfg, "get") else None
    if name:
        return str(name)
    model = cfg["model"]
    return f"{model['arm']}-{model['size']}-{chash[:12]}"


@dataclass(frozen=True)
class RunFolder:
    """A run's scratch folder and the files in it."""

    path: Path

    @classmethod
    def of(cls, scratch_dir: str | Path, key: str) -> RunFolder:
        return cls(Path(scratch_dir).expanduser().resolve() / "runs" / key)

    @classmethod
    def of_config(cls, cfg: Any, chash: str) -> RunFolder:
        """The folder of a resolved run config (dict or DictConfig) whose config hash
        (leviathan.training.config.config_hash) is `chash`: it names the folder when the config
        has no run_name."""
        return cls.of(cfg["paths"]["scratch_dir"], run_key(cfg, chash))

    @property
    def key(self) -> str:
        return self.path.name

    @property
    def checkpoint(self) -> Path:
        return self.path / CKPT

    def snapshot(self, step: int) -> Path:
        """A checkpoint kept at `step` (trainer.snapshot_steps): where WSD-S branches start."""
        return self.path / f"step_{step}.ckpt"

    def previous(self, step: int) -> Path:
        """An older checkpoint kept for a fallback (trainer.keep_checkpoints), taken at `step`."""
        return self.path / f"prev_{step}.ckpt"

    def previous_checkpoints(self) -> list[Path]:
        """The older checkpoints kept here, newest first."""
        found = [(int(p.stem[5:]), p) for p in self.path.glob("prev_*.ckpt")
                 if p.stem[5:].isdigit()]
        return [p for _, p in sorted(found, reverse=True)]

    @property
    def checkpoint_manifest(self) -> Path:
        return self.path / CKPT_MANIFEST

    @property
    def run_id_file(self) -> Path:
        return self.path / RUN_ID

    @property
    def summary(self) -> Path:
        return self.path / SUMMARY

    @property
    def config(self) -> Path:
        return self.path / CONFIG

    @property
    def config_hash(self) -> Path:
        return self.path / CONFIG_HASH

    @property
    def identity(self) -> Path:
        return self.path / IDENTITY

    @property
    def outbox(self) -> Path:
        """The queue of MLflow operations not on the server yet (leviathan.tracking.outbox)."""
        return self.path / OUTBOX

    @property
    def outbox_files(self) -> tuple[Path, Path]:
        """What ties the folder to its MLflow run besides the run id: a fresh start drops it."""
        return self.identity, self.outbox

    @property
    def resume_verdict(self) -> Path:
        return self.path / RESUME_VERDICT

    @property
    def rank_failures(self) -> Path:
        return self.path / RANK_FAILURES

    @property
    def eval_dir(self) -> Path:
        return self.path / EVAL

    def run_id(self) -> str | None:
        """The MLflow run id recorded here (None before the run first reached MLflow)."""
        f = self.run_id_file
        return f.read_text().strip() or None if f.is_file() else None

    def finished(self) -> bool:
        return self.summary.is_file()


# ------------------------------------------------------------------ queries
def client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def experiment_id(c, name: str, create: bool = True) -> str | None:
    """The experiment's id; with `create`, created when absent, and tagged as model development
    (EXPERIMENT_KIND) when it has no kind yet (one made elsewhere, or before the tag)."""
    from mlflow.exceptions import MlflowException

    exp = c.get_experiment_by_name(name)
    if exp is not None:
        if create and EXPERIMENT_KIND not in exp.tags:
            try:
                c.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND, MODEL_DEVELOPMENT)
            except MlflowException:  # not allowed to (a reader): the UI only guesses its kind
                pass
        return exp.experiment_id
    if not create:
        return None
    try:
        return c.create_experiment(name, tags={EXPERIMENT_KIND: MODEL_DEVELOPMENT})
    except MlflowException:  # created concurrently by another process
        return c.get_experiment_by_name(name).experiment_id


def runs_url(uri: str, exp_id: str) -> str:
    """The MLflow UI's page of an experiment's runs. MLflow 3.17's UI chooses GenAI or model
    training views by one switch of its own (the URL's workflowType, else what the browser
    last chose, else GenAI), not by EXPERIMENT_KIND: this address sets it."""
    return f"{uri.rstrip('/')}/#/experiments/{exp_id}?workflowType=machine_learning"


def quote(s: str) -> str:
    """A string literal for an MLflow filter."""
    return "'" + str(s).replace("'", "\\'") + "'"


def search(c, exp_id: str, filter_string: str, order_by: list[str] | None = None,
           max_results: int | None = None) -> list[Any]:
    """Every run matching the filter (MLflow pages at 1000), newest first by default."""
    order_by = order_by or ["attributes.start_time DESC"]
    runs, token = [], None
    while True:
        page = c.search_runs([exp_id], filter_string=filter_string, order_by=order_by,
                             max_results=min(max_results or 1000, 1000), page_token=token)
        runs.extend(page)
        token = page.token
        if not token or (max_results and len(runs) >= max_results):
            return runs[:max_results] if max_results else runs


def sweep_filter(sweep: str, kind: str = KIND_TRAIN) -> str:
    return f"tags.{Tag.KIND} = {quote(kind)} and tags.{Tag.SWEEP} = {quote(sweep)}"


def training_runs(c, exp_id: str, sweep: str) -> list[Any]:
    """Every training run of the sweep (all attempts), newest first."""
    return search(c, exp_id, sweep_filter(sweep))


def parent_run(c, exp_id: str, sweep: str, tags: dict[str, str] | None = None,
               create: bool = True):
    """The sweep's parent run (kind=sweep, sweep=<name>); created when absent and `create`."""
    found = search(c, exp_id, sweep_filter(sweep, KIND_SWEEP), max_results=1)
    if found:
        return found[0]
    if not create:
        return None
    return c.create_run(exp_id, run_name=sweep,
                        tags={Tag.KIND: KIND_SWEEP, Tag.SWEEP: sweep, **(tags or {})})


def sweep_state(c, parent_id: str) -> str | None:
    """FINISHED or FAILED once every run the sweep's parent planned (Tag.PLANNED_RUNS) has
    ended, by its latest MLflow run (FAILED if any of them failed); None while a run is
    missing, live or KILLED (a preempted run's job is requeued and resumes it), or the parent
    does not say how many it planned."""
    parent = c.get_run(parent_id)
    planned = int(parent.data.tags.get(Tag.PLANNED_RUNS) or 0)
    if planned < 1:
        return None
    children = search(c, parent.info.experiment_id,
                      f"tags.{Tag.PARENT} = {quote(parent_id)} and tags.{Tag.KIND} = "
                      f"{quote(KIND_TRAIN)}")
    latest: dict[str, Any] = {}
    for run in sorted(children, key=lambda r: r.info.start_time or 0):  # the newest wins
        latest[run.data.tags.get(Tag.RUN_KEY) or run.info.run_name] = run
    states = [r.info.status for r in latest.values()]
    if len(states) < planned or any(s not in ("FINISHED", "FAILED") for s in states):
        return None
    return "FINISHED" if all(s == "FINISHED" for s in states) else "FAILED"


def sweep_names(c, exp_id: str) -> list[str]:
    """The sweeps that have a parent run in the experiment, newest first."""
    runs = search(c, exp_id, f"tags.{Tag.KIND} = {quote(KIND_SWEEP)}")
    return list(dict.fromkeys(r.data.tags[Tag.SWEEP] for r in runs if r.data.tags.get(Tag.SWEEP)))


def latest_sweep(c, exp_id: str) -> str | None:
    """The name of the most recently started sweep parent run, if any."""
    runs = search(c, exp_id, f"tags.{Tag.KIND} = {quote(KIND_SWEEP)}", max_results=1)
    return runs[0].data.tags.get(Tag.SWEEP) if runs else None


def finished_hashes(runs: list[Any]) -> set[str]:
    """Config hashes of the FINISHED runs among `runs`."""
    return {r.data.tags.get(Tag.CONFIG_HASH) for r in runs if r.info.status == "FINISHED"}


def run_folder_of(run: Any) -> RunFolder | None:
    """The scratch folder an MLflow training run wrote to (param paths.scratch_dir, tag
    run_key), or None when the run lacks them."""
    scratch = run.data.params.get("paths.scratch_dir")
    key = run.data.tags.get(Tag.RUN_KEY) or run.info.run_name
    return RunFolder.of(scratch, key) if scratch and key else None
