"""The stated truth of a simulation and the designs it is asked about.

`PowerModel`: the law every simulated loss is drawn from, L = b + A·(w·X)^-alpha (A such that the
smallest Dense model has `top_loss`; w what an arm's X is worth), and the noise and LR model of a
sweep's runs; the grid's `power` section gives it for a dry run (`model_from_grid`). A design is
its cells (`Cell`: one arm and size with its parameter count, seeds, LR variants and cost per
run), from a sweep plan (`cells_from_plan`) or a candidate of the design search.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

CONTROL_ARMS = ("factorized", "dense_untied")


@dataclass
class PowerModel:
    """The stated truth and noise model of a simulation."""

    noise: dict = field(default_factory=lambda: {"all": 0.01})  # arm -> relative sd of a run
    #   at the smallest size
    noise_slope: float = 0.0  # sd proportional to (N / N_smallest)^noise_slope: noise that grows
    #   (> 0) or shrinks with size (ln 5 / ln 7 = 0.83: 5x from 60M to 421M)
    effect: float = 1.10  # true LEV over its control (N_eff ratio) at the smallest size; over
    #   Dense without one
    effect_slope: float = 0.0  # LEV over its control proportional to (N / N_smallest)^slope
    control_worth: float = 1.0  # the control's N_eff / the pair's Dense N: what it is worth
    #   against the size it is matched to (dense_untied is 1.3-1.6x Leviathan's own parameters)
    seed_corr: float = 0.0  # correlation of Leviathan's and its control's run-to-run noise at
    #   one seed (they share the data order)
    alpha: float = 0.34  # Dense exponent
    b: float = 1.69  # asymptote (the fit's b)
    top_loss: float = 3.5  # loss of the smallest Dense model
    lr_curvature: float = 0.01  # relative loss per (log2 of LR / optimum)^2
    lr_optimum: dict = field(default_factory=dict)  # arm -> log2 of its true optimum / rule's LR
    lr_spread: float = 0.5  # sd (octaves) of each (arm, size)'s true optimum around that, drawn
    #   per ladder: the LR rule is not exact, so a size without an LR sweep pays for it
    lr_drift: dict = field(default_factory=dict)  # arm -> octaves its optimum moves from the
    #   rule's over the ladder (smallest to largest size, linear in log N): a bias, not noise
    lr_estimator: str = "mean"  # the analysis's LR rule (fit.lr_estimator: mean | pooled)
    noise_model: str = "loglinear"  # the analysis's noise model (fit.noise_model)
    ladders: int = 200  # M simulated ladders
    bootstrap: int = 200  # replicates per ladder for the printed intervals
    seed: int = 0

    def sd(self, arm: str, rel: float = 1.0) -> float:
        """One run's relative sd in `arm` at N = rel x the smallest size."""
        return float(self.noise.get(arm, self.noise.get("all", 0.01))) * rel ** self.noise_slope

    def ratio(self, rel: float = 1.0) -> float:
        """The true LEV over its control at N = rel x the smallest size."""
        return self.effect * rel ** self.effect_slope

    def lr_offset(self, arm: str, frac: float) -> float:
        """The arm's true optimum / the rule's LR, in octaves, at `frac` of the ladder (0 at
        the smallest size, 1 at the largest, by log N), before the per-size spread."""
        return self.lr_optimum.get(arm, 0.0) + self.lr_drift.get(arm, 0.0) * frac

    def scale(self, x_min: float) -> float:
        """A, such that the smallest Dense model (X = x_min) has `top_loss`."""
        return (self.top_loss - self.b) * x_min ** self.alpha

    def loss(self, x, a: float):
        """The clean loss b + A·x^-alpha of an effective X (x = w·X), scalar or array."""
        return self.b + a * x ** -self.alpha


@dataclass(frozen=True)
class Cell:
    """One (arm, size) of a design."""

    arm: str
    size: str
    params: float  # total parameters
    seeds: int
    lrs: tuple[float, ...]  # LR multipliers of the rule's LR
    gpu_hours: float  # per run

    @property
    def runs(self) -> int:
        return self.seeds * len(self.lrs)


def design_cost(cells: list[Cell]) -> float:
    return float(sum(c.runs * c.gpu_hours for c in cells))


def cells_from_plan(frame: pd.DataFrame) -> list[Cell]:
    """A sweep plan's cells (plan.csv columns: arm, size, params_total, seed, lr_scale,
    gpu_hours, branch_of; a main run's cooldown branches count in its cost, not as cells)."""
    main = frame[frame["branch_of"].isna()]
    cells = []
    for (arm, size), g in main.groupby(["arm", "size"], sort=False):
        per_run = float(frame.loc[g.index.union(frame.index[frame["branch_of"].isin(g["run"])]),
                                  "gpu_hours"].sum()) / len(g)
        cells.append(Cell(arm=str(arm), size=str(size), params=float(g["params_total"].mean()),
                          seeds=int(g["seed"].nunique()),
                          lrs=tuple(sorted(float(v) for v in g["lr_scale"].unique())),
                          gpu_hours=per_run))
    return cells


def model_from_grid(power: dict) -> PowerModel:
    """The PowerModel of a grid's `power` section (leviathan.sweep.grid.PowerSpec)."""
    keys = ("noise", "noise_slope", "effect", "effect_slope", "control_worth", "seed_corr",
            "lr_curvature", "lr_spread", "lr_drift", "ladders", "bootstrap", "lr_estimator")
    return PowerModel(**{k: power[k] for k in keys if k in power})
