"""The multiplier as a function of tokens seen, from the validation losses logged in training.

At every token count t where a Leviathan run was validated, each Dense run of the ladder that
reached t gives its loss at t (linear interpolation in log tokens between its validations);
L(N) is refitted on those losses (b fixed) and the Leviathan loss at t gives N_eff(t) and the
multiplier N_eff(t) / N_lev. Pairs see the identical token stream with the same validation
cadence, so the token counts usually match exactly and the interpolation is a no-op.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.powerlaw import ALPHA_BOUNDS, FitError, effective_size, fit_power_law

COLUMNS = ["run_id", "size", "params", "tokens", "loss", "n_dense", "n_eff", "multiplier"]


def loss_at(history: pd.DataFrame, tokens: float) -> float:
    """A run's validation loss at `tokens` (log-linear interpolation; NaN outside its range)."""
    h = history.dropna().sort_values("tokens")
    t = h["tokens"].to_numpy(float)
    if t.size == 0 or tokens < t[0] * (1 - 1e-9) or tokens > t[-1] * (1 + 1e-9) or tokens <= 0:
        return float("nan")
    if t.size == 1 or t[0] <= 0:
        return float(h["loss"].to_numpy()[np.argmin(np.abs(t - tokens))])
    return float(np.interp(np.log(tokens), np.log(np.maximum(t, 1e-300)), h["loss"].to_numpy()))


def multiplier_vs_tokens(history: pd.DataFrame, dense: pd.DataFrame, lev: pd.DataFrame,
                         b: float, delta: float) -> pd.DataFrame | None:
    """One row per (Leviathan run, validation point) with N_eff(t); None without histories."""
    if history is None or history.empty:
        return None
    by_run = {rid: h for rid, h in history.groupby("run_id")}
    dense_h = {rid: by_run[rid] for rid in dense["run_id"] if rid in by_run}
    if len({dense.set_index("run_id").loc[r, "params"] for r in dense_h}) < 2:
        return None
    fits: dict[float, object] = {}
    rows = []
    for lrow in lev.itertuples():
        h = by_run.get(lrow.run_id)
        if h is None:
            continue
        for t, loss in h.sort_values("tokens")[["tokens", "loss"]].itertuples(index=False):
            if not (np.isfinite(t) and t > 0 and np.isfinite(loss)):
                continue
            key = float(t)
            if key not in fits:
                pts = [(dense.set_index("run_id").loc[r, "params"], loss_at(dh, t))
                       for r, dh in dense_h.items()]
                pts = [(n, lo) for n, lo in pts if np.isfinite(lo) and lo > b]
                fits[key] = None
                if len({n for n, _ in pts}) >= 2:
                    try:
                        fit = fit_power_law([p[0] for p in pts], [p[1] for p in pts], b=b,
                                            delta=delta)
                        if ALPHA_BOUNDS[0] * 10 < fit.alpha < ALPHA_BOUNDS[1] * 0.99:
                            fits[key] = (fit, len(pts))  # else degenerate: no N_eff at t
                    except FitError:
                        pass
            if fits[key] is None:
                continue
            fit, n_dense = fits[key]
            n_eff, mult = effective_size(fit, loss, lrow.params)
            rows.append((lrow.run_id, lrow.size, lrow.params, key, float(loss), n_dense,
                         float(n_eff), float(mult)))
    if not rows:
        return None
    return pd.DataFrame(rows, columns=COLUMNS)
