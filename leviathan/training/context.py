"""RunContext: one training run's checked state, built once by run.train and passed whole to
engine.fit, the step callback and the run's tracker (instead of a dozen loose arguments).

Everything in it is settled before any model exists: the configs are validated, the plan is
derived, the run folder is chosen. What follows from those stays a property, not a field.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from leviathan.tracking.runs import RunFolder

if TYPE_CHECKING:
    from leviathan.data.config import DataConfig
    from leviathan.models.config import ModelConfig
    from leviathan.tracking.config import TrackingConfig
    from leviathan.training.config import TrainerConfig
    from leviathan.training.plan import RunPlan


@dataclass(frozen=True)
class RunContext:
    cfg: Any  # the resolved run config (a DictConfig of `container`)
    container: dict  # the same, as a plain dict (MLflow params, config.yaml)
    mcfg: ModelConfig  # the model config with its solved depth (leviathan.models)
    data_cfg: DataConfig  # the checked data config (leviathan.data)
    tc: TrainerConfig  # the typed `trainer` config
    trk: TrackingConfig  # the typed `tracking` config
    plan: RunPlan  # steps, batches, accumulation, parameter counts, FLOPs per token
    chash: str  # the config hash (training.config.config_hash)
    key: str  # the run key: the run folder's name and the MLflow run name
    run_dir: Path  # the run folder, <paths.scratch_dir>/runs/<key>
    rank: int  # this process's global rank (0 outside DDP)

    @property
    def folder(self) -> RunFolder:
        """The run folder's files (leviathan.tracking.runs)."""
        return RunFolder(self.run_dir)

    @property
    def is_zero(self) -> bool:
        """Global rank 0: the process that owns the MLflow run and writes the run folder."""
        return self.rank == 0

    @property
    def world_size(self) -> int:
        return self.plan.world_size

    @property
    def data_rank(self) -> int:
        """This process's data-parallel rank (the global rank; 0 outside DDP)."""
        return self.rank if self.world_size > 1 else 0
