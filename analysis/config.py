"""The `fit` config group: the fit's settings, typed and validated, and how fit-scaling composes
them.

`python -m analysis.fit_scaling` (`make fit-scaling`) composes the primary config conf/fit.yaml:
the sweep config (tracking, paths, conf/local, as every entry point) plus the group `fit`
(conf/fit/default.yaml), whose schema is `FitConfig` below, registered in Hydra's ConfigStore as
`fit/schema` by `register()`. So `fit.b=free fit.bootstrap=2000` on the command line works like
any other override, and a bad value fails in one line naming the key (`fit.<key>: ...`); the
argparse flags (--b, --bootstrap, ...) are shortcuts for these keys. Composing imports no torch
(tests/unit/test_entry_point_imports.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from leviathan.errors import LeviathanError
from leviathan.typed_config import above, check_fields, choice, each, in_range, positive

B_DEFAULT = 1.69  # Hoffmann et al.'s fitted irreducible loss E (analysis.laws.powerlaw uses it too)
B_GRID = (1.5, 1.6, 1.69, 1.8, 1.82, 1.9, 2.0)  # b sensitivity; 1.82 is Epoch AI's refit of E
# Huber delta on log residuals of L(N), L(C), L(D) (tests/unit/test_analysis_noise.py)
FIT_DELTA = 2e-2


class FitConfigError(LeviathanError, ValueError):
    """A value of the `fit` config is invalid; the message names the key (`fit.<key>`)."""


def _b(v: Any) -> str | None:
    """fit.b: a number > 0, or `free` (None) to fit it."""
    if v is None or v == "free" or (isinstance(v, int | float) and not isinstance(v, bool)
                                    and v > 0):
        return None
    return "must be a number > 0, or free to fit it"


def _seed_noise(v: Any) -> str | None:
    """fit.seed_noise: arm -> a relative sd in (0, 0.5) (`all`: every other arm)."""
    if not v:
        return None
    if not hasattr(v, "items"):
        return "must map an arm (dense, leviathan, factorized, dense_untied, all) to a sd"
    for arm, sd in v.items():
        if arm not in ("dense", "leviathan", "factorized", "dense_untied", "all"):
            return (f"unknown arm {arm!r}; allowed: dense, leviathan, factorized, dense_untied, "
                    "all")
        if not isinstance(sd, int | float) or isinstance(sd, bool) or not 0 < sd < 0.5:
            return f"{arm}: must be a relative sd in (0, 0.5) (0.01 = 1% of the loss)"
    return None


def lr_rule_miss(curvature: float, spread: float) -> float:
    """Relative sd of the loss of a size run at the LR rule's LR: curvature x delta^2, delta ~
    N(0, spread^2) the rule's miss of the optimum in octaves (sd of delta^2: sqrt(2) spread^2)."""
    return curvature * spread ** 2 * 2 ** 0.5


@dataclass
class FitConfig:
    b: float | int | str | None = B_DEFAULT  # irreducible loss b of every power law; `free`
    #   fits it (the summary always shows the free fit beside the b used)
    params: str = "total"  # N of the paper's per-run table: total | body parameters
    bootstrap: int = 1000  # bootstrap resamples for every interval
    seed: int = 0  # RNG seed of the bootstrap
    level: float = 0.95  # interval coverage
    delta: float = FIT_DELTA  # Huber delta on the log residuals of L(N), L(C), L(D)
    b_grid: tuple[float, ...] = B_GRID  # asymptotes b for the sensitivity table
    budget_tol: float = 0.05  # token counts within this relative gap are one budget
    seed_noise: dict[str, float] = field(default_factory=dict)  # arm -> relative sd of one
    #   run's final loss measured elsewhere (`all`: every arm not named), for a one-seed sweep:
    #   +fit.seed_noise.leviathan=0.01
    noise_model: str = "loglinear"  # run-to-run noise of an arm as a function of size:
    #   loglinear (log sd linear in log N, fitted over the sizes' seeds with their degrees of
    #   freedom: a 421M run need not be as noisy as a 60M one) | per_size (each size its own
    #   seeds' level: 3 or more seeds at every size) | pooled (one level per arm)
    lr_estimator: str = "mean"  # the loss at each arm's best LR: mean (the LR with the lowest
    #   mean over seeds, every seed kept there) | pooled (each size at the LR its arm's other
    #   sizes choose: no winner's curse, at one seed too) | vertex (a quadratic in log LR,
    #   curvature pooled across sizes)
    lr_miss: float = round(lr_rule_miss(0.01, 0.5), 4)  # 0.0035: relative sd of the final loss
    #   of an (arm, size) that ran the LR rule's LR only, where its arm has no sweep of three
    #   LRs to estimate the miss from (else analysis/laws/lr_miss.py estimates it per arm,
    #   as a bias): a zero-mean miss shared by its seeds (the power model's: curvature 0.01
    #   per octave^2, optimum +-0.5 octave); 0: left out

    lr_spread: float = 0.5  # octaves: each size's LR optimum scatters this much around the line
    #   through its arm's swept sizes' optima (what no sweep elsewhere can show; the power
    #   model's grid.power.lr_spread): the miss of a size that ran the rule's LR only is
    #   estimated from that line and this (analysis/laws/lr_miss.py)

    _checks = {
        "b": _b, "params": choice("total", "body"), "bootstrap": positive(),
        "seed": in_range(0), "level": in_range(0, 1, lo_open=True, hi_open=True),
        "delta": above(0), "b_grid": each(above(0)),
        "budget_tol": in_range(0, 1, hi_open=True), "seed_noise": _seed_noise,
        "lr_estimator": choice("mean", "pooled", "vertex"), "lr_miss": in_range(0, 0.5),
        "lr_spread": in_range(0, 3),
        "noise_model": choice("loglinear", "per_size", "pooled"),
    }

    def __post_init__(self) -> None:
        check_fields(self, "fit", FitConfigError)
        if self.b == "free":
            self.b = None
        elif self.b is not None:
            self.b = float(self.b)
        self.b_grid = tuple(float(b) for b in self.b_grid)
        if self.seed_noise:
            self.seed_noise = {str(k): float(v) for k, v in dict(self.seed_noise).items()}
        if not self.b_grid:
            raise FitConfigError("fit.b_grid: give at least one b")


def register() -> None:
    """`fit/schema` in Hydra's ConfigStore (conf/fit/default.yaml lists it first)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(group="fit", name="schema", node=FitConfig)


def compose_fit(overrides: list[str] | tuple[str, ...] = ()):
    """(the composed conf/fit.yaml, its validated FitConfig) with these command-line overrides;
    a bad key or value raises FitConfigError in one line naming it."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from leviathan.config import compose
    from leviathan.typed_config import to_config

    register()
    try:
        cfg = compose("fit", list(overrides))
    except (HydraException, OmegaConfBaseException) as err:
        raise FitConfigError(_one_line(err)) from None
    return cfg, to_config(FitConfig, cfg.fit, "fit", FitConfigError)


def _one_line(err: Exception) -> str:
    """`<key>: <what>` from a composition error (the OmegaConf cause names the key)."""
    cause = err.__cause__
    key = getattr(cause, "full_key", None)
    if not key:
        return str(err).strip().splitlines()[0]
    what = str(cause).strip().splitlines()[0]
    if "not in" in what:
        known = getattr(getattr(cause, "object_type", None), "__dataclass_fields__", {})
        what = "unknown key" + (f"; allowed keys: {', '.join(known)}" if known else "")
    return f"{key}: {what}"
