"""A synthetic sweep logged straight to a real MLflow server with the platform's schema (tags,
params, metrics, summary.json): Dense and Leviathan runs on a known law, for the analysis."""

from __future__ import annotations

import time
import uuid

E, A, ALPHA = 1.69, 400.0, 0.34
SIZES = {"20M": 20e6, "40M": 40e6, "80M": 80e6, "160M": 160e6}
BUCKETS = ["b0_unseen", "b1_1-10", "b2_10-100", "b3_100-1k", "b4_1k-inf"]


def loss_at(n: float, tokens: float, budget: float) -> float:
    """A training curve ending (tokens = budget) exactly on E + A·n^-alpha, and at any fixed
    token count still decreasing in n."""
    return E + A * n ** -ALPHA * (1 + 0.2 * (1 - tokens / budget))


def log_run(client, exp_id, parent, sweep, *, arm, size, n, mult=lambda frac: 1.0,
            status="FINISHED",
            final_loss=None, buckets="metrics", family="isoparametric", seed=0):
    from mlflow.entities import Metric, Param

    tags = {"kind": "train", "sweep": sweep, "pair": f"{size}-s{seed}", "arm": arm,
            "size": size, "family": family, "mlflow.parentRunId": parent,
            "config_hash": uuid.uuid4().hex[:12], "git_commit": "test"}
    run = client.create_run(exp_id, run_name=f"{sweep}-{arm}-{size}", tags=tags)
    rid = run.info.run_id
    n_run = n * (0.98 if arm == "leviathan" else 1.0)
    params = [Param("n_params/total", str(int(n_run))), Param("n_params/body", str(int(n / 2))),
              Param("model.arm", arm), Param("data.seed", str(seed)),
              Param("plan.flops_per_token", str(6.0 * n_run)), Param("trainer.lr", "0.0003")]
    now = int(time.time() * 1000)
    budget = 20 * n
    metrics = []
    for step in range(1, 7):
        t = budget * step / 6
        metrics += [Metric("val/loss", loss_at(mult(step / 6) * n_run, t, budget), now,
                           step * 100),
                    Metric("val/tokens", t, now, step * 100)]
    final = loss_at(mult(1.0) * n_run, budget, budget) if final_loss is None else final_loss
    metrics += [Metric("final/val_loss", final, now, 600),
                Metric("final/tokens_seen", budget, now, 600)]
    bucket_losses = {b: final + 2.5 * (len(BUCKETS) - i) / len(BUCKETS) * (0.5 if arm ==
                     "leviathan" else 1.0) for i, b in enumerate(BUCKETS)}
    if buckets == "metrics":
        metrics += [Metric(f"val/loss_freq/{b}", v, now, 600) for b, v in bucket_losses.items()]
    client.log_batch(rid, metrics=metrics, params=params)
    if buckets == "summary":
        client.log_dict(rid, {"final_val_loss": final, "bucket_losses": bucket_losses},
                        "summary.json")
    if status != "RUNNING":
        client.set_terminated(rid, status)
    return rid


def log_sweep(uri, experiment, sweep, *, parent=True, start_time=None, bad_runs=False,
              mult=lambda frac: 2.0):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
    parent_id = ""
    if parent:
        run = client.create_run(exp_id, run_name=f"sweep-{sweep}", start_time=start_time,
                                tags={"kind": "sweep", "sweep": sweep})
        parent_id = run.info.run_id
    for i, (size, n) in enumerate(SIZES.items()):
        how = "summary" if i == 0 else "metrics"
        log_run(client, exp_id, parent_id, sweep, arm="dense", size=size, n=n, buckets=how)
        log_run(client, exp_id, parent_id, sweep, arm="leviathan", size=size, n=n, mult=mult,
                buckets=how)
    if bad_runs:
        log_run(client, exp_id, parent_id, sweep, arm="dense", size="320M", n=320e6,
                status="RUNNING")
        log_run(client, exp_id, parent_id, sweep, arm="leviathan", size="320M", n=320e6,
                final_loss=float("nan"))
        log_run(client, exp_id, parent_id, sweep, arm="leviathan", size="20M", n=20e6,
                final_loss=1.6, seed=1)
    if parent:
        client.set_terminated(parent_id, "FINISHED")
    return client, exp_id, parent_id
