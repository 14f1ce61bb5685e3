"""EvalConfig: the `eval` config group (conf/eval/default.yaml), validated.

Every field mirrors a key of conf/eval/default.yaml; a bad value raises EvalConfigError naming
the key (`eval.<key>`). `spec()` is what identifies a set of results: two evaluations with the
same spec on the same checkpoint step give the same numbers, so the second one is skipped.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DEFAULT_YAML = REPO / "conf" / "eval" / "default.yaml"


class EvalConfigError(ValueError):
    """A value of the `eval` config is invalid; the message names the key."""


@dataclass
class EvalConfig:
    tasks: list[str] = field(default_factory=list)  # harness task / group names
    limit: int | float | None = None  # examples per task (int, or fraction < 1); None: all
    num_fewshot: int = 0  # in-context examples per prompt
    batch_size: int = 16  # sequences per forward pass
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto | fp32 | bf16
    max_length: int | None = None  # tokens per forward; None: the model's max_seq_len
    include_path: list[str] = field(default_factory=list)  # extra task-YAML folders
    include_defaults: bool = True  # index the harness's built-in tasks too
    offline: str | bool = "auto"  # auto | true | false
    hub_probe_timeout_s: float = 3.0  # offline=auto: wait this long for the hub
    output_dir: str | None = None  # results JSON folder; None: <run dir>/eval
    tracking_uri: str | None = None  # None: $MLFLOW_TRACKING_URI, else the run's tracking.uri
    log_mlflow: bool = True  # metrics + JSON artifact on the run's MLflow run
    force: bool = False  # evaluate even when results for this spec exist
    seed: int = 0  # harness seeds
    bootstrap_iters: int = 1000  # draws for bootstrapped standard errors; 0: none

    def __post_init__(self) -> None:
        if isinstance(self.tasks, str):
            self.tasks = [t.strip() for t in self.tasks.split(",") if t.strip()]
        self.tasks = [str(t) for t in self.tasks]
        if not self.tasks:
            raise EvalConfigError("eval.tasks: give at least one task name")
        if self.limit is not None:
            if isinstance(self.limit, bool) or not isinstance(self.limit, int | float) \
                    or self.limit <= 0 or (isinstance(self.limit, float) and self.limit > 1
                                           and not self.limit.is_integer()):
                raise EvalConfigError(f"eval.limit: a positive int or a fraction in (0, 1], "
                                      f"got {self.limit!r}")
            if isinstance(self.limit, float) and self.limit > 1:
                self.limit = int(self.limit)
        if not isinstance(self.num_fewshot, int) or self.num_fewshot < 0:
            raise EvalConfigError(f"eval.num_fewshot: an int >= 0, got {self.num_fewshot!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise EvalConfigError(f"eval.batch_size: an int >= 1, got {self.batch_size!r}")
        if not isinstance(self.bootstrap_iters, int) or self.bootstrap_iters < 0:
            raise EvalConfigError(f"eval.bootstrap_iters: an int >= 0, got "
                                  f"{self.bootstrap_iters!r}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise EvalConfigError(f"eval.precision: auto | fp32 | bf16, got {self.precision!r}")
        if not (self.device in ("auto", "cpu", "cuda") or str(self.device).startswith("cuda:")):
            raise EvalConfigError(f"eval.device: auto | cpu | cuda | cuda:N, got {self.device!r}")
        if self.max_length is not None and (not isinstance(self.max_length, int)
                                            or self.max_length < 2):
            raise EvalConfigError(f"eval.max_length: null or an int >= 2, got "
                                  f"{self.max_length!r}")
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


def eval_config(cfg: Any = None, overrides: list[str] | None = None) -> EvalConfig:
    """EvalConfig from a DictConfig / dict / EvalConfig (None: conf/eval/default.yaml), with
    `key=value` overrides (an `eval.` prefix is accepted). Unknown keys are errors."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, EvalConfig):
        cfg = cfg.as_dict()
    base = OmegaConf.load(DEFAULT_YAML)
    if cfg is not None:
        cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True)
                               if isinstance(cfg, DictConfig) else dict(cfg))
        base = OmegaConf.merge(base, cfg)
    if overrides:
        dots = [o[len("eval."):] if o.startswith("eval.") else o for o in overrides]
        bad = [o for o in dots if "=" not in o]
        if bad:
            raise EvalConfigError(f"overrides must be key=value, got {bad}")
        base = OmegaConf.merge(base, OmegaConf.from_dotlist(dots))
    data = OmegaConf.to_container(base, resolve=True)
    known = {f.name for f in fields(EvalConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise EvalConfigError(f"unknown eval config key(s) {unknown}; known: {sorted(known)}")
    return EvalConfig(**data)
