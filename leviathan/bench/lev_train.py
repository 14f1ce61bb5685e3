"""The short CPU training comparison of the two LEV forms (part of `python -m leviathan.bench lev`).

Two runs of `leviathan.training.run.train`, identical but for `model.lev.form` (blocks,
khronos): the debug backbone (D 64, 2 layers, o200k_base padded to 200,376) with LEV at the
paper's settings (d_seed 128; blocks M 8, h 128), the demo corpus (data=debug, sequence 64),
the same seed, batch, schedule and token stream (their `data_fingerprint` tags are checked
equal). Validation runs twice (half-way and at the end): in eval mode LEV computes its whole
cached table, which for khronos costs minutes on a CPU. Both are MLflow children of one sweep
parent run (tags kind=sweep, sweep=<--sweep>), so the dashboard shows their curves side by
side. Extra Hydra overrides apply to
both runs.
A run whose config already finished is not retrained (train() returns its summary); one that
was interrupted resumes from its last checkpoint (every steps/6) when the command is rerun.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FORMS = ("blocks", "khronos")


def base_overrides(steps: int, seq_len: int, seed: int) -> list[str]:
    return ["model=debug", "model.arm=leviathan", "model.head=untied", "model.lev.d_seed=128",
            "model.lev.n_modes=8", "model.lev.hidden=128",
            f"model.max_seq_len={max(64, seq_len)}", "data=debug", f"data.seq_len={seq_len}",
            "trainer=debug", f"trainer.max_steps={steps}", "trainer.global_batch=8",
            "trainer.micro_batch=8", "trainer.lr=3.0e-3", "trainer.min_lr=3.0e-4",
            f"trainer.warmup_steps={max(1, steps // 20)}",
            f"trainer.val_every={max(1, steps // 2)}", f"trainer.ckpt_every={max(1, steps // 6)}",
            f"seed={seed}"]


def compose(overrides: list[str]):
    from leviathan.config import compose as compose_config

    return compose_config("train", overrides)


def compare_forms(*, steps: int, seq_len: int = 64, sweep: str = "lev_forms",
                  tracking_uri: str | None = None, overrides: list[str] | tuple = (),
                  seed: int = 0) -> dict:
    """Train both forms; return {form: {run_id, params, final losses, wall_s}, parent_run_id}."""
    from mlflow.tracking import MlflowClient

    from leviathan.models import resolve_model_config
    from leviathan.models.accounting import lev_params
    from leviathan.tracking.runs import experiment_id, parent_run
    from leviathan.tracking.server import ensure_local_server
    from leviathan.training.run import train

    common = [*base_overrides(steps, seq_len, seed), *overrides]
    if tracking_uri:
        common.append(f"tracking.uri={tracking_uri}")
    probe = compose(common)
    uri = str(probe.tracking.uri)
    ensure_local_server(uri, str(probe.paths.mlflow_dir))
    client = MlflowClient(tracking_uri=uri)
    exp = experiment_id(client, str(probe.tracking.experiment))
    parent = parent_run(client, exp, sweep, tags={"family": "lev_forms"})
    print(f"\nLEV forms training comparison: sweep {sweep} (MLflow parent run "
          f"{parent.info.run_id} on {uri}), {steps} steps each")
    out: dict = {"sweep": sweep, "parent_run_id": parent.info.run_id, "tracking_uri": uri}
    for form in FORMS:
        cfg = compose([*common, f"model.lev.form={form}", f"run_name={sweep}-{form}",
                       f"tracking.parent_run_id={parent.info.run_id}", f"meta.sweep={sweep}",
                       f"meta.pair=forms-s{seed}", "meta.family=lev_forms"])
        if cfg.model.arm != "leviathan":
            raise ValueError(f"model.arm={cfg.model.arm}: the LEV forms comparison trains "
                             f"arm=leviathan only")
        summary = train(cfg)
        assert summary["n_params"]["input"] == lev_params(resolve_model_config(cfg.model))
        out[form] = {"run_id": summary["run_id"], "params": summary["n_params"]["total"],
                     "lev_params": summary["n_params"]["input"],
                     "final_train_loss": summary["final_train_loss"],
                     "final_val_loss": summary["final_val_loss"],
                     "tokens_seen": summary["tokens_seen"], "wall_s": summary["wall_s"]}
    prints = {f: client.get_run(out[f]["run_id"]).data.tags.get("data_fingerprint")
              for f in FORMS}
    if len(set(prints.values())) != 1 or None in prints.values():
        raise RuntimeError(f"the two runs saw different token streams: {prints}")
    out["data_fingerprint"] = prints[FORMS[0]]
    print(f"{'form':8s} {'params':>12s} {'LEV params':>11s} {'train loss':>11s} "
          f"{'val loss':>9s} {'tokens':>8s} {'wall':>7s}")
    for form in FORMS:
        r = out[form]
        print(f"{form:8s} {r['params']:12,d} {r['lev_params']:11,d} "
              f"{r['final_train_loss']:11.4f} {r['final_val_loss']:9.4f} {r['tokens_seen']:8,d} "
              f"{r['wall_s']:6.0f}s")
    print(f"same token stream (data_fingerprint {out['data_fingerprint'][:12]}); curves: "
          f"`make dashboard`, sweep {sweep}")
    return out
