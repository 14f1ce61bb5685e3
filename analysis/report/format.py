"""The report's number formatters, one home each: a number (`num`), its interval (`ci`), the
extrapolation mark (`dagger`) and a downstream score (`score`); sizes and token counts are named by
analysis.inputs.runs.human."""

from __future__ import annotations

import numpy as np

from analysis.laws.extrapolation import outside


def num(x, digits=3) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{x:.{digits}g}"


def ci(lo, hi, digits=3) -> str:
    if lo is None or hi is None or not (np.isfinite(lo) and np.isfinite(hi)):
        return ""
    return f" [{lo:.{digits}g}, {hi:.{digits}g}]"


def dagger(far: float, x: float, ref: float) -> str:
    """' †1.52× above' (or below) for a marked reading x, '' otherwise; ref: any point inside
    the Dense range (e.g. its largest point, or a Dense size's own count), NaN: no direction."""
    if not outside(far):
        return ""
    way = "" if not np.isfinite(ref) else " above" if x > ref else " below"
    return f" †{far:.2f}×{way}"


def score(x: float, digits: int = 4) -> str:
    """A downstream score: 4 decimals, or 4 significant digits from 1000 up; '–' when missing."""
    if x is None or not np.isfinite(x):
        return "–"
    return f"{x:.{digits}g}" if abs(x) >= 1000 else f"{x:.{digits}f}"
