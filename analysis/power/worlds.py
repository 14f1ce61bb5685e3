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
