"""Is the asymptote b what the data say? (issue 24.5)

b = 1.69 is borrowed: Hoffmann et al.'s E, fitted on another tokenizer and corpus. Beside every
fit the Dense L(N) ladder (each size's largest token budget, every seed) is fitted once more with
b free, and its bootstrap interval is shown beside the b used; when that b lies outside the
interval the summary and the log say so. The interval is built as the matchings' are: with
several seeds, every Dense run's loss redrawn from the seeds' deviations (run-to-run noise,
analysis.laws.bootstrap.seed_noise_replicates) and b refitted each time; with one seed, the Dense
sizes resampled (the fit's spread only). With fit.b=free the main fit is this fit and
the line compares it with 1.69. A free b on a short ladder is loosely pinned (it trades off
against A and alpha), so a wide interval is an answer too: the data cannot tell.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from analysis.config import B_DEFAULT, FitConfig
from analysis.laws.bootstrap import percentile_interval, resample_counts, seed_noise_replicates
from analysis.laws.powerlaw import FitError, fit_power_law, refit_free_b

log = logging.getLogger(__name__)
MIN_SIZES = 3  # a free b needs three distinct sizes (A, alpha, b)


def check_b(ladder: pd.DataFrame, cfg: FitConfig, rng: np.random.Generator,
            family: str = "") -> dict | None:
    """The Dense L(N) fitted with b free, its interval and whether the b used lies in it; None
    (with nothing to say) when the ladder has fewer than MIN_SIZES sizes or the fit fails."""
    ladder = ladder[np.isfinite(ladder["loss"]) & (ladder["loss"] > 0)]
    if ladder["params"].nunique() < MIN_SIZES:
        return None
    try:
        fit = fit_power_law(ladder["params"], ladder["loss"], b=None, delta=cfg.delta)
    except FitError:
        return None
    x, loss, sizes = (ladder[c].to_numpy() for c in ("params", "loss", "size"))
    reps = seed_noise_replicates(loss, sizes, cfg.bootstrap, rng)
    if reps is None:  # one seed: resample the sizes
        samples = refit_free_b(x, loss, resample_counts(sizes, cfg.bootstrap, rng), fit,
                               delta=cfg.delta)
    else:
        samples = refit_free_b(x, reps, np.ones_like(reps), fit, delta=cfg.delta)
    lo, hi = (float(v) for v in percentile_interval(samples[:, 2], cfg.level))
    used = B_DEFAULT if cfg.b is None else cfg.b
    out = {"b": fit.b, "b_lo": lo, "b_hi": hi, "alpha": fit.alpha, "n_points": fit.n_points,
           "n_sizes": int(ladder["params"].nunique()), "b_used": used,
           "b_fixed": cfg.b is not None, "interval": "fit" if reps is None else "seeds",
           "at_bound": bool(fit.b >= 0.999 * float(ladder["loss"].min())),
           "outside": bool(np.isfinite(lo) and np.isfinite(hi) and not lo <= used <= hi)}
    if out["outside"]:
        log.warning(f"family {family!r}: " + warning_text(out, cfg.level))
    return out


def warning_text(check: dict, level: float) -> str:
    return (f"b = {check['b_used']:g} lies outside the free-b fit's {level:.0%} interval "
            f"[{check['b_lo']:.3g}, {check['b_hi']:.3g}] (b = {check['b']:.3g} fitted on the "
            f"Dense L(N), {check['n_sizes']} sizes)" + (
                ": the multipliers rest on an asymptote the data reject; see how they move with "
                "b, or fit it (fit.b=free)" if check["b_fixed"] else ""))
