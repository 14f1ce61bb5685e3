"""The sweep's view of MLflow: its parent run, and its training runs by config hash."""

from __future__ import annotations

from typing import Any


def client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def experiment_id(c, name: str, create: bool = True) -> str | None:
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    return c.create_experiment(name) if create else None


def _quote(s: str) -> str:
    return "'" + s.replace("'", "\\'") + "'"


def parent_run(c, exp_id: str, sweep: str, tags: dict[str, str] | None = None,
               create: bool = True):
    """The sweep's parent run (tags kind=sweep, sweep=<name>); created when absent."""
    found = c.search_runs([exp_id], filter_string=f"tags.kind = 'sweep' and "
                          f"tags.sweep = {_quote(sweep)}", order_by=["attributes.start_time DESC"],
                          max_results=1)
    if found:
        return found[0]
    if not create:
        return None
    return c.create_run(exp_id, run_name=sweep, tags={"kind": "sweep", "sweep": sweep,
                                                     **(tags or {})})


def training_runs(c, exp_id: str, sweep: str) -> list[Any]:
    """Every training run of the sweep (all attempts), newest first."""
    runs, token = [], None
    while True:
        page = c.search_runs([exp_id], filter_string=f"tags.kind = 'train' and "
                             f"tags.sweep = {_quote(sweep)}",
                             order_by=["attributes.start_time DESC"], max_results=1000,
                             page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def finished_hashes(runs: list[Any]) -> set[str]:
    return {r.data.tags.get("config_hash") for r in runs if r.info.status == "FINISHED"}
