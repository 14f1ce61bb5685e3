"""Toy worlds: synthetic runs on the real ladders, where we decide what LEV is worth (the runs
themselves are drawn by the one simulator, analysis.power.simulate: `toy_world`, `data_world`).

A ladder is a family's grid (LADDER_GRID: conf/grid/isoparametric_controls.yaml for v1,
conf/grid/decoupled.yaml for v2): its paired sizes and its Dense-only rungs, every arm of the grid
with the grid's own overrides, each run's total and body parameters and FLOPs per token from
leviathan.models' exact accounting of the size's conf/model file (the factorized control on
Leviathan's backbone at LEV's parameter count; factorized_wide, a table of LEV's rank,
model.factorized.rank=span; lev_codebooks, LEV without its splines). A paired size whose Dense body
is smaller than a smaller size's (v1/109M: 8 layers of width 256 against 60M's 40 of 128) is left
out: in a body world it would sit above it.

The loss depends on one quantity X of the run, the world's `basis`: total parameters, body
parameters or training FLOPs, L = b + A·(w_arm·X)^-alpha (the simulator's PowerModel), times
log-normal seed noise. `worth` w_arm is what each arm's X is worth (Dense 1): in the `body-only`
world every arm is worth its body and nothing else, so embeddings and LEV buy nothing; in
`lev-1.3` LEV makes the body worth 1.3x the control's; in `controls` the two unmatched controls of
the isoparametric grid join, Leviathan worth 1.3x factorized_wide and 1.3/1.15x lev_codebooks; the
`lev-equals-untying` world is v2 (Dense tied, Leviathan untied, the `dense_untied` control, all
three on one backbone) where Leviathan is worth exactly what untying the head is worth.

`data-2x` is a data-scaling world (the `data_scaling` grid's size and budgets, 5 N ... 100 N tokens
at v1/109M): L(N, D) = b + A·N^-alpha + B_D·D^-beta, Leviathan's tokens worth 2x Dense's at every
budget (its loss is Dense's at twice the tokens), so at one size the loss levels off at
b + A·N^-alpha, not at b.
"""

from __future__ import annotations

from functools import cache

import pandas as pd

SEQ_LEN = 512
LADDER_GRID = {"v1": "isoparametric_controls", "v2": "decoupled"}  # a ladder's family grid
DATA_GRID = "data_scaling"
WIDE_CONTROLS = ("factorized_wide", "lev_codebooks")  # in a world only where `worth` names them
WORLDS = {  # name -> (basis the loss depends on, what each arm's X is worth)
    "body-only": ("body", {"dense": 1.0, "leviathan": 1.0, "factorized": 1.0}),
    "lev-1.3": ("body", {"dense": 1.0, "leviathan": 1.3, "factorized": 1.0}),
    # every control of issue 24.6: the spline modes worth 1.3 / 1.15 beyond the codebooks, a
    # table of LEV's rank (45% more parameters) worth no more than the matched one
    "controls": ("body", {"dense": 1.0, "leviathan": 1.3, "factorized": 1.0,
                          "factorized_wide": 1.0, "lev_codebooks": 1.15}),
    "lev-equals-untying": ("body", {"dense": 1.0, "leviathan": 1.2, "dense_untied": 1.2}),
}
WORLD_LADDER = {"lev-equals-untying": "v2"}  # the rest: v1
BASIS_COLUMN = {"params": "params", "body": "body_params", "compute": "flops"}
DATA_B, DATA_BETA = 410.0, 0.30  # the data term B_D·D^-beta (Hoffmann et al.'s B, beta rounded)
DATA_WORLDS = {"data-2x": 2.0}  # name -> what Leviathan's tokens are worth (Dense 1)


def _grid(name: str):
    from leviathan.config import compose

    return compose("sweep", [f"+grid={name}"]).grid


def _counts(size: str, overrides) -> tuple:
    """(parameter counts, FLOPs per token) of one arm of a size (conf/model/<size>.yaml)."""
    from leviathan.config import compose
    from leviathan.models.accounting import count_params, flops_per_token, resolve_model_config
    from leviathan.models.config import to_model_config

    cfg = resolve_model_config(to_model_config(
        compose("train", [f"model={size}", *overrides]).model))
    return count_params(cfg), flops_per_token(cfg, SEQ_LEN)


