"""Fast unit tests of the training pieces: plan, schedule, config hash, buckets, exact resume
of the batch wrapper under prefetching, atomic checkpoints' data state, signal flag."""

from __future__ import annotations

import math
import os
import signal

import numpy as np
import pytest
import torch

from leviathan.training.batches import ResumableBatches
from leviathan.training.config import (
    TrainConfigError,
    TrainerConfig,
    config_hash,
    flatten,
    trainer_config,
)
from leviathan.training.evaluation import frequency_buckets
from leviathan.training.plan import plan_run
from leviathan.training.schedule import lr_at
from leviathan.training.signals import PreemptionFlag

COUNTS = {"total": 1000, "input": 600, "head": 300, "body": 100}


def test_plan_from_token_budget_and_accumulation():
    tc = TrainerConfig(global_batch=16, micro_batch=2, devices=2, num_nodes=2,
                       tokens_per_param=20.0, budget_params="total", warmup_fraction=0.1)
    assert tc.world_size == 4 and tc.accumulation == 2
    plan = plan_run(tc, seq_len=64, n_params=COUNTS, flops_per_token=6e3)
    assert plan.tokens_per_step == 16 * 64
    assert plan.budget_tokens == 20_000
    assert plan.max_steps == math.ceil(20_000 / 1024) == 20 and plan.warmup_steps == 2
    plan = plan_run(TrainerConfig(global_batch=16, micro_batch=16, tokens=10_000,
                                   warmup_steps=0), 64, COUNTS, 1.0)
    assert plan.max_steps == 10 and plan.budget_tokens == 10_000
    plan = plan_run(TrainerConfig(global_batch=16, micro_batch=16, budget_params="body"),
                     64, COUNTS, 1.0)
    assert plan.budget_tokens == 2000 and plan.max_steps == 2


@pytest.mark.parametrize("kw, key", [
    ({"global_batch": 10, "micro_batch": 4}, "trainer.global_batch"),
    ({"global_batch": 8, "micro_batch": 4, "devices": 4}, "trainer.global_batch"),
    ({"lr": 1e-3, "min_lr": 1e-2}, "trainer.min_lr"),
    ({"budget_params": "embedding"}, "trainer.budget_params"),
    ({"micro_batch": 0}, "trainer.micro_batch"),
    ({"strategy": "ddp_spawn", "devices": 2}, "trainer.strategy"),
])
def test_bad_trainer_values_name_the_key(kw, key):
    base = {"global_batch": 8, "micro_batch": 4}
    with pytest.raises(TrainConfigError, match=key.replace(".", r"\.")):
        TrainerConfig(**{**base, **kw})


def test_unknown_trainer_key_is_named():
    with pytest.raises(TrainConfigError, match=r"trainer\.grad_clipp: unknown key"):
        trainer_config({"grad_clipp": 1.0})


def test_schedule_warmup_then_cosine_to_min_lr():
    kw = {"lr": 1e-3, "min_lr": 1e-4, "warmup_steps": 10, "total_steps": 110}
    lrs = [lr_at(s, **kw) for s in range(110)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(b > a for a, b in zip(lrs[:9], lrs[1:10], strict=True))  # warm-up rises
    assert all(b <= a for a, b in zip(lrs[10:], lrs[11:], strict=False))  # decay falls
    assert lrs[-1] == pytest.approx(1e-4)
    assert lrs[60] == pytest.approx(1e-4 + 0.5 * 9e-4 * (1 + math.cos(math.pi * 50 / 99)))


def test_config_hash_ignores_tracking_paths_meta():
    base = {"model": {"d_model": 64}, "trainer": {"lr": 1e-3}, "seed": 0,
            "tracking": {"uri": "a"}, "paths": {"root_dir": "/x"},
            "meta": {"sweep": "s1"}, "run_name": "r1"}
    other = {**base, "tracking": {"uri": "b"}, "paths": {"root_dir": "/y"},
             "meta": {"sweep": "s2"}, "run_name": "r2"}
    assert config_hash(base) == config_hash(other)
    assert config_hash(base) != config_hash({**base, "seed": 1})
    assert config_hash(base) != config_hash({**base, "model": {"d_model": 65}})
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": None}) == {"a.b": 1, "a.c": [1, 2],
                                                                 "d": None}


def test_frequency_buckets_are_log_spaced():
    counts = np.array([0, 1, 9, 10, 99, 100, 12345])
    b = frequency_buckets(counts, vocab=10, base=10.0)
    assert b.names == ["0", "1e0-1e1", "1e1-1e2", "1e2-1e3", "1e3-1e4", "1e4-1e5"]
    # ids 7..9 lie beyond the counts: never seen
    assert b.bucket_of_id.tolist() == [0, 1, 1, 2, 2, 3, 5, 0, 0, 0]
    assert b.ids_per_bucket == [4, 2, 2, 1, 0, 1]
    assert b.edges == [0.0, 1.0, 10.0, 100.0, 1000.0, 10000.0]
    assert frequency_buckets(None, 10) is None


class CountingStream:
    """A stateful stream of distinct batches: batch i holds the value i."""

    def __init__(self):
        self.n = 0

    def __iter__(self):
        while True:
            b = torch.full((2, 3), self.n)
            self.n += 1
            yield b

    def state_dict(self):
        return {"n": self.n}

    def load_state_dict(self, s):
        self.n = s["n"]


