"""What a run costs on a GPU: seconds per optimizer step from its shape and trainer settings,
with a few device constants fitted to measured steps.

One step is `accumulation` micro-batches of n = micro_batch x seq_len tokens on each device:

    t_step = accumulation x (c_flops x n F / P                     matmuls: F FLOPs per token
                             + c_layer[eager|compiled] x L         kernels: they grow with depth
                             + c_bytes x n L (D + D_ffn) 2 / BW    unfused activations (eager)
                             + c_micro x [eager])                  per micro-batch (eager)
                             + c_loop x [the training job])        Lightning's loop per batch
             + c_opt x 16 N / BW                                   AdamW over fp32 state

F is the models' own accounting (leviathan.models.flops_per_token: body, attention, the head
over the padded vocabulary, LEV's generator), L the depth, D the width, N the parameters; P the
device's peak FLOP/s and BW its memory bandwidth set the units, the c's are fitted by
non-negative least squares on relative error (scipy.optimize.nnls) to every measured step the
records hold: `bench gpu` shapes (eager and compiled), the gpu-suite's, the real training job's
(c_loop: Lightning fetches, dispatches and runs its hooks for every micro-batch, so its cost
does not shrink with accumulation) and a pilot sweep's finished runs. A record supersedes an
older one of the same device, size and settings. Each fit reports its leave-one-shape-out
error (every (size, arm) left out in turn and predicted from the rest); the plan widens its
modelled rows by it.

The feature set is fixed, chosen on the H200 records of 2026-12-04 (12 steps: v1/60M real job,
v1/421M and v2/1.2B bench, eager and compiled): it predicts each left-out shape within 17%; the
bytes moved by the head and loss were tried and left out (their coefficient came out at zero).
Written by hand: no library models a training step's time; the fit is scipy's.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from leviathan.errors import LeviathanError

FORMAT = 1
PEAK_UNIT = 989e12  # the flops term's unit (H100/H200 SXM dense bf16): any fixed scale will do
FEATURES = ("flops", "layers_eager", "layers_compiled", "act_bytes_eager", "micro_eager",
            "opt_bytes", "job_micro")
# memory bandwidth by device name (a substring, checked in order), bytes/s: the unit of the byte
# terms (their coefficients absorb how much of it a step reaches)
BANDWIDTH = (("H200", 4.8e12), ("H100", 3.35e12), ("A100", 2.0e12), ("cpu", 5.0e10))
DEFAULT_BANDWIDTH = 3.0e12


class CostModelError(LeviathanError, ValueError):
    """A cost-model file or record that cannot be used; the message names the key or file."""


def bandwidth(device: str) -> float:
    return next((bw for name, bw in BANDWIDTH if name.lower() in device.lower()),
                DEFAULT_BANDWIDTH)


@dataclass(frozen=True)
class StepShape:
    """What one optimizer step's time depends on, on one device."""

    shape: str  # ladder/size, e.g. v1/421M
    arm: str
    n_layers: int
    d_model: int
    ffn_dim: int
    params_total: int
    flops_per_token: float  # training FLOPs (forward + backward), leviathan.models
    seq_len: int
    micro_batch: int  # sequences per forward on one device
    accumulation: int  # micro-batches per optimizer step
    compile: bool
    precision: str = "bf16-mixed"
    loss_impl: str = "chunked"
    job: bool = False  # the real training job (python -m leviathan.train), not `bench gpu`

    @property
    def tokens_per_step(self) -> int:
        """Tokens one device trains on per optimizer step."""
        return self.micro_batch * self.seq_len * self.accumulation

    def features(self, peak_flops: float, bw: float) -> list[float]:
        n, a = self.micro_batch * self.seq_len, self.accumulation
        eager = 0.0 if self.compile else 1.0
        act = n * self.n_layers * (self.d_model + self.ffn_dim) * 2 / bw
        return [a * n * self.flops_per_token / peak_flops, a * self.n_layers * eager,
                a * self.n_layers * (1.0 - eager), a * act * eager, a * eager,
                16.0 * self.params_total / bw, a * float(self.job)]

    def model_key(self) -> tuple:
        """Which model this is: size and arm, and the depth and parameters that tell one grid's
        arm from another's of the same name (isobody's Leviathan keeps the Dense depth,
        isoparametric's solves its own)."""
        return (self.shape, self.arm, self.n_layers, self.params_total)

    def settings(self) -> dict[str, Any]:
        """The settings a measurement must share to stand for a planned run (accumulation and
        the job/bench difference the model carries)."""
        return {"seq_len": self.seq_len, "micro_batch": self.micro_batch,
                "compile": self.compile, "precision": self.precision,
                "loss_impl": self.loss_impl}


