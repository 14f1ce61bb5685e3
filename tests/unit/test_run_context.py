"""A training run's state is one frozen RunContext, built once by train() and passed whole."""

from __future__ import annotations

import dataclasses

import pytest


def test_fit_receives_one_frozen_run_context_built_once(tmp_path, data_dir, monkeypatch):
    from helpers.train import compose, tiny

    from leviathan.training import engine, run
    from leviathan.training.context import RunContext

    built, got = [], []
    real = run.RunContext

    def build(**kw):
        built.append(real(**kw))
        return built[-1]

    def fit(*args, **kwargs):
        got.append((args, kwargs))
        return {"fit": "called"}

    monkeypatch.setattr(run, "RunContext", build)
    monkeypatch.setattr(engine, "fit", fit)
    cfg = compose(tiny(data_dir, tmp_path, "http://127.0.0.1:9", "run_name=ctx",
                       "tracking.connect_timeout_s=1"))
    assert run.train(cfg) == {"fit": "called"}

    assert len(built) == 1 and len(got) == 1
    (args, kwargs), = got
    assert kwargs == {} and len(args) == 1 and args[0] is built[0]
    ctx = args[0]
    assert isinstance(ctx, RunContext)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ctx.rank = 1
    assert ctx.key == "ctx" and ctx.run_dir == tmp_path.resolve() / "runs" / "ctx"
    assert ctx.is_zero and ctx.world_size == 1 and ctx.data_rank == 0
    assert ctx.folder.checkpoint == ctx.run_dir / "last.ckpt"
    assert ctx.plan.max_steps == 8 and ctx.tc.micro_batch == 1 and ctx.data_cfg.seq_len == 32
    assert ctx.chash == (ctx.run_dir / "config_hash").read_text().strip()
    assert ctx.container["run_name"] == "ctx" and ctx.cfg.run_name == "ctx"


def test_derived_values_are_properties_not_fields():
    from leviathan.training.context import RunContext

    fields = [f.name for f in dataclasses.fields(RunContext)]
    assert fields == ["cfg", "container", "mcfg", "data_cfg", "tc", "trk", "plan", "chash",
                      "key", "run_dir", "rank"]
    for name in ("folder", "is_zero", "world_size", "data_rank"):
        assert isinstance(getattr(RunContext, name), property), name
