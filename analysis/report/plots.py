"""scaling.png, multiplier_vs_tokens.png, rare_tokens.png, data_scaling.png (matplotlib, Agg
backend). Every effective size or token count read beyond the Dense points is marked † with the
factor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.laws.bootstrap import percentile_interval
from analysis.readings.matchings import BASES, COLUMN, LABEL
from analysis.scaling import FamilyResult

DENSE = "#1f77b4"
ARM_STYLE = {"leviathan": ("#d62728", "s"), "factorized": ("#2ca02c", "^"),
             "dense_untied": ("#9467bd", "D"), "factorized_wide": ("#17becf", "v"),
             "lev_codebooks": ("#ff7f0e", "P")}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _grid(plt, n_rows: int, n_cols: int, width: float = 6.0, height: float = 4.5):
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(width * n_cols, height * n_rows),
                             squeeze=False)
    return fig, axes


def _save(fig, plt, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _label(ax, xlabel: str, ylabel: str, heading: str, *, log: bool = True, **legend) -> None:
    """A panel's labels and heading, its x axis on a log scale (grid at every tick) unless
    `log` is false, and its legend (`legend`: the legend's keywords)."""
    if log:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(heading)
    ax.grid(True, which="both" if log else "major", alpha=0.3)
    ax.legend(**legend)


def _arrows(ax, x, x_eff, rows: pd.DataFrame, multiplier, color: str, far: str) -> None:
    """An arrow at each row's loss from its own x to the Dense-equivalent x_eff, labelled with
    the multiplier; dashed and marked † with the factor (format `far`) where it is extrapolated."""
    for x0, x1, m, (_, row) in zip(x, x_eff, multiplier, rows.iterrows(), strict=True):
        if not np.isfinite(x1):
            continue
        ax.annotate("", xy=(x1, row["loss"]), xytext=(x0, row["loss"]),
                    arrowprops={"arrowstyle": "->", "color": color, "lw": 1.0,
                                "ls": "--" if row["extrapolated"] else "-"})
        mark = f" † {row['extrapolation']:{far}}× out" if row["extrapolated"] else ""
        ax.text(x1 * 1.03, row["loss"], f"{m:.2f}×{mark}", color=color, fontsize=7,
                va="center")


def _panel(ax, basis: str, fam: str, r: FamilyResult, dense: pd.DataFrame, level: float):
    """One basis: Dense points, fit and band; every (arm, size) -> its Dense-equivalent."""
    m = r.matching
    fit, rows = m.fits[basis], m.rows[m.rows["basis"] == basis]
    dx = dense[COLUMN[basis]].to_numpy(float)
    xs = np.concatenate([dx, rows["x"], rows["n_eff"].dropna()])
    xs = xs[np.isfinite(xs) & (xs > 0)]
    grid = np.geomspace(xs.min() / 1.3, xs.max() * 1.3, 200)
    s = m.samples.get(basis)
    if s is not None and len(s):
        with np.errstate(all="ignore"):
            curves = s[:, 0:1] * grid[None, :] ** (-s[:, 1:2]) + fit.b
        lo, hi = percentile_interval(curves, level)
        ax.fill_between(grid, lo, hi, color=DENSE, alpha=0.2, lw=0,
                        label=f"Dense fit, {level:.0%} band")
    ax.plot(grid, fit.predict(grid), color=DENSE, lw=1.5,
            label=f"L = {fit.A:.3g}·X^-{fit.alpha:.3f} + {fit.b:.3g}")
    ax.scatter(dx, dense["loss"], color=DENSE, zorder=3, label="Dense")
    lo_x, hi_x = np.nanmin(dx), np.nanmax(dx)
    for edge in (ax.axvspan(grid[0], lo_x, color="0.85", alpha=0.5, lw=0),
                 ax.axvspan(hi_x, grid[-1], color="0.85", alpha=0.5, lw=0)):
        edge.set_label("_nolegend_")
    ax.text(hi_x * 1.05, ax.get_ylim()[1], "extrapolated", fontsize=7, va="top", color="0.4")
    for arm, g in rows.groupby("arm", sort=False):
        color, marker = ARM_STYLE.get(arm, ("k", "o"))
        ax.scatter(g["x"], g["loss"], color=color, marker=marker, zorder=3, label=arm)
        _arrows(ax, g["x"], g["n_eff"], g, g["multiplier"], color, ".2g")
    _label(ax, LABEL[basis] + (" (FLOPs)" if basis == "compute" else ""), "validation loss",
           f"{fam}: by {LABEL[basis]}", fontsize=7, loc="lower left")


def plot_scaling(path: Path, results: dict[str, FamilyResult], table: pd.DataFrame,
                 level: float = 0.95) -> Path | None:
    """One row per family, one panel per matching; arrows to each arm's Dense-equivalent,
    dashed and marked † where it lies outside the Dense points (grey)."""
    fams = {f: r for f, r in results.items() if r.matching is not None and r.matching.fits}
    if not fams:
        return None
    plt = _pyplot()
    n_cols = max(len(r.matching.fits) for r in fams.values())
    fig, axes = _grid(plt, len(fams), n_cols)
    for i, (fam, r) in enumerate(fams.items()):
        usable = table[(table["family"] == fam) & (table["reason"] == "")]
        dense = usable[usable["arm"] == "dense"]
        bases = [b for b in BASES if b in r.matching.fits]
        for j in range(n_cols):
            if j < len(bases):
                _panel(axes[i][j], bases[j], fam, r, dense, level)
            else:
                axes[i][j].axis("off")
    return _save(fig, plt, path)


def plot_multiplier_vs_tokens(path: Path, results: dict[str, FamilyResult]) -> Path | None:
    fams = {f: r for f, r in results.items() if r.trajectory is not None}
    if not fams:
        return None
    plt = _pyplot()
    fig, axes = _grid(plt, 1, len(fams))
    for ax, (fam, r) in zip(axes[0], fams.items(), strict=True):
        for lineage, g in r.trajectory.groupby("lineage", sort=False):
            g = g.sort_values("tokens")
            line, = ax.plot(g["tokens"], g["multiplier"], marker="o", ms=3,
                            label=str(g["size"].iloc[0]) if lineage == g["run_id"].iloc[0]
                            else lineage)
            out = g[g["extrapolated"].astype(bool)]  # N_eff beyond the Dense sizes at t
            ax.scatter(out["tokens"], out["multiplier"], s=60, facecolors="none",
                       edgecolors=line.get_color(), zorder=3)
            for row in out.itertuples(index=False):
                ax.annotate(f"†{row.extrapolation:.2g}×", (row.tokens, row.multiplier),
                            xytext=(3, 4), textcoords="offset points", fontsize=6,
                            color=line.get_color())
        if r.trajectory["extrapolated"].astype(bool).any():
            ax.scatter([], [], s=60, facecolors="none", edgecolors="k",
                       label="† N_eff outside the Dense sizes (factor)")
        ax.axhline(1.0, color="grey", lw=0.8, ls="--")
        _label(ax, "tokens seen", "effective-size multiplier N_eff / N",
               f"{fam}: multiplier during training", fontsize=8, title="Leviathan")
    return _save(fig, plt, path)


def plot_rare_tokens(path: Path, results: dict[str, FamilyResult]) -> Path | None:
    """Per family and bucket scheme (quantile, count): the arm/Dense perplexity ratio in each
    token-frequency bucket (rare -> frequent) with its seed interval, one line per size
    (Leviathan solid, controls dashed)."""
    panels = [(f, s, r.bucket_ratios[r.bucket_ratios["scheme"] == s])
              for f, r in results.items() if r.bucket_ratios is not None
              for s in ("quantile", "count") if (r.bucket_ratios["scheme"] == s).any()]
    if not panels:
        return None
    plt = _pyplot()
    fig, axes = _grid(plt, 1, len(panels))
    for ax, (fam, scheme, b) in zip(axes[0], panels, strict=True):
        order = b.groupby("bucket")["order"].first().sort_values()
        pos = {name: i for i, name in enumerate(order.index)}
        sizes = list(dict.fromkeys(b["size"]))
        colors = plt.cm.viridis(np.linspace(0, 0.9, max(len(sizes), 1)))
        for color, size in zip(colors, sizes, strict=True):
            for arm, g in b[b["size"] == size].groupby("arm", sort=False):
                g = g.sort_values("order")
                x = [pos[k] for k in g["bucket"]]
                ax.plot(x, g["ppl_ratio"], marker="o", ms=3, color=color,
                        ls="-" if arm == "leviathan" else "--", label=f"{size} {arm}")
                if np.isfinite(g["ppl_ratio_lo"]).any():
                    ax.fill_between(x, g["ppl_ratio_lo"], g["ppl_ratio_hi"], color=color,
                                    alpha=0.15, lw=0)
        ax.axhline(1.0, color="grey", lw=0.8, ls=":")
        ax.set_xticks(range(len(order)), list(order.index), rotation=45, ha="right", fontsize=7)
        _label(ax, f"token-frequency bucket, by {scheme} (rare -> frequent)",
               "perplexity ratio arm / Dense", f"{fam}: where the gain sits", log=False,
               fontsize=7, ncol=2)
    return _save(fig, plt, path)


def _data_curve(r: FamilyResult, size: str, law: str, n: float):
    """The Dense L(D) a size's data multipliers were read from: tokens -> loss, or None."""
    if law.startswith("joint") and r.joint is not None:
        return lambda d: r.joint.predict(n, d)
    f = next((f for f in r.data_fits if f["arm"] == "dense" and f["size"] == size), None)
    if f is None:
        return None
    return lambda d: f["E_N"] + f["B"] * np.asarray(d, float) ** -f["beta"]


def _data_panel(ax, fam: str, size: str, r: FamilyResult, dense: pd.DataFrame,
                rows: pd.DataFrame):
    """One size: Dense points and the L(D) read, each run's arrow to its D_eff (dashed, † and
    the factor where it lies beyond the Dense budgets, shaded)."""
    dx = dense["tokens"].to_numpy(float)
    xs = np.concatenate([dx, rows["tokens"], rows["d_eff"].dropna()])
    grid = np.geomspace(xs.min() / 1.3, xs.max() * 1.3, 200)
    curve = _data_curve(r, size, str(rows["law"].iloc[0]), float(rows["dense_params"].iloc[0]))
    if curve is not None:
        ax.plot(grid, curve(grid), color=DENSE, lw=1.5, label=f"Dense {rows['law'].iloc[0]}")
    ax.scatter(dx, dense["loss"], color=DENSE, zorder=3, label="Dense")
    for edge in (ax.axvspan(grid[0], dx.min(), color="0.85", alpha=0.5, lw=0),
                 ax.axvspan(dx.max(), grid[-1], color="0.85", alpha=0.5, lw=0)):
        edge.set_label("_nolegend_")
    for arm, g in rows.groupby("arm", sort=False):
        color, marker = ARM_STYLE.get(arm, ("k", "o"))
        ax.scatter(g["tokens"], g["loss"], color=color, marker=marker, zorder=3, label=arm)
        _arrows(ax, g["tokens"], g["d_eff"], g, g["data_multiplier"], color, ".2f")
    _label(ax, "tokens", "validation loss",
           f"{fam} {size}: D_eff / D (grey: beyond the Dense budgets)", fontsize=7,
           loc="upper right")


def plot_data_scaling(path: Path, results: dict[str, FamilyResult],
                      table: pd.DataFrame) -> Path | None:
    """One row per family, one panel per size with data multipliers: the Dense L(D) they were
    read from and an arrow from each run to its D_eff."""
    fams = {f: r for f, r in results.items()
            if r.data_multipliers is not None and r.data_multipliers["d_eff"].notna().any()}
    if not fams:
        return None
    plt = _pyplot()
    n_cols = max(r.data_multipliers["size"].nunique() for r in fams.values())
    fig, axes = _grid(plt, len(fams), n_cols)
    for i, (fam, r) in enumerate(fams.items()):
        usable = table[(table["family"] == fam) & (table["reason"] == "")]
        sizes = list(dict.fromkeys(r.data_multipliers["size"]))
        for j in range(n_cols):
            if j >= len(sizes):
                axes[i][j].axis("off")
                continue
            rows = r.data_multipliers[r.data_multipliers["size"] == sizes[j]]
            dense = usable[(usable["arm"] == "dense") & (usable["size"] == sizes[j])]
            _data_panel(axes[i][j], fam, sizes[j], r, dense, rows)
    return _save(fig, plt, path)