def step_shape(cfg: Any, *, arm: str, seq_len: int, micro_batch: int, accumulation: int,
               compile: bool, precision: str = "bf16-mixed", loss_impl: str = "chunked",
               job: bool = False) -> StepShape:
    """The StepShape of a model config (resolved or not) under these trainer settings; `arm`
    is the grid's arm name (dense_untied is a Dense model config, not the dense arm)."""
    from leviathan.models.accounting import count_params, flops_per_token, resolve_model_config

    c = resolve_model_config(cfg)
    return StepShape(shape=f"{c.ladder}/{c.size}", arm=arm, n_layers=c.n_layers,
                     d_model=c.d_model, ffn_dim=c.ffn_dim,
                     params_total=count_params(c).total,
                     flops_per_token=flops_per_token(c, seq_len), seq_len=seq_len,
                     micro_batch=micro_batch, accumulation=accumulation, compile=bool(compile),
                     precision=str(precision), loss_impl=str(loss_impl), job=job)


@dataclass(frozen=True)
class Measurement:
    step: StepShape
    device: str
    tokens_per_s: float  # per device
    source: str  # the record (file, part) or the pilot sweep's run
    when: str = ""  # ISO time the record was written: the newest of one key wins
    pilot: bool = False  # a pilot sweep's finished runs (sweep.costs_from): preferred to records

    @property
    def seconds_per_step(self) -> float:
        return self.step.tokens_per_step / self.tokens_per_s

    def key(self) -> tuple:
        s = self.step
        return (self.device, *s.model_key(), s.job, tuple(sorted(s.settings().items())))


def newest(measurements: list[Measurement]) -> list[Measurement]:
    """One measurement per (device, size, settings, bench/job): a record supersedes the older
    ones of the same device and settings for every size it measured (the code that ran may
    have changed between them), and the same (size, arm) measured twice keeps the newer."""
    def size_key(m: Measurement) -> tuple:
        s = m.step
        return (m.device, s.shape, s.job, tuple(sorted(s.settings().items())))

    latest: dict[tuple, str] = {}
    for m in measurements:
        latest[size_key(m)] = max(latest.get(size_key(m), ""), m.when)
    kept: dict[tuple, Measurement] = {}
    for m in sorted(measurements, key=lambda m: m.when):
        if m.when == latest[size_key(m)]:
            kept[m.key()] = m
    return list(kept.values())


