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
ratio of 0.19), from the mean loss difference over seeds. Its interval reads the noise the
headline reads (issue 37.5), in this order:
- `paired seeds`: two or more seeds both arms ran (they share the data order): the difference is
  taken per seed and a Student-t interval put on its mean, so the noise a pair shares cancels;
- `seeds` / `given`: otherwise, every run's bucket loss redrawn as the headline redraws its final
  loss (analysis.readings.noise.reading_replicates on the bucket's losses: each arm's level from
  this bucket's seeds under fit.noise_model, an arm without seeds borrowing the others', or a
  level given with fit.seed_noise / --noise-from, which is the final loss's: a rare bucket may
  be noisier; the LR-rule miss as the headline's), the two arms' mean difference read on every
  replicate (unpaired, so the noise they share counts in full);
- `fit`: neither: no interval, labelled "fit only (excludes run-to-run noise)".
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from analysis.laws.bootstrap import percentile_interval
from analysis.readings.noise import reading_replicates

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


def bucket_ratios(buckets: pd.DataFrame, runs: pd.DataFrame, level: float = 0.95, *,
                  cfg=None, lr_miss=None) -> pd.DataFrame | None:
    """One row per (size, non-Dense arm, scheme, bucket) where both arms logged the bucket, with
    the interval of the ratio (module docstring).

    runs: the family's runs to read (usable, on the L(N) budget); cfg: the fit's settings (its
    noise: fit.seed_noise, fit.noise_model, fit.bootstrap, fit.seed; None: paired seeds only);
    lr_miss: the LR model the headline was given."""
    if buckets is None or buckets.empty:
        return None
    keep = [c for c in ("lr_swept", "lr_key") if c in runs]
    cols = ["run_id", "arm", "size", "params_total"] + (["seed"] if "seed" in runs else []) + keep
    b = buckets.merge(runs[cols], on="run_id")
    if b.empty:
        return None
    b = b.assign(scheme=b["bucket"].map(scheme_of),
                 seed=b["seed"].astype(str) if "seed" in b else b["run_id"])
    # one loss per (size, arm, bucket, seed): the mean where several runs share a seed
    per_seed = b.groupby(["size", "arm", "scheme", "bucket", "seed"]).agg(
        loss=("loss", "mean"), order=("order", "first"), params=("params_total", "mean"),
        **{c: (c, "first") for c in keep}).reset_index()
    rng = None if cfg is None else np.random.default_rng([cfg.seed, BUCKET_STREAM])
    rows = []
    per_seed = per_seed[np.isfinite(per_seed["loss"])]
    for (scheme, bucket), runs_b in per_seed.groupby(["scheme", "bucket"], sort=False):
        draws = _draws(runs_b, cfg, rng, lr_miss)
        for size, g in runs_b.groupby("size", sort=False):
            dense = g[g["arm"] == "dense"].set_index("seed")["loss"].dropna()
            if dense.empty:
                continue
            for arm, a in g[g["arm"] != "dense"].groupby("arm", sort=False):
                loss = a.set_index("seed")["loss"].dropna()
                if loss.empty:
                    continue
                diff, lo, hi, n, how = seed_interval(loss, dense, level)
                if how != "paired seeds":
                    lo, hi, how = _replicate_interval(draws, g, arm, level)
                rows.append({"size": size, "arm": arm, "scheme": scheme, "bucket": bucket,
                             "order": float(g["order"].iloc[0]),
                             "dense_loss": float(dense.mean()), "arm_loss": float(loss.mean()),
                             "ppl_ratio": float(np.exp(diff)), "ppl_ratio_lo": float(np.exp(lo)),
                             "ppl_ratio_hi": float(np.exp(hi)), "n_seeds": n, "interval": how})
    if not rows:
        return None
    out = pd.DataFrame(rows, columns=COLUMNS)
    size_n = runs.groupby("size")["params_total"].mean()
    return out.assign(_n=out["size"].map(size_n)).sort_values(
        ["scheme", "_n", "arm", "order"]).drop(columns="_n").reset_index(drop=True)


BUCKET_STREAM = 376  # the bucket ratios' own bootstrap stream: [fit.seed, BUCKET_STREAM]


def _draws(runs_b: pd.DataFrame, cfg, rng, lr_miss) -> tuple[pd.Series, np.ndarray | None, str]:
    """(the bucket's runs by row, their (R, n) replicate losses or None, the noise's source)."""
    if cfg is None:
        return runs_b, None, "fit"
    reps, noise = reading_replicates(runs_b.reset_index(drop=True), cfg, cfg.bootstrap, rng,
                                     lr_miss=lr_miss)
    return runs_b, reps, noise.source


def _replicate_interval(draws, g: pd.DataFrame, arm: str, level: float
                        ) -> tuple[float, float, str]:
    """(lo, hi, source) of an arm's mean bucket loss less Dense's at one size, over the
    replicates (NaN and `fit` without noise)."""
    runs_b, reps, source = draws
    if reps is None:
        return np.nan, np.nan, "fit"
    pos = runs_b.index.get_indexer(g.index)  # g's rows among the bucket's
    is_arm, is_dense = (g["arm"] == arm).to_numpy(), (g["arm"] == "dense").to_numpy()
    d = reps[:, pos[is_arm]].mean(axis=1) - reps[:, pos[is_dense]].mean(axis=1)
    lo, hi = percentile_interval(d, level)
    return float(lo), float(hi), source
