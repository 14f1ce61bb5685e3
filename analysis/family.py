"""The fit's settings and what it finds for one family (the sweep's tag `family`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.joint import JointFit
from analysis.powerlaw import B_DEFAULT, PowerLaw, SharedExponent

B_GRID = (1.5, 1.6, 1.69, 1.8, 1.82, 1.9, 2.0)  # b sensitivity; 1.82 is Epoch AI's refit of E
# Huber delta on log residuals of L(N), L(C), L(D) (tests/unit/test_analysis_noise.py)
FIT_DELTA = 2e-2


@dataclass
class FitConfig:
    b: float | None = B_DEFAULT  # irreducible loss; None fits it
    params: str = "total"  # N of the per-run table = total | body parameters
    bootstrap: int = 1000  # bootstrap resamples for every interval
    seed: int = 0  # RNG seed of the bootstrap
    level: float = 0.95  # interval coverage
    delta: float = FIT_DELTA  # Huber delta on log residuals
    b_grid: tuple[float, ...] = B_GRID  # asymptotes for the sensitivity table
    budget_tol: float = 0.05  # token counts within this relative gap are one budget


@dataclass
class FamilyResult:
    family: str
    dense: PowerLaw | None = None  # L(N) on the Dense ladder (N = FitConfig.params)
    dense_samples: np.ndarray | None = None  # (R, 3) bootstrap A, alpha, b
    intervals: dict = field(default_factory=dict)  # name -> (lo, hi)
    lev: PowerLaw | None = None  # L(N) on the Leviathan runs alone
    shared: SharedExponent | None = None
    multipliers: pd.DataFrame | None = None  # one row per Leviathan run (the paper's table)
    b_sensitivity: pd.DataFrame | None = None  # run x b -> multiplier
    matching: object | None = None  # analysis.matchings.Matching: (arm, size) x basis
    controls: pd.DataFrame | None = None  # LEV over its control, per size and basis
    lr_choices: pd.DataFrame | None = None  # the LR kept per sweep point
    token_multipliers: pd.DataFrame | None = None  # tokens Leviathan needs for Dense's loss
    bucket_ratios: pd.DataFrame | None = None  # per-bucket perplexity ratio against Dense
    data_fits: list = field(default_factory=list)  # L(D) per (arm, size)
    data_multipliers: pd.DataFrame | None = None  # D_eff / D for Leviathan (data scaling)
    joint: JointFit | None = None
    trajectory: pd.DataFrame | None = None  # multiplier vs tokens seen
    notes: list = field(default_factory=list)
