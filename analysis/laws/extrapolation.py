"""The extrapolation mark: how far an effective size (or token count) lies outside the Dense points
it was read from.

Every reading of an effective size N_eff or an effective token count D_eff off a fitted Dense law
says whether it lies inside the fitted Dense points (read by interpolation) or beyond them, and
by what factor: `extrapolation` = max(x / hi, lo / x, 1), `extrapolated` = that factor above 1
(beyond rounding), † in the tables and plots. A reading beyond EXTRAPOLATION (below) is not
reported at all.
"""

from __future__ import annotations

import numpy as np

EDGE = 1e-6  # a reading this close (relative) to the last Dense point is at the edge: inside


EXTRAPOLATION = 100.0  # an X_eff further than this factor outside the Dense points: not reported


def factor(x, lo: float, hi: float) -> np.ndarray:
    """max(x / hi, lo / x, 1) elementwise: 1 inside [lo, hi], NaN where x is not a positive
    number."""
    x = np.asarray(x, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.maximum(np.maximum(x / hi, lo / x), 1.0)
    return np.where(np.isfinite(x) & (x > 0), out, np.nan)


def outside(far) -> np.ndarray:
    """True where the factor says beyond the Dense points (NaN: False)."""
    far = np.asarray(far, float)
    return np.where(np.isfinite(far), far > 1.0 + EDGE, False)