def test_resumable_batches_exact_under_prefetch():
    """State taken while the fetcher holds batches ahead resumes at the first one not trained."""
    w = ResumableBatches(CountingStream())
    it = iter(w)
    ahead = [next(it) for _ in range(3)]  # the fetcher pulled 3, training used 1
    w.consume(ahead[0])
    state = w.data_state()
    assert state["stream"] == {"n": 3} and len(state["pending"]) == 2
    w2 = ResumableBatches(CountingStream())
    w2.load_data_state(state)
    got = [int(b[0, 0]) for _, b in zip(range(4), iter(w2), strict=False)]
    assert got == [1, 2, 3, 4]
    # a second iter() (Lightning may call it again) replays what nobody trained on
    w3 = ResumableBatches(CountingStream())
    it3 = iter(w3)
    next(it3), next(it3)
    assert [int(b[0, 0]) for _, b in zip(range(3), iter(w3), strict=False)] == [0, 1, 2]


def test_preemption_flag_records_chains_and_restores():
    """The signal is only recorded; the handler that was there before (submitit's requeue) runs
    when chain() is called after the checkpoint; uninstall() puts it back."""
    calls = []
    prev = signal.signal(signal.SIGUSR2, lambda s, f: calls.append(s))
    try:
        flag = PreemptionFlag().install()
        try:
            os.kill(os.getpid(), signal.SIGUSR2)
            os.kill(os.getpid(), signal.SIGUSR1)
            assert flag.received == signal.SIGUSR2 and calls == []
            flag.chain()
            assert calls == [signal.SIGUSR2]
        finally:
            flag.uninstall()
        os.kill(os.getpid(), signal.SIGUSR2)
        assert calls == [signal.SIGUSR2, signal.SIGUSR2]
        # train()'s order: uninstall, then chain (it used to find nothing left to chain to)
        flag = PreemptionFlag().install()
        os.kill(os.getpid(), signal.SIGUSR2)
        flag.uninstall()
        flag.chain()
        assert calls == [signal.SIGUSR2] * 3
    finally:
        signal.signal(signal.SIGUSR2, prev)


@pytest.mark.parametrize("trainer", ["cpu", "gpu", "debug", "default"],
                         ids=lambda t: f"trainer_{t}")  # an id "gpu" would skip it
def test_every_trainer_config_composes_and_validates(trainer, tmp_path):
    from omegaconf import OmegaConf

    from leviathan.config import compose
    from leviathan.tracking.config import tracking_config

    cfg = compose("train", [f"trainer={trainer}", f"paths.root_dir={tmp_path}"])
    tc = trainer_config(cfg)
    assert tc.global_batch % (tc.micro_batch * tc.world_size) == 0
    assert tracking_config(cfg).experiment == "leviathan"
    paths = OmegaConf.to_container(cfg.paths, resolve=True)
    assert set(paths) == {"root_dir", "data_dir", "scratch_dir", "sweeps_dir", "mlflow_dir"}
    for key in ("data_dir", "sweeps_dir", "mlflow_dir"):
        assert paths[key].startswith(str(tmp_path)), key
    assert cfg.meta.arm == cfg.model.arm and cfg.meta.size == cfg.model.size
    if trainer == "gpu":
        assert tc.precision == "bf16-mixed" and tc.peak_flops > 0


def test_config_that_cannot_compose_fails_naming_the_group():
    from hydra.errors import MissingConfigException

    from leviathan.config import compose

    with pytest.raises(MissingConfigException, match="trainer"):
        compose("train", ["trainer=no_such_trainer"])


def test_ctrl_c_checkpoints_first_and_aborts_when_pressed_twice():
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN under `nohup ... &`
    flag = PreemptionFlag().install()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        assert flag.received == signal.SIGINT
        flag.chain()  # Python's default SIGINT handler is not chained (it would only raise)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        flag.uninstall()
    assert signal.getsignal(signal.SIGINT) is before  # the handler found is put back


def test_module_state_dict_holds_the_model_once():
    from leviathan.training.module import LanguageModelModule

    tc = TrainerConfig(global_batch=2, micro_batch=1)
    plan = plan_run(tc, 4, COUNTS, 1.0)
    module = LanguageModelModule(torch.nn.Linear(2, 2), tc, plan, ResumableBatches(None))
    assert sorted(module.state_dict()) == ["model.bias", "model.weight"]


def test_preemption_rehearsal_names_a_run_and_a_step(monkeypatch):
    from leviathan.training.signals import REHEARSE_PREEMPTION_ENV, rehearsal_step

    assert REHEARSE_PREEMPTION_ENV == "LEVIATHAN_REHEARSE_PREEMPTION"
    monkeypatch.setenv(REHEARSE_PREEMPTION_ENV, "smoke-164K-s0-dense@2")
    assert rehearsal_step("smoke-164K-s0-dense") == 2
    assert rehearsal_step("smoke-164K-s0-leviathan") is None  # another run does not wait
    monkeypatch.setenv(REHEARSE_PREEMPTION_ENV, "smoke-164K-s0-dense@soon")
    assert rehearsal_step("smoke-164K-s0-dense") is None
