"""Runs bigger than one process (issue 41): the one topology check (plan time and job start),
srun --kill-on-bad-exit for jobs of several tasks, and trainer.ddp_timeout_s reaching
Lightning's strategy. The SLURM side for real: tests/integration/test_slurm_nodes.py."""

from __future__ import annotations

from datetime import timedelta

import pytest

from leviathan.sweep.launcher_config import SlurmLauncherConfig, slurm_parameters
from leviathan.training.config import TrainerConfig, config_hash
from leviathan.training.topology import TopologyError, check_job_start, check_launch

SLURM = {"name": "slurm", "nodes": 1, "tasks_per_node": 1, "gpus_per_node": 0}


def trainer(**kw):
    return {"num_nodes": 1, "devices": 1, "accelerator": "cpu", **kw}


@pytest.mark.parametrize(("launcher", "tc", "message"), [
    ({"nodes": 2}, {}, "run-a: launcher.nodes x launcher.tasks_per_node = 2 x 1 = 2 tasks, but "
     "trainer.num_nodes x trainer.devices = 1 x 1 = 1 rank: each task is one rank; set "
     "trainer.num_nodes=2 trainer.devices=1"),
    ({}, {"num_nodes": 2}, "= 1 x 1 = 1 task, but trainer.num_nodes x trainer.devices = 2 x 1 = "
     "2 ranks: each task is one rank; set launcher.nodes=2 launcher.tasks_per_node=1"),
    ({"nodes": 2}, {"devices": 2}, "the same total, split differently; set "
     "trainer.num_nodes=2 trainer.devices=1"),
    ({"tasks_per_node": 8, "gpus_per_node": 4}, {"devices": 8, "accelerator": "gpu"},
     "launcher.gpus_per_node=4 but trainer.devices=8: one GPU per rank"),
])
def test_plan_time_mismatch_is_one_line_naming_the_keys(launcher, tc, message):
    with pytest.raises(TopologyError) as err:
        check_launch({**SLURM, **launcher}, trainer(**tc), "run-a")
    msg = str(err.value)
    assert message in msg and msg.startswith("run-a: ") and "\n" not in msg


@pytest.mark.parametrize(("launcher", "tc"), [
    ({}, {}),
    ({"nodes": 2}, {"num_nodes": 2}),
    ({"nodes": 2, "tasks_per_node": 8, "gpus_per_node": 8},
     {"num_nodes": 2, "devices": 8, "accelerator": "gpu"}),
])
def test_matching_topologies_pass(launcher, tc):
    check_launch({**SLURM, **launcher}, trainer(**tc), partition_gpus=8)


def test_local_launcher_leaves_the_ranks_to_lightning():
    check_launch({"name": "local", "tasks_per_node": 1}, trainer(devices=2))


def test_a_gpu_run_on_a_gpu_partition_must_ask_for_its_gpus():
    tc = trainer(devices=4, accelerator="gpu")
    launcher = {**SLURM, "tasks_per_node": 4}
    with pytest.raises(TopologyError, match=r"trainer.accelerator=gpu but "
                       r"launcher.gpus_per_node=0 on a partition with 8 GPUs per node: .* set "
                       r"launcher.gpus_per_node=4"):
        check_launch(launcher, tc, partition_gpus=8)
    check_launch(launcher, tc)  # the dry run does not ask sinfo
    check_launch({**launcher, "additional_parameters": {"gres": "gpu:4"}}, tc, partition_gpus=8)


def _slurm_env(ntasks: int, nnodes: int, **extra) -> dict[str, str]:
    return {"SLURM_NTASKS": str(ntasks), "SLURM_NNODES": str(nnodes), "SLURM_JOB_NAME": "job",
            "SLURM_PROCID": "0", **extra}


def test_job_start_compares_what_slurm_started_with_the_trainer():
    with pytest.raises(TopologyError) as err:
        check_job_start(trainer(), _slurm_env(2, 2))
    assert str(err.value) == (
        "SLURM started 2 tasks on 2 nodes (SLURM_NTASKS, SLURM_NNODES: launcher.nodes x "
        "launcher.tasks_per_node), but trainer.num_nodes x trainer.devices = 1 x 1 = 1 rank: "
        "each task is one rank; set trainer.num_nodes=2 trainer.devices=1, or start 1 x 1 tasks")
    with pytest.raises(TopologyError, match="SLURM started 2 tasks on 1 node .* = 2 x 1"):
        check_job_start(trainer(num_nodes=2), _slurm_env(2, 1))
    with pytest.raises(TopologyError, match=r"SLURM_GPUS_ON_NODE \(launcher.gpus_per_node\)=2 "
                                            "but trainer.devices=4"):
        check_job_start(trainer(devices=4, accelerator="gpu"),
                        _slurm_env(4, 1, SLURM_GPUS_ON_NODE="2"))
    check_job_start(trainer(num_nodes=2), _slurm_env(2, 2))
    check_job_start(trainer(devices=4), _slurm_env(4, 1))


def test_job_start_outside_slurm_steps_checks_nothing():
    check_job_start(trainer(devices=2), {})  # not under SLURM: Lightning starts its ranks
    # an interactive allocation (job name bash): Lightning does not take ranks from SLURM
    check_job_start(trainer(devices=2), _slurm_env(1, 1, SLURM_JOB_NAME="bash"))


def _srun_args(**kw) -> list[str]:
    return slurm_parameters(SlurmLauncherConfig(**kw))["srun_args"]


def test_jobs_of_several_tasks_end_together():
    assert _srun_args(nodes=2) == ["--kill-on-bad-exit=1"]
    assert _srun_args(tasks_per_node=2, srun_args=["--cpu-bind=none"]) == [
        "--kill-on-bad-exit=1", "--cpu-bind=none"]
    assert _srun_args() == []  # one task: nothing to end together
    assert _srun_args(nodes=2, kill_on_bad_exit=False) == []  # the cluster's default
    assert _srun_args(nodes=2, srun_args=["--kill-on-bad-exit=0"]) == ["--kill-on-bad-exit=0"]


def test_ddp_timeout_reaches_lightnings_strategy_and_not_the_hash():
    from lightning.pytorch.strategies import DDPStrategy

    from leviathan.training.distributed import strategy

    tc = TrainerConfig(num_nodes=2, global_batch=2, micro_batch=1, ddp_timeout_s=45)
    ddp = strategy(tc)
    assert isinstance(ddp, DDPStrategy) and ddp._timeout == timedelta(seconds=45)
    tc.strategy = "ddp_find_unused_parameters_true"
    unused = strategy(tc)
    assert unused._ddp_kwargs.get("find_unused_parameters") is True
    assert unused._timeout == timedelta(seconds=45)
    assert strategy(TrainerConfig()) == "auto"  # one rank: Lightning's own choice
    tc.strategy = "no_such_strategy"
    assert strategy(tc) == "no_such_strategy"  # Lightning names that error itself
    base = {"trainer": {"lr": 1e-3}}
    assert config_hash(base) == config_hash({"trainer": {"lr": 1e-3, "ddp_timeout_s": 30}})
