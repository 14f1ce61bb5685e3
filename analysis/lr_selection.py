"""Learning-rate sweeps: each arm gets its own best learning rate before anything is fitted.

Runs that differ only in `lr` (same family, arm, size, token budget and seed) are one sweep
point; the run with the lowest final validation loss is kept and the others are excluded with
the reason. The swept range is every LR that finished (a diverged run, loss NaN, still counts as
tried), so a winner at its lowest or highest value is flagged: the optimum may lie outside the
sweep ("widen the sweep").
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.runs import budget_ids

CHOICE_COLUMNS = ["family", "arm", "size", "tokens", "seed", "lr", "loss", "swept", "edge"]


def _fmt(lr: float) -> str:
    return f"{lr:.3g}"


def select_lr(table: pd.DataFrame, tol: float = 0.05) -> pd.DataFrame:
    """Mark the losing LRs of every sweep point in table['reason'] (in place); one row per
    sweep point with its winner (CHOICE_COLUMNS), empty when no point has two LRs."""
    swept = table[np.isfinite(table["lr"]) & (table["status"] == "FINISHED")]
    choices = []
    for (fam, arm, size), g in swept.groupby(["family", "arm", "size"], sort=True):
        budgets = budget_ids(g["tokens"].to_numpy(float), tol)
        for (_, seed), point in g.groupby([budgets, g["seed"].to_numpy()], sort=True):
            lrs = np.unique(point["lr"].to_numpy(float))
            if lrs.size < 2:
                continue
            usable = point[point["reason"] == ""]
            if usable.empty:
                continue
            best = usable.loc[usable["loss"].idxmin()]
            for i, row in usable.iterrows():
                if i != best.name:
                    table.loc[i, "reason"] = (
                        f"LR sweep: lr {_fmt(row.lr)} (loss {row.loss:.4f}) lost to lr "
                        f"{_fmt(best.lr)} (loss {best.loss:.4f})")
            edge = ("lowest" if best.lr == lrs[0] else "highest" if best.lr == lrs[-1] else "")
            choices.append({"family": fam, "arm": arm, "size": size,
                            "tokens": float(point["tokens"].max()), "seed": seed,
                            "lr": float(best.lr), "loss": float(best.loss),
                            "swept": ", ".join(_fmt(v) for v in lrs), "edge": edge})
    return pd.DataFrame(choices, columns=CHOICE_COLUMNS)


def lr_table_md(choices: pd.DataFrame, family: str) -> list[str]:
    """Markdown lines: the chosen LR per arm and size (over seeds and budgets), with a flag when
    a winner sits at the edge of its sweep."""
    c = choices[choices["family"] == family]
    if c.empty:
        return []
    out = ["Learning rate chosen per arm and size (lowest final validation loss of each sweep "
           "point: arm, size, tokens, seed):", "",
           "| Size | Arm | Chosen LR (sweep points) | Swept | Edge |", "|---|---|---|---|---|"]
    for (size, arm), g in c.groupby(["size", "arm"], sort=False):
        won = g["lr"].value_counts().sort_index()
        chosen = ", ".join(f"{_fmt(lr)} ({n})" for lr, n in won.items())
        edges = sorted(set(g["edge"]) - {""})
        flag = (f"**at the {' and '.join(edges)} LR swept: widen the sweep**" if edges else "")
        out.append(f"| {size} | {arm} | {chosen} | {' / '.join(sorted(set(g['swept'])))} | "
                   f"{flag} |")
    return out + [""]
