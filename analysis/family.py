"""What the fit finds for one family (the sweep's tag `family`); its settings, FitConfig, are the
`fit` config group (analysis/config.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.config import B_GRID, FIT_DELTA, FitConfig  # noqa: F401 - the fit's settings
from analysis.laws.joint import JointFit
from analysis.laws.powerlaw import PowerLaw, SharedExponent


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
    matching: object | None = None  # analysis.readings.matchings.Matching: (arm, size) x basis
    controls: pd.DataFrame | None = None  # LEV over its control, per size and basis
    pooled: pd.DataFrame | None = None  # LEV over its control pooled across sizes, per basis
    lr_choices: pd.DataFrame | None = None  # the LR kept per sweep point
    token_multipliers: pd.DataFrame | None = None  # tokens Leviathan needs for Dense's loss
    bucket_ratios: pd.DataFrame | None = None  # per-bucket perplexity ratio against Dense
    data_fits: list = field(default_factory=list)  # L(D) per (arm, size)
    data_multipliers: pd.DataFrame | None = None  # D_eff / D for Leviathan (data scaling)
    joint: JointFit | None = None
    trajectory: pd.DataFrame | None = None  # multiplier vs tokens seen
    b_check: dict | None = None  # Dense L(N) with b free beside the b used
    #   (analysis/readings/b_check.py)
    notes: list = field(default_factory=list)