@dataclass
class CostModel:
    device: str  # as torch names it, e.g. "NVIDIA H200"
    peak_flops: float  # the FLOP/s unit of the flops term (the records' trainer.peak_flops)
    bandwidth: float  # the bytes/s unit of the byte terms
    coef: dict[str, float]  # FEATURES -> fitted constant
    domain: dict[str, list]  # settings the fit saw: seq_len, precision, loss_impl, compile
    loo_error: float  # largest |predicted / measured - 1| of a shape left out of the fit
    points: list[dict] = field(default_factory=list)  # per measurement: measured, fitted, left out
    format: int = FORMAT

    def step_seconds(self, s: StepShape) -> float:
        return sum(c * f for c, f in zip((self.coef[k] for k in FEATURES),
                                         s.features(self.peak_flops, self.bandwidth),
                                         strict=True))

    def tokens_per_s(self, s: StepShape) -> float:
        return s.tokens_per_step / self.step_seconds(s)

    def check_domain(self, s: StepShape, key: str) -> str | None:
        """CostModelError naming the trainer key (precision, loss) a planned run has outside
        the fitted settings; a sequence length outside the measured ones is only extrapolated
        (every term scales with the tokens per micro-batch): returns a note saying so."""
        for name in ("precision", "loss_impl"):
            value = getattr(s, name)
            if value not in self.domain.get(name, [value]):
                raise CostModelError(
                    f"{key}: the cost model was fitted on trainer.{name} in "
                    f"{self.domain[name]}, the plan runs trainer.{name}={value}: refit it on "
                    "records of these settings (python -m leviathan.bench cost --fit ...) or "
                    "set it to null")
        if s.seq_len not in self.domain.get("seq_len", [s.seq_len]):
            return (f"data.seq_len={s.seq_len} is outside the sequence lengths the cost model "
                    f"was fitted on ({self.domain['seq_len']}): its runs are extrapolated")
        return None

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path, key: str = "sweep.cost_model") -> CostModel:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise CostModelError(f"{key}={path}: not a readable cost model ({e})") from e
        if not isinstance(data, dict) or data.get("format") != FORMAT \
                or set(data.get("coef", {})) != set(FEATURES):
            raise CostModelError(f"{key}={path}: not a cost model of format {FORMAT} with the "
                                 f"features {', '.join(FEATURES)} (write one with `python -m "
                                 "leviathan.bench cost --fit <records>`)")
        return cls(**data)


def _solve(ms: list[Measurement], peak: float, bw: float) -> list[float]:
    import numpy as np
    from scipy.optimize import nnls

    X = np.array([m.step.features(peak, bw) for m in ms])
    y = np.array([m.seconds_per_step for m in ms])
    coef, _ = nnls(X / y[:, None], np.ones(len(ms)))  # relative error: each step counts alike
    return [float(c) for c in coef]


def fit(measurements: list[Measurement], device: str | None = None) -> CostModel:
    """The model of one device, fitted to its newest measurements, with its leave-one-shape-out
    error (each (size, arm) predicted by a fit on the others)."""
    devices = sorted({m.device for m in measurements})
    device = device or (devices[0] if len(devices) == 1 else None)
    if device is None:
        raise CostModelError(f"the records hold several devices ({', '.join(devices)}): "
                             "fit one with --device")
    ms = newest([m for m in measurements if m.device == device])
    if len(ms) < len(FEATURES):
        raise CostModelError(f"{len(ms)} measured steps on {device}: a fit needs at least "
                             f"{len(FEATURES)}")
    peak, bw = PEAK_UNIT, bandwidth(device)
    coef = _solve(ms, peak, bw)
    model = CostModel(device=device, peak_flops=peak, bandwidth=bw,
                      coef=dict(zip(FEATURES, coef, strict=True)),
                      domain={k: sorted({getattr(m.step, k) for m in ms}, key=str)
                              for k in ("seq_len", "precision", "loss_impl", "compile")},
                      loo_error=0.0)
    shapes = sorted({(m.step.shape, m.step.arm) for m in ms})
    worst = 0.0
    for m in ms:
        rest = [o for o in ms if (o.step.shape, o.step.arm) != (m.step.shape, m.step.arm)]
        left = replace(model, coef=dict(zip(FEATURES, _solve(rest, peak, bw), strict=True)))
        loo = left.tokens_per_s(m.step) / m.tokens_per_s - 1.0 if len(shapes) > 1 else math.nan
        worst = max(worst, abs(loo)) if math.isfinite(loo) else worst
        model.points.append({"shape": m.step.shape, "arm": m.step.arm, "source": m.source,
                             "compile": m.step.compile, "job": m.step.job,
                             "measured_tokens_per_s": round(m.tokens_per_s, 1),
                             "fitted_tokens_per_s": round(model.tokens_per_s(m.step), 1),
                             "left_out_tokens_per_s": round(left.tokens_per_s(m.step), 1),
                             "left_out_error": round(loo, 4)})
    model.loo_error = round(worst, 4)
    return model

