"""EvalConfig: the `eval` config group (conf/eval/default.yaml), validated.

Every field mirrors a key of conf/eval/default.yaml; a bad value raises EvalConfigError naming
the key (`eval.<key>`). `spec()` is what identifies a set of results: two evaluations with the
same spec on the same checkpoint step give the same numbers, so the second one is skipped.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from leviathan.errors import LeviathanError
from leviathan.typed_config import above, at_least, check_fields, choice, optional, positive

# top-level names of the composed config that a bare `name=value` may also mean
TOP_LEVEL = ("model", "data", "trainer", "tracking", "paths", "launcher", "eval", "seed",
             "run_name", "resume")
DEFAULT_TASKS = ("lambada_openai", "hellaswag", "piqa", "arc_easy", "arc_challenge", "winogrande")


class EvalConfigError(LeviathanError, ValueError):
    """A value of the `eval` config is invalid; the message names the key."""


def _limit(v: Any) -> str | None:
    """eval.limit: a positive count, or a fraction of each task in (0, 1]."""
    ok = isinstance(v, int | float) and not isinstance(v, bool) and v > 0 and (
        v <= 1 or float(v).is_integer())
    return None if ok else "must be a positive int or a fraction in (0, 1]"


@dataclass
class EvalConfig:
    tasks: list[str] = field(default_factory=lambda: list(DEFAULT_TASKS))  # harness task or group
    #   names (default: LAMBADA, HellaSwag, PIQA, ARC easy and challenge, WinoGrande)
    limit: int | float | None = None  # examples per task (an int, or a fraction < 1); null: all.
    #   For quick looks only
    num_fewshot: int = 0  # in-context examples per prompt
    batch_size: int = 16  # sequences per forward pass
    device: str = "auto"  # auto (cuda if available, else cpu) | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (bf16 autocast on cuda, fp32 on cpu) | fp32 | bf16
    max_length: int | None = None  # tokens per forward; null: the model's max_seq_len
    include_path: list[str] = field(default_factory=list)  # extra folders of task YAMLs (your own /
    #   local copies of datasets)
    include_defaults: bool = True  # also index the harness's built-in tasks (~15 s to index)
    offline: str | bool = "auto"  # auto: offline if HF_DATASETS_OFFLINE/HF_HUB_OFFLINE say so or
    #   the hub is silent
    hub_probe_timeout_s: float = 3.0  # offline=auto: how long to wait for the hub to answer
    output_dir: str | None = None  # where results JSON goes; null: <run dir>/eval
    tracking_uri: str | None = None  # MLflow server; null: the run's own tracking.uri (a run
    #   folder) or the composed tracking.uri (an MLflow run id)
    log_mlflow: bool = True  # log metrics (and the JSON as an artifact) on the run's MLflow run
    force: bool = False  # evaluate again even if results for the same spec exist
    seed: int = 0  # harness random/numpy/torch/fewshot seed
    bootstrap_iters: int = 1000  # draws for bootstrapped standard errors (perplexity); 0: none

    _checks = {
        "limit": optional(_limit),
        "num_fewshot": at_least(0), "batch_size": positive(), "bootstrap_iters": at_least(0),
        "precision": choice("auto", "fp32", "bf16"), "max_length": optional(at_least(2)),
        "hub_probe_timeout_s": above(0),
    }

    def __post_init__(self) -> None:
        if isinstance(self.tasks, str):
            self.tasks = [t.strip() for t in self.tasks.split(",") if t.strip()]
        self.tasks = [str(t) for t in self.tasks]
        if not self.tasks:
            raise EvalConfigError("eval.tasks: give at least one task name")
        check_fields(self, "eval", EvalConfigError)
        if isinstance(self.limit, float) and self.limit > 1:
            self.limit = int(self.limit)
        if not (self.device in ("auto", "cpu", "cuda") or str(self.device).startswith("cuda:")):
            raise EvalConfigError(f"eval.device: auto | cpu | cuda | cuda:N, got {self.device!r}")
        off = self.offline
        if isinstance(off, str) and off.lower() in ("true", "false", "auto"):
            off = {"true": True, "false": False, "auto": "auto"}[off.lower()]
        if off not in (True, False, "auto"):
            raise EvalConfigError(f"eval.offline: auto | true | false, got {self.offline!r}")
        self.offline = off
        if isinstance(self.include_path, str):
            self.include_path = [self.include_path]
        self.include_path = [str(p) for p in (self.include_path or [])]

    def spec(self) -> dict:
        """What the numbers depend on besides the checkpoint."""
        return {"tasks": sorted(self.tasks), "limit": self.limit,
                "num_fewshot": self.num_fewshot, "seed": self.seed,
                "max_length": self.max_length, "precision": self.precision,
                "bootstrap_iters": self.bootstrap_iters}

    def spec_key(self) -> str:
        """A file-name-safe key: fewshot<n>-<all|limit<n>>-<hash of the spec>."""
        h = hashlib.sha256(json.dumps(self.spec(), sort_keys=True).encode()).hexdigest()[:10]
        lim = "all" if self.limit is None else f"limit{self.limit}"
        return f"fewshot{self.num_fewshot}-{lim}-{h}"

    def as_dict(self) -> dict:
        return asdict(self)


def eval_overrides(overrides: list[str] | None) -> list[str]:
    """Command-line overrides for the composed config: `eval.<key>=v` as the sweep takes them;
    a bare `<key>=v` naming an eval key is read as `eval.<key>=v` (the older form)."""
    known = {f.name for f in fields(EvalConfig)}
    out = []
    for o in overrides or []:
        if "=" not in o:
            raise EvalConfigError(f"overrides must be key=value, got {o!r}")
        key = o.split("=", 1)[0].lstrip("+~")
        if "." not in key and key not in known and key not in TOP_LEVEL:
            raise EvalConfigError(f"unknown eval config key {key!r}; eval keys: "
                                  f"{', '.join(sorted(known))} (or any `group.key=value`)")
        out.append(f"eval.{o}" if "." not in key and key in known else o)
    return out


def eval_config(cfg: Any, overrides: list[str] | None = None) -> EvalConfig:
    """EvalConfig from a DictConfig / dict / EvalConfig (the composed `eval` group: see
    leviathan.cli.eval.site_config), with `eval.<key>=value` overrides. Unknown keys are
    errors."""
    from omegaconf import OmegaConf

    from leviathan.typed_config import to_config

    if isinstance(cfg, EvalConfig):
        cfg = cfg.as_dict()
    if overrides:
        dots = [o[len("eval."):] for o in eval_overrides(overrides) if o.startswith("eval.")]
        cfg = OmegaConf.merge(OmegaConf.create(OmegaConf.to_container(
            OmegaConf.create(cfg), resolve=True)), OmegaConf.from_dotlist(dots))
    return to_config(EvalConfig, cfg, "eval", EvalConfigError)
