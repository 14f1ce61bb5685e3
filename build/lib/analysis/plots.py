"""scaling.png, multiplier_vs_tokens.png, rare_tokens.png (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.bootstrap import percentile_interval
from analysis.scaling import FamilyResult

DENSE, LEV = "#1f77b4", "#d62728"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def NullFormatter():  # noqa: N802 - matplotlib's class, imported lazily
    from matplotlib.ticker import NullFormatter as _Null

    return _Null()


def _panels(plt, n: int, width: float = 6.0, height: float = 4.5):
    fig, axes = plt.subplots(1, n, figsize=(width * n, height), squeeze=False)
    return fig, axes[0]


def plot_scaling(path: Path, results: dict[str, FamilyResult], table: pd.DataFrame,
                 level: float = 0.95) -> Path | None:
    """Loss against N (log axis): Dense points, fit and band; Leviathan -> effective size."""
    fams = {f: r for f, r in results.items() if r.dense is not None}
    if not fams:
        return None
    plt = _pyplot()
    fig, axes = _panels(plt, len(fams))
    for ax, (fam, r) in zip(axes, fams.items(), strict=True):
        usable = table[(table["family"] == fam) & (table["reason"] == "")]
        dense = usable[usable["arm"] == "dense"]
        m = r.multipliers
        xs = np.concatenate([dense["params"], m["params"], m["n_eff"].dropna()])
        xs = xs[np.isfinite(xs) & (xs > 0)]
        grid = np.geomspace(xs.min() / 1.3, xs.max() * 1.3, 200)
        if r.dense_samples is not None and len(r.dense_samples):
            s = r.dense_samples
            with np.errstate(all="ignore"):
                curves = s[:, 0:1] * grid[None, :] ** (-s[:, 1:2]) + s[:, 2:3]
            lo, hi = percentile_interval(curves, level)
            ax.fill_between(grid, lo, hi, color=DENSE, alpha=0.2, lw=0,
                            label=f"Dense fit, {level:.0%} bootstrap band")
        ax.plot(grid, r.dense.predict(grid), color=DENSE, lw=1.5,
                label=f"L = {r.dense.A:.3g}·N^-{r.dense.alpha:.3f} + {r.dense.b:.3g}")
        ax.scatter(dense["params"], dense["loss"], color=DENSE, zorder=3, label="Dense")
        ok = m["reason"] == ""
        ax.scatter(m.loc[ok, "params"], m.loc[ok, "loss"], color=LEV, marker="s", zorder=3,
                   label="Leviathan")
        if (~ok).any():
            ax.scatter(m.loc[~ok, "params"], m.loc[~ok, "loss"], facecolors="none",
                       edgecolors=LEV, marker="s", zorder=3, label="Leviathan (excluded)")
        for row in m.itertuples():
            if np.isfinite(row.n_eff):
                ax.annotate("", xy=(row.n_eff, row.loss), xytext=(row.params, row.loss),
                            arrowprops={"arrowstyle": "->", "color": LEV, "lw": 1.2})
                ax.text(row.n_eff * 1.03, row.loss, f"{row.multiplier:.2f}x", color=LEV,
                        fontsize=8, va="center")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(f"parameters N ({fam})")
        ax.set_ylabel("validation loss")
        ax.set_title(f"{fam}: Leviathan runs and their Dense-equivalent size")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_multiplier_vs_tokens(path: Path, results: dict[str, FamilyResult]) -> Path | None:
    fams = {f: r for f, r in results.items() if r.trajectory is not None}
    if not fams:
        return None
    plt = _pyplot()
    fig, axes = _panels(plt, len(fams))
    for ax, (fam, r) in zip(axes, fams.items(), strict=True):
        for (_rid, size), g in r.trajectory.groupby(["run_id", "size"], sort=False):
            g = g.sort_values("tokens")
            ax.plot(g["tokens"], g["multiplier"], marker="o", ms=3, label=f"{size}")
        ax.axhline(1.0, color="grey", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.set_xlabel("tokens seen")
        ax.set_ylabel("effective-size multiplier N_eff / N")
        ax.set_title(f"{fam}: multiplier during training")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, title="Leviathan size")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_rare_tokens(path: Path, buckets: pd.DataFrame, table: pd.DataFrame) -> Path | None:
    """Loss per token-frequency bucket (rare -> frequent), Dense solid, Leviathan dashed."""
    if buckets is None or buckets.empty:
        return None
    usable = table[table["reason"] == ""]
    b = buckets.merge(usable[["run_id", "arm", "size", "family", "params"]], on="run_id")
    if b.empty:
        return None
    plt = _pyplot()
    fams = sorted(b["family"].unique())
    fig, axes = _panels(plt, len(fams))
    for ax, fam in zip(axes, fams, strict=True):
        fb = b[b["family"] == fam]
        order = fb.groupby("bucket")["order"].first().sort_values()
        pos = {name: i for i, name in enumerate(order.index)}
        sizes = fb.groupby("size")["params"].mean().sort_values().index
        colors = plt.cm.viridis(np.linspace(0, 0.9, max(len(sizes), 1)))
        for color, size in zip(colors, sizes, strict=True):
            for arm, ls in (("dense", "-"), ("leviathan", "--")):
                g = fb[(fb["size"] == size) & (fb["arm"] == arm)]
                if g.empty:
                    continue
                g = g.groupby("bucket")["loss"].mean()
                x = [pos[k] for k in g.index]
                idx = np.argsort(x)
                ax.plot(np.array(x)[idx], g.to_numpy()[idx], ls=ls, marker="o", ms=3,
                        color=color, label=f"{size} {arm}")
        ax.set_xticks(range(len(order)), list(order.index), rotation=45, ha="right", fontsize=7)
        ax.set_xlabel("token-frequency bucket (rare -> frequent)")
        ax.set_ylabel("validation loss")
        ax.set_title(f"{fam}: loss by token frequency")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
