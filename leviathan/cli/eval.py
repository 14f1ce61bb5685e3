"""The eval command, `python -m leviathan.eval <run folder | checkpoint file | MLflow run id>
[key=value ...]` (leviathan/eval/__main__.py opens it at that path).

Scores the run's checkpoint with lm-evaluation-harness on eval.tasks, logs the metrics on the
run's MLflow run and writes the results JSON beside the checkpoint. Overrides are those of the
sweep command (`eval.tasks=[lambada_openai,piqa] eval.limit=200 eval.device=cuda`,
`tracking.uri=...`; a bare eval key such as `limit=200` works too); the config is composed like
every entry point's (conf/local included), and eval.tracking_uri defaults to tracking.uri.
Exit status: 0 every task scored; 3 some tasks skipped (listed); 1 none scored; 2 bad input.
"""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m leviathan.eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", help="run scratch folder, checkpoint file, or MLflow run id")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. eval.limit=100")
    args = p.parse_args(argv)

    from leviathan.errors import LeviathanError
    from leviathan.eval import evaluate_run
    from leviathan.logs import setup_logging

    setup_logging()

    try:
        res = evaluate_run(args.target, site_config(args.overrides))
    except LeviathanError as e:  # what the user can fix; anything else shows its traceback
        log.error(f"error: {e}")
        return 2
    for why in res.get("missing", {}).values():
        log.warning(f"not scored: {why}")
    print(render(res))
    if not res["tasks"]:
        return 1
    return 3 if res.get("missing") else 0


def site_config(overrides: list[str] | None = None):
    """The EvalConfig as every entry point composes it (conf/eval/, conf/local included), with
    the sweep command's overrides; eval.tracking_uri defaults to the composed tracking.uri."""
    from leviathan.config import compose
    from leviathan.eval.config import eval_config, eval_overrides
    from leviathan.tracking.credentials import use_credentials

    site = compose("sweep", eval_overrides(overrides))
    cfg = eval_config(site.eval)
    cfg.tracking_uri = use_credentials(cfg.tracking_uri or str(site.tracking.uri),
                                       site.tracking.get("credentials_file"))
    return cfg


def render(res: dict) -> str:
    lines = ["| task | metric | value | stderr |", "|---|---|---:|---:|"]
    for task, r in sorted(res["tasks"].items()):
        m = r["metrics"]
        for k, v in m.items():
            if k.endswith("_stderr"):
                continue
            se = m.get(f"{k}_stderr")
            lines.append(f"| {task} | {k} | {_f(v)} | {_f(se)} |")
    return "\n".join(lines)


def _f(v) -> str:
    return "" if v is None else f"{v:.4f}"

