"""The GPU-hours of each planned run, and where the figure comes from (`cost_source`):

- measured: a measured step of the same device, model (size, arm, depth, parameters) and
  settings (micro-batch, compile, sequence length, precision, loss): the finished runs of a
  pilot sweep (sweep.costs_from: the real job, first choice), `bench gpu` / gpu-suite records
  (sweep.measured_mfu). A measurement at another accumulation or in
  `bench gpu`'s bare loop rather than the training job is carried over by the cost model's ratio
  of the two (the measured time x model(run) / model(measurement));
- modelled: the cost model of the device (sweep.cost_model, leviathan.sweep.cost_model),
  within its leave-one-shape-out error, which the plan's total shows as a range;
- assumed: FLOPs / (sweep.mfu x sweep.peak_flops), where neither exists (as before a model).

A run planned with a CPU trainer (the default) is costed as `trainer=gpu` would run it on the
GPU: that config's micro-batch, compile, precision and loss, the run's global batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leviathan.sweep.cost_model import CostModel, CostModelError, Measurement, StepShape, step_shape


@dataclass
class Cost:
    gpu_hours: float
    source: str  # measured | modelled | assumed
    step_s: float | None  # seconds per optimizer step on each device (None: assumed)


@dataclass
class RunCoster:
    """Costs the runs of one plan (make_plan builds one per plan)."""

    sweep: dict[str, Any]  # the sweep's settings
    model: CostModel | None = None
    measured: dict[tuple, list[Measurement]] = field(default_factory=dict)  # by size, arm,
    #   settings: the newest of each record kind (bench, job)
    device: str | None = None  # the GPU the figures are for
    notes: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: {"measured": 0, "modelled": 0,
                                                             "assumed": 0})
    modelled_hours: float = 0.0
    modelled_shapes: set = field(default_factory=set)  # (size, arm) no measurement covers
    gpu_defaults: dict[str, Any] | None = None  # trainer=gpu's settings (a CPU-trainer run)

    @classmethod
    def for_sweep(cls, sweep: dict[str, Any], measurements: list[Measurement] | None = None,
                  sweeps_dir: str | Path | None = None) -> RunCoster:
        """The coster of a plan with these sweep settings: the cost model, the records of
        sweep.measured_mfu and `measurements`, and the finished runs of the sweeps
        sweep.costs_from names (folders under `sweeps_dir`, paths.sweeps_dir)."""
        from leviathan.sweep import cost_records
        from leviathan.sweep.cost_model import newest

        coster = cls(sweep=sweep)
        path = sweep.get("cost_model")
        if path and Path(path).is_file():
            coster.model = CostModel.load(path)
        wanted = sweep.get("device")
        if coster.model is not None and wanted and wanted.lower() not in \
                coster.model.device.lower():
            raise CostModelError(f"sweep.cost_model={path} models {coster.model.device}, the "
                                 f"plan is for sweep.device={wanted}: fit one on its records "
                                 "(python -m leviathan.bench cost --fit ...) or set "
                                 "sweep.cost_model=null")
        records = sweep.get("measured_mfu") or []
        records = [records] if isinstance(records, str) else list(records)
        found = cost_records.read([r for r in records if Path(r).is_file()], coster.notes)
        found += measurements or []
        pilots = cost_records.read_sweeps(sweep.get("costs_from"), Path(sweeps_dir or "."),
                                          coster.notes)
        coster.device = wanted or (coster.model.device if coster.model else None) or next(
            (m.device for m in sorted(found, key=lambda m: m.when, reverse=True)), None) or \
            next((m.device for m in pilots), None)
        for m in [*sorted(pilots, key=lambda m: m.when, reverse=True), *newest(found)]:
            if coster.device and coster.device.lower() in m.device.lower():
                coster.measured.setdefault(_key(m.step), []).append(m)
        for source, device in sorted({(m.source.split(":")[0], m.device) for m in pilots
                                      if m.device.lower() not in (coster.device or "").lower()}):
            coster.notes.append(f"sweep.costs_from: {source} ran on {device}, the plan is for "
                                f"{coster.device}: not used (sweep.device={device} plans for it)")
        return coster

    def step(self, mc: Any, arm: str, tc: Any, seq_len: int, accumulation: int) -> StepShape:
        """The run's step as the device runs it: its own settings on a GPU trainer (or when the
        figures are for the CPU: sweep.device=cpu), else as trainer=gpu would run it."""
        if str(tc.accelerator) in ("gpu", "cuda") or (self.device or "").lower() == "cpu":
            return step_shape(mc, arm=arm, seq_len=seq_len, micro_batch=tc.micro_batch,
                              accumulation=accumulation, compile=tc.compile,
                              precision=str(tc.precision), loss_impl=tc.loss_impl, job=True)
        if self.gpu_defaults is None:
            from leviathan.bench.shapes import conf_node

            self.gpu_defaults = {**conf_node("trainer", "default"), **conf_node("trainer", "gpu")}
        g = self.gpu_defaults
        micro = min(int(g["micro_batch"]), tc.global_batch // max(1, tc.world_size))
        return step_shape(mc, arm=arm, seq_len=seq_len, micro_batch=micro,
                          accumulation=max(1, tc.global_batch // (micro * tc.world_size)),
                          compile=bool(g["compile"]), precision=str(g["precision"]),
                          loss_impl=str(g.get("loss_impl", "chunked")), job=True)

    def cost(self, s: StepShape, steps: int, world_size: int, flops: float) -> Cost:
        """GPU-hours of `steps` optimizer steps on `world_size` devices."""
        hours = steps * world_size / 3600.0
        found = self.measured.get(_key(s))
        if found:
            m = min(found, key=lambda m: (not m.pilot, m.step.job != s.job,
                                          abs(m.step.accumulation - s.accumulation)))
            step_s = m.seconds_per_step * (self._ratio(s, m.step) if self.model else
                                           s.accumulation / m.step.accumulation)
            return self._count(Cost(hours * step_s, "measured", step_s))
        if self.model is not None:
            note = self.model.check_domain(s, "sweep.cost_model")
            if note and note not in self.notes:
                self.notes.append(note)
            step_s = self.model.step_seconds(s)
            self.modelled_hours += hours * step_s
            self.modelled_shapes.add((s.shape, s.arm))
            return self._count(Cost(hours * step_s, "modelled", step_s))
        mfu, peak = float(self.sweep["mfu"]), float(self.sweep["peak_flops"])
        return self._count(Cost(flops / (mfu * peak) / 3600.0, "assumed", None))

    def _ratio(self, run: StepShape, measured: StepShape) -> float:
        return self.model.step_seconds(run) / self.model.step_seconds(measured)

    def _count(self, c: Cost) -> Cost:
        self.counts[c.source] += 1
        return c

    def note(self, total_hours: float) -> str:
        """The dry run's line on where the GPU-hours come from, with the modelled range."""
        n = sum(self.counts.values())
        parts = []
        if self.counts["measured"]:
            parts.append(f"{self.counts['measured']} measured")
        if self.counts["modelled"]:
            e = self.model.loo_error
            lo, hi = total_hours - e * self.modelled_hours, total_hours + e * self.modelled_hours
            parts.append(f"{self.counts['modelled']} modelled (the cost model's leave-one-shape-"
                         f"out error +-{e:.0%}: ~{lo:.4g} to {hi:.4g} GPU-hours in all)")
        if self.counts["assumed"]:
            parts.append(f"{self.counts['assumed']} assumed at sweep.mfu={self.sweep['mfu']} "
                         f"of sweep.peak_flops={float(self.sweep['peak_flops']):.3g}")
        where = f"on {self.device}" if self.device else "no device measured or modelled"
        lines = [f"GPU-hours of {n} runs {where}: " + ", ".join(parts)]
        if self.modelled_shapes and self.measured:
            sizes: dict[str, list[str]] = {}
            for shape, arm in sorted(self.modelled_shapes):
                sizes.setdefault(shape, []).append(arm)
            lines.append("modelled, no measurement of these settings: " + ", ".join(
                f"{shape} ({', '.join(arms)})" for shape, arms in sizes.items()))
        return "\n".join([*lines, *(f"note: {x}" for x in self.notes)])


def _key(s: StepShape) -> tuple:
    return (*s.model_key(), tuple(sorted(s.settings().items())))


def mfu_of(flops: float, gpu_hours: float, peak: float) -> float:
    """The MFU a run's GPU-hours imply (the plan's MFU column)."""
    return flops / (gpu_hours * 3600.0 * peak) if gpu_hours > 0 else math.nan

