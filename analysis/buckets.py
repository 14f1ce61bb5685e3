"""Where the gain sits: validation loss by token-frequency bucket, as a perplexity ratio.

Training logs one loss per bucket of validation target tokens (val/loss_freq/<name>): buckets by
training-frequency quantile (`q00-10`, `q10-20`, ...: each holds a tenth of the tokens) or the
older log10 count buckets. Buckets are ordered by Runs.buckets `order` (the first number in the
name: rare to frequent). Per size, the ratio exp(L_arm - L_dense) of each bucket's mean loss over
seeds is the arm's perplexity relative to Dense there (< 1: the arm is better; the v2 paper
reports -81% perplexity on rare tokens, a ratio of 0.19).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

COLUMNS = ["size", "arm", "bucket", "order", "dense_loss", "arm_loss", "ppl_ratio"]


def bucket_ratios(buckets: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame | None:
    """One row per (size, non-Dense arm, bucket) where both arms logged the bucket.

    runs: the family's runs to read (usable, on the L(N) budget)."""
    if buckets is None or buckets.empty:
        return None
    b = buckets.merge(runs[["run_id", "arm", "size", "params_total"]], on="run_id")
    if b.empty:
        return None
    mean = b.groupby(["size", "arm", "bucket"]).agg(loss=("loss", "mean"),
                                                    order=("order", "first")).reset_index()
    dense = mean[mean["arm"] == "dense"].set_index(["size", "bucket"])["loss"]
    rows = []
    for r in mean[mean["arm"] != "dense"].itertuples(index=False):
        d = dense.get((r.size, r.bucket))
        if d is None or not np.isfinite(d):
            continue
        rows.append({"size": r.size, "arm": r.arm, "bucket": r.bucket, "order": r.order,
                     "dense_loss": float(d), "arm_loss": float(r.loss),
                     "ppl_ratio": float(np.exp(r.loss - d))})
    if not rows:
        return None
    out = pd.DataFrame(rows, columns=COLUMNS)
    size_n = runs.groupby("size")["params_total"].mean()
    return out.assign(_n=out["size"].map(size_n)).sort_values(["_n", "arm", "order"]).drop(
        columns="_n").reset_index(drop=True)


def bucket_table_md(ratios: pd.DataFrame | None) -> list[str]:
    """Markdown: rows (size, arm), one column per bucket (rare -> frequent)."""
    if ratios is None or ratios.empty:
        return []
    order = ratios.groupby("bucket")["order"].first().sort_values().index.tolist()
    out = ["Perplexity ratio arm / Dense by token-frequency bucket (rare -> frequent; "
           "exp(L_arm - L_dense), < 1: the arm is better; rare_tokens.png):", "",
           "| Size | Arm | " + " | ".join(order) + " |", "|---|---|" + "---|" * len(order)]
    for (size, arm), g in ratios.groupby(["size", "arm"], sort=False):
        vals = g.set_index("bucket")["ppl_ratio"]
        out.append(f"| {size} | {arm} | " + " | ".join(
            f"{vals[k]:.3f}" if k in vals else "–" for k in order) + " |")
    return out + [""]
