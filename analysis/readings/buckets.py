"""Where the gain sits: validation loss by token-frequency bucket, as a perplexity ratio.

Training logs one loss per bucket of validation target tokens (val/loss_freq/<name>; from a CSV:
`--buckets buckets.csv`), in either of two schemes (trainer.freq_buckets), told apart by name:
- `quantile`: training-frequency quantiles of the validation tokens, `q00-10`, `q10-20`, ...
  (each holds a tenth of what the model is asked to predict: every bucket populated);
- `count`: log-spaced training-count bins, `0` (never seen), `1e0-1e1`, `1e1-1e2`, ... (or any
  other name): a bucket of tokens seen a given number of times, whatever their share.
Buckets are ordered within a scheme by Runs.buckets `order` (the first number in the name: rare
to frequent); the two schemes are read and shown separately, side by side.

Per size, arm and bucket the ratio exp(L_arm - L_dense) is the arm's perplexity relative to
Dense there (< 1: the arm is better; the v2 paper reports -81% perplexity on rare tokens, a
ratio of 0.19), from the mean loss difference over seeds. Its interval is over seeds: the two
arms of a pair share a seed (and the data order), so the difference is taken per seed and a
Student-t interval put on its mean (paired); seeds that do not pair fall back to the difference
of the two arms' means with Welch's standard error. One seed per arm: no interval.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

COLUMNS = ["size", "arm", "scheme", "bucket", "order", "dense_loss", "arm_loss", "ppl_ratio",
           "ppl_ratio_lo", "ppl_ratio_hi", "n_seeds", "interval"]
SCHEMES = ("quantile", "count")
_QUANTILE = re.compile(r"^q\d+-\d+$")


def scheme_of(name: str) -> str:
    """`quantile` for q<lo>-<hi> names, `count` for every other bucket name."""
    return "quantile" if _QUANTILE.match(str(name)) else "count"


def _t(level: float, df: float) -> float:
    from scipy.stats import t

    return float(t.ppf(0.5 + level / 2, df))


def seed_interval(arm: pd.Series, dense: pd.Series, level: float
                  ) -> tuple[float, float, float, int, str]:
    """(mean difference L_arm - L_dense, lo, hi, seeds, how) from per-seed losses indexed by
    seed: paired over the seeds both arms ran, else Welch; NaN bounds with one seed."""
    both = arm.index.intersection(dense.index)
    if len(both):
        d = (arm[both] - dense[both]).to_numpy(float)
        if len(d) < 2:
            return float(d.mean()), np.nan, np.nan, 1, "one seed"
        half = _t(level, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
        return float(d.mean()), d.mean() - half, d.mean() + half, len(d), "paired seeds"
    diff = float(arm.mean() - dense.mean())
    if len(arm) < 2 or len(dense) < 2:
        return diff, np.nan, np.nan, min(len(arm), len(dense)), "one seed"
    va, vd = arm.var(ddof=1) / len(arm), dense.var(ddof=1) / len(dense)
    se = np.sqrt(va + vd)
    dof = (va + vd) ** 2 / (va**2 / (len(arm) - 1) + vd**2 / (len(dense) - 1)) if se > 0 else 1.0
    half = _t(level, dof) * se
    return diff, diff - half, diff + half, min(len(arm), len(dense)), "Welch (unpaired seeds)"


def bucket_ratios(buckets: pd.DataFrame, runs: pd.DataFrame, level: float = 0.95
                  ) -> pd.DataFrame | None:
    """One row per (size, non-Dense arm, scheme, bucket) where both arms logged the bucket, with
    the seed interval of the ratio.

    runs: the family's runs to read (usable, on the L(N) budget)."""
    if buckets is None or buckets.empty:
        return None
    cols = ["run_id", "arm", "size", "params_total"] + (["seed"] if "seed" in runs else [])
    b = buckets.merge(runs[cols], on="run_id")
    if b.empty:
        return None
    b = b.assign(scheme=b["bucket"].map(scheme_of),
                 seed=b["seed"].astype(str) if "seed" in b else b["run_id"])
    # one loss per (size, arm, bucket, seed): the mean where several runs share a seed
    per_seed = b.groupby(["size", "arm", "scheme", "bucket", "seed"]).agg(
        loss=("loss", "mean"), order=("order", "first")).reset_index()
    rows = []
    for (size, scheme, bucket), g in per_seed.groupby(["size", "scheme", "bucket"], sort=False):
        dense = g[g["arm"] == "dense"].set_index("seed")["loss"].dropna()
        if dense.empty:
            continue
        for arm, a in g[g["arm"] != "dense"].groupby("arm", sort=False):
            loss = a.set_index("seed")["loss"].dropna()
            if loss.empty:
                continue
            diff, lo, hi, n, how = seed_interval(loss, dense, level)
            rows.append({"size": size, "arm": arm, "scheme": scheme, "bucket": bucket,
                         "order": float(g["order"].iloc[0]), "dense_loss": float(dense.mean()),
                         "arm_loss": float(loss.mean()), "ppl_ratio": float(np.exp(diff)),
                         "ppl_ratio_lo": float(np.exp(lo)), "ppl_ratio_hi": float(np.exp(hi)),
                         "n_seeds": n, "interval": how})
    if not rows:
        return None
    out = pd.DataFrame(rows, columns=COLUMNS)
    size_n = runs.groupby("size")["params_total"].mean()
    return out.assign(_n=out["size"].map(size_n)).sort_values(
        ["scheme", "_n", "arm", "order"]).drop(columns="_n").reset_index(drop=True)
