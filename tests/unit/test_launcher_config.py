"""The launcher config group: yaml files = schema, validation naming keys, sbatch mapping."""

from __future__ import annotations

import dataclasses

import cloudpickle
import pytest
from helpers import REPO
from omegaconf import OmegaConf

from leviathan.sweep.launcher import ResumableCall
from leviathan.sweep.launcher_config import (
    LauncherError,
    LocalLauncherConfig,
    SlurmLauncherConfig,
    local_parameters,
    slurm_parameters,
    to_launcher_config,
)
from leviathan.sweep.selfcheck import count_steps
from leviathan.sweep.slurm_check import gres_gpus, map_slurm_state

CONF = REPO / "conf" / "launcher"
SCHEMAS = {"local": LocalLauncherConfig, "slurm": SlurmLauncherConfig}


def _compose(which: str, scratch: str = "/scratch/me", **launcher):
    """The sweep config composed with launcher=<which>, then keys set (unchecked) on a copy."""
    from leviathan.config import compose

    node = OmegaConf.to_container(compose("sweep", [f"launcher={which}",
                                                    f"paths.scratch_dir={scratch}"]),
                                  resolve=True)
    node["launcher"].update(launcher)
    return OmegaConf.create(node)


@pytest.mark.parametrize("name", ["local", "slurm"])
def test_each_option_composes_into_its_schema(name):
    cfg = to_launcher_config(_compose(name))
    schema = SCHEMAS[name]
    assert isinstance(cfg, schema)
    assert cfg.folder == "/scratch/me/submitit"  # interpolated from paths.scratch_dir
    for f in dataclasses.fields(schema):  # the option files hold only what differs: nothing
        if f.name == "folder":
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        assert getattr(cfg, f.name) == default, f"{name}.yaml {f.name} differs from the schema"
    keys = [ln for ln in (CONF / f"{name}.yaml").read_text().splitlines()
            if ln and not ln.startswith(("#", " ", "defaults:"))]
    assert keys == [], f"{name}.yaml restates schema keys: {keys}"


def test_register_configs_puts_schemas_in_config_store():
    from hydra.core.config_store import ConfigStore

    from leviathan.config import register_schemas

    register_schemas()
    repo = ConfigStore.instance().repo["launcher"]
    assert {"local_schema.yaml", "slurm_schema.yaml"} <= set(repo)


@pytest.mark.parametrize(("name", "key", "value", "needle"), [
    ("local", "max_parallel", 0, "launcher.max_parallel: must be an integer >= 1"),
    ("local", "signal_delay_s", 86400, "launcher.signal_delay_s: 86400s leaves no time"),
    ("local", "timeout_min", 0, "launcher.timeout_min: must be a number > 0"),
    ("local", "gpus_per_node", 1, "launcher.visible_gpus"),
    ("local", "setup", "module load cuda", "launcher.setup"),
    ("local", "bogus", 1, "launcher.bogus: unknown key"),
    ("local", "name", "kubernetes", "launcher.name: must be one of"),
    ("slurm", "nodes", 0, "launcher.nodes"),
    ("slurm", "cpus_per_task", 1.5, "launcher.cpus_per_task"),
    ("slurm", "mem_gb", -1, "launcher.mem_gb: must be a number >= 0"),
    ("slurm", "timeout_min", 1, "launcher.signal_delay_s: 120s leaves no time"),
    ("slurm", "partition", "", "launcher.partition: must be null or a non-empty string"),
    ("slurm", "array_parallelism", 0, "launcher.array_parallelism"),
    ("slurm", "additional_parameters", "exclusive", "launcher.additional_parameters"),
    ("slurm", "max_parallel", 2, "launcher.max_parallel: unknown key"),
])
def test_validation_names_the_key(name, key, value, needle):
    with pytest.raises(LauncherError) as err:
        to_launcher_config(_compose(name, **{key: value}))
    assert needle in str(err.value)


def test_slurm_mapping_to_sbatch_flags():
    from submitit.slurm.slurm import _make_sbatch_string

    cfg = to_launcher_config(_compose(
        "slurm", partition="gpu", account="proj42", qos="high", gpus_per_node=8,
        tasks_per_node=8, cpus_per_task=12, mem_gb=0.5, timeout_min=90, constraint="h100",
        array_parallelism=4, setup=["module load cuda/12.4", "source .venv/bin/activate"],
        additional_parameters={"exclusive": True}))
    params = slurm_parameters(cfg)
    assert params["mem"] == "512MB" and params["time"] == 90 and params["gpus_per_node"] == 8
    script = _make_sbatch_string(command="python -m x", folder="/tmp/sub/%j", map_count=10,
                                 **params)
    for flag in ["--partition=gpu", "--account=proj42", "--qos=high", "--gpus-per-node=8",
                 "--ntasks-per-node=8", "--cpus-per-task=12", "--mem=512MB", "--time=90",
                 "--constraint=h100", "--array=0-9%4", "--signal=USR2@120", "--requeue",
                 "--exclusive", "--job-name=leviathan", "--nodes=1"]:
        assert f"#SBATCH {flag}\n" in script, flag
    assert script.index("module load cuda/12.4") < script.index("srun")


def test_slurm_mapping_leaves_out_unset_flags():
    params = slurm_parameters(to_launcher_config(
        _compose("slurm", mem_gb=0, requeue=False)))
    for key in ("partition", "account", "qos", "constraint", "gpus_per_node", "mem"):
        assert key not in params
    assert params["additional_parameters"] == {"no-requeue": True}
    assert slurm_parameters(to_launcher_config(_compose("slurm", mem_gb=16)))["mem"] == "16GB"


def test_local_mapping():
    cfg = to_launcher_config(_compose("local", timeout_min=2.5, setup=["export A=1"]))
    assert local_parameters(cfg) == {"timeout_min": 2.5, "signal_delay_s": 60,
                                     "tasks_per_node": 1, "gpus_per_node": 0,
                                     "setup": ["export A=1"]}


def test_resumable_call_follows_checkpointable_protocol(tmp_path):
    from submitit.helpers import DelayedSubmission

    call = ResumableCall(count_steps, 3, str(tmp_path / "s.json"), step_s=0.0)
    again = cloudpickle.loads(cloudpickle.dumps(call))
    assert again()["count"] == 3
    delayed = call.checkpoint()
    assert isinstance(delayed, DelayedSubmission) and delayed.function is call
    assert delayed.args == () and delayed.kwargs == {}
    assert ResumableCall(count_steps, 3, "x", requeue=False).checkpoint() is None


def test_count_steps_resumes_from_its_file(tmp_path):
    state = tmp_path / "c.json"
    state.write_text('{"count": 4, "starts": [0]}')  # as left by a killed first attempt
    out = count_steps(6, str(state), step_s=0.0)
    assert out["count"] == 6 and out["starts"] == [0, 4]


@pytest.mark.parametrize(("raw", "state"), [
    ("PENDING", "queued"), ("REQUEUED", "queued"), ("RUNNING", "running"),
    ("COMPLETING", "running"), ("COMPLETED", "finished"), ("CANCELLED by 0", "failed"),
    ("CANCELLED+", "failed"), ("TIMEOUT", "failed"), ("OUT_OF_MEMORY", "failed"),
    ("UNKNOWN", "unknown"), ("", "unknown"), (None, "unknown"),
])
def test_map_slurm_state(raw, state):
    assert map_slurm_state(raw) == state


def test_gres_gpu_parsing():
    assert gres_gpus("gpu:8") == 8 and gres_gpus("gpu:h100:4(S:0-1)") == 4
    assert gres_gpus("(null)") == 0