@cache
def shapes(ladder: str = "v1", tokens_per_param: float = 20.0) -> pd.DataFrame:
    """One row per (size, arm) of the ladder's family grid (module docstring): params,
    body_params, flops_per_token, tokens (tokens_per_param x the size's Dense total), flops."""
    grid = _grid(LADDER_GRID[ladder])
    rows, body = [], 0.0
    for size in [*grid.sizes, *grid.dense_sizes]:
        arms = grid.arms if size in grid.sizes else {"dense": grid.arms["dense"]}
        counts = {arm: _counts(size, overrides) for arm, overrides in arms.items()}
        if size in grid.sizes and counts["dense"][0].body < body:
            continue  # a smaller body than a smaller size's
        body = max(body, counts["dense"][0].body)
        tokens = tokens_per_param * counts["dense"][0].total
        for arm, (cnt, fpt) in counts.items():
            rows.append({"size": size.rsplit("/", 1)[-1], "arm": arm,
                         "params": float(cnt.total), "body_params": float(cnt.body),
                         "flops_per_token": fpt, "tokens": tokens, "flops": fpt * tokens})
    return pd.DataFrame(rows)


@cache
def data_ladder() -> tuple[tuple[str, ...], tuple[float, ...]]:
    """(sizes, budgets in tokens per Dense parameter) of the data-scaling grid: its sizes, and
    its cooldowns as multiples of its tokens per parameter (5 N ... 100 N)."""
    grid = _grid(DATA_GRID)
    per = float(grid.tokens_per_param[0])
    return (tuple(s.rsplit("/", 1)[-1] for s in grid.sizes),
            tuple(per * float(c) for c in grid.cooldowns))


def worth(arm: str, model, rel: float, controls: set[str]) -> float:
    """What an arm's run is worth in the size's Dense parameters at N = rel x the smallest size:
    Dense 1, its control `control_worth`, Leviathan that times the true LEV over its control (or
    the effect over Dense without a control)."""
    from analysis.power.model import CONTROL_ARMS

    if arm == "dense":
        return 1.0
    control = next((a for a in CONTROL_ARMS if a in controls), None)
    if arm == "leviathan":
        return model.ratio(rel) * (model.control_worth if control else 1.0)
    return model.control_worth


def plan_runs(frame: pd.DataFrame, model, rng) -> pd.DataFrame:
    """One simulated sweep of a plan (plan.csv's columns: run, arm, size, pair, seed,
    params_total, params_body, flops, tokens, lr, lr_scale, branch_of) as runs.csv rows
    (analysis/inputs/csv_input.py), drawn from `model`'s truth (analysis.power.model): each
    run's clean loss from what its arm is worth against its size's Dense N (worth), times
    (1 + curvature (log2 of its LR multiple - its (arm, size)'s true optimum)^2), times (1 + sd z)
    with sd at its size (noise_slope) and z shared with Leviathan's run of the same seed at
    `seed_corr` for a control arm."""
    import numpy as np

    from analysis.power.model import CONTROL_ARMS

    f = frame[frame["branch_of"].isna()] if "branch_of" in frame else frame
    dense_n = f[f["arm"] == "dense"].groupby("size")["params_total"].mean()
    n_min = float(dense_n[f.loc[f["arm"] != "dense", "size"].unique()].min()
                  if (f["arm"] != "dense").any() else dense_n.min())
    span = np.log(dense_n.max() / n_min) or 1.0
    a = model.scale(n_min)
    controls = set(f["arm"]) & set(CONTROL_ARMS)
    opt = {key: model.lr_offset(key[0], float(np.log(dense_n[key[1]] / n_min) / span))
           + model.lr_spread * rng.standard_normal() for key in
           f.groupby(["arm", "size"]).groups}
    z = {}
    rows = []
    for r in f.itertuples(index=False):
        rel = float(dense_n[r.size] / n_min)
        clean = model.loss(worth(r.arm, model, rel, controls) * dense_n[r.size], a)
        u = np.log2(float(r.lr_scale)) - opt[(r.arm, r.size)]
        key = (r.size, r.seed, float(r.lr_scale))
        zi = rng.standard_normal()
        if r.arm in controls and ("leviathan",) + key in z:
            zi = model.seed_corr * z[("leviathan",) + key] + np.sqrt(
                1 - model.seed_corr ** 2) * zi
        z[(r.arm,) + key] = zi
        loss = clean * (1 + model.lr_curvature * u * u) * (1 + model.sd(r.arm, rel) * zi)
        rows.append({"run": r.run, "arm": r.arm, "size": r.size, "pair": r.pair,
                     "seed": int(r.seed), "params": r.params_total,
                     "body_params": r.params_body, "flops": r.flops, "tokens": r.tokens,
                     "lr": r.lr, "loss": loss})
    return pd.DataFrame(rows)
