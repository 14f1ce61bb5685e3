"""`python -m leviathan.configdoc > docs/CONFIG.md`: every config group, key and option.

Each group's keys, types, defaults and meanings come from its schema — the dataclass registered
in Hydra's ConfigStore (leviathan/config.py), one comment per field in its source — and each
option's file from conf/. A test keeps the committed page equal to the generated one, so the
reference cannot drift from the code.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import sys
import typing

GROUPS = {
    "paths": "Every filesystem location; everything else interpolates from here.",
    "model": "Architecture and size: the Dense baseline, the Leviathan generator (LEV), the "
             "v1/v2 ladders (`model=v1/109M`, `model=v2/1.2B`), debug and smoke sizes.",
    "data": "Pile-format corpora, tokenization, streaming or prepared shards, validation split.",
    "trainer": "Optimisation, token budget, batch and accumulation, hardware, cadence.",
    "tracking": "The MLflow tracking server and how a run talks to it.",
    "launcher": "Where a sweep's jobs run: local processes or a SLURM job array (submitit).",
    "grid": "What a sweep varies: sizes, arms, token budgets, seeds (`+grid=<name>`).",
    "eval": "Downstream evaluation with lm-evaluation-harness.",
    "fit": "The scaling fit's settings (`make fit-scaling fit.b=free fit.bootstrap=2000`).",
}
PRIMARY = {"train.yaml": "one training run: `python -m leviathan.train [overrides]`",
           "sweep.yaml": "a sweep: `python -m leviathan.sweep +grid=<name> [overrides]`",
           "fit.yaml": "fitting a sweep: `python -m analysis.fit_scaling [overrides]`"}
# groups whose schema lives in the analysis package (a layer above the library, which imports
# nothing from it; only leviathan/cli/ does: the keys are listed where the schema is)
ELSEWHERE = {"fit": "`analysis.config.FitConfig` (analysis/config.py; its keys with their "
                    "defaults and checks: README, \"Reading the results\")"}
NESTED = {"LevConfig": "lev.", "FactorizedConfig": "factorized."}  # nested schemas: key prefix
_FIELD = re.compile(r"^\s+(\w+): [^=#]+?(?:= .*?)?\s+#\s?(.*)$")
_MORE = re.compile(r"^\s+#\s+(.*)$")  # a comment continued on the next line


def schemas() -> dict[str, list[type]]:
    """The schema dataclass(es) of each group (nested dataclasses follow their parent)."""
    from leviathan.data.config import DataConfig
    from leviathan.eval.config import EvalConfig
    from leviathan.models.config import FactorizedConfig, LevConfig, ModelConfig
    from leviathan.paths import PathsConfig
    from leviathan.sweep.grid import GridConfig
    from leviathan.sweep.launcher_config import LocalLauncherConfig, SlurmLauncherConfig
    from leviathan.tracking.config import TrackingConfig
    from leviathan.training.config import TrainerConfig

    return {"paths": [PathsConfig], "model": [ModelConfig, LevConfig, FactorizedConfig],
            "data": [DataConfig], "trainer": [TrainerConfig], "tracking": [TrackingConfig],
            "launcher": [LocalLauncherConfig, SlurmLauncherConfig], "grid": [GridConfig],
            "eval": [EvalConfig]}


def field_comments(cls: type) -> dict[str, str]:
    """{field: the comment after it in the class source} (continuation lines joined)."""
    out: dict[str, str] = {}
    last = None
    for line in inspect.getsource(cls).splitlines():
        m = _FIELD.match(line)
        if m:
            last = m.group(1)
            out[last] = m.group(2).strip()
        elif last and (more := _MORE.match(line)):
            out[last] += " " + more.group(1).strip()
        else:
            last = None
    return out


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
        if dataclasses.is_dataclass(value):
            return "(below)"
    else:
        return "(required)"
    return "`null`" if value is None else f"`{value!r}`".replace("|", "\\|")


def _type(t: typing.Any) -> str:
    name = getattr(t, "__name__", None) if not typing.get_args(t) else None
    return (name or str(t).replace("typing.", "")).replace("|", "\\|")


def schema_table(cls: type, prefix: str) -> list[str]:
    """A markdown table of the schema's fields: key, type, default, meaning."""
    comments = field_comments(cls)
    hints = typing.get_type_hints(cls)
    rows = [f"`{cls.__module__}.{cls.__name__}`:", "", "| key | type | default | meaning |",
            "|---|---|---|---|"]
    for f in dataclasses.fields(cls):
        text = comments.get(f.name, "").replace("|", "\\|")
        rows.append(f"| `{prefix}{f.name}` | {_type(hints[f.name])} | {_default(f)} | {text} |")
    return rows + [""]


def _block(path) -> str:
    return f"```yaml\n{path.read_text().rstrip()}\n```\n"


def render() -> str:
    from leviathan.typed_config import conf_dir

    conf = conf_dir()
    out = ["# Configuration reference", "",
           "Generated by `python -m leviathan.configdoc`: each group's keys from its schema (the "
           "dataclass in the code, one comment per key), each option from its file in `conf/`, "
           "which holds only what differs from the schema. Choose an option of a group with "
           "`group=option` (e.g. `model=v1/109M`, `launcher=slurm`), set a key with "
           "`group.key=value` (e.g. `trainer.lr=3e-4`); machine-specific settings go in the "
           "git-ignored `conf/local/` (see `conf/local/README.md`). Every entry point (train, "
           "sweep, sweep.status, fit-scaling, eval, dashboard, demo) composes this same config.",
           "", "## Primary configs", ""]
    for name, what in PRIMARY.items():
        out += [f"### `conf/{name}` — {what}", "", _block(conf / name)]
    groups = schemas()
    for group, what in GROUPS.items():
        folder = conf / group
        out += [f"## `{group}` — {what}", "", "### Keys", ""]
        if group in ELSEWHERE:
            out += [f"Schema: {ELSEWHERE[group]}.", ""]
        for cls in groups.get(group, []):
            out += schema_table(cls, f"{group}.{NESTED.get(cls.__name__, '')}")
        for path in sorted(folder.rglob("*.yaml")):
            option = path.relative_to(folder).with_suffix("").as_posix()
            out += [f"### `{group}={option}`", "", _block(path)]
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
