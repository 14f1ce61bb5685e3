"""Toy worlds: synthetic runs on the real v1 ladder shapes, where we decide what LEV is worth.

Each run's total and body parameters and FLOPs per token come from leviathan.models' exact
accounting (Dense and isoparametric Leviathan from conf/model/v1; the factorized control on
Leviathan's backbone with the rank whose V_pad x r + r x D table is closest to LEV's
parameters). The loss depends on one quantity X of the run, the world's `basis`: total
parameters, body parameters or training FLOPs, L = b + A·(w_arm·X)^-alpha, times log-normal
seed noise. `worth` w_arm is what each arm's X is worth (Dense 1): in the `body-only` world
every arm is worth its body and nothing else, so embeddings and LEV buy nothing; in `lev-1.3`
LEV makes the body worth 1.3x the control's; in `controls` the two unmatched controls of the
isoparametric grid join (factorized_wide: a table of LEV's rank, model.factorized.rank=span;
lev_codebooks: LEV without its splines), Leviathan worth 1.3x factorized_wide and 1.3/1.15x
lev_codebooks.

    python -m analysis.toyworld body-only runs.csv      # then: python -m analysis.fit_scaling
    python -m analysis.toyworld lev-1.3 runs.csv --seeds 3 --noise 0.005   --csv runs.csv

More knobs (keywords of `toy_world`): `b` (the asymptote; the fit assumes 1.69), `data` (a term
B·D^-beta of the tokens trained, added to the loss: a world where tokens matter), `tokens_per`
(each run's budget: 20x its size's Dense total parameters, as the real grids, or 20x its own
body) and `ladder="v2"`: the decoupled family (Dense tied, Leviathan untied, the `dense_untied`
control; conf/model/v2, all three on one backbone). The `lev-equals-untying` world is v2 where
Leviathan is worth exactly what untying the head is worth.

`data-2x` is a data-scaling world (the `data_scaling` grid's budgets, 5 N ... 100 N tokens at
v1/109M): L(N, D) = b + A·N^-alpha + B_D·D^-beta, Leviathan's tokens worth DATA_WORTH = 2x
Dense's at every budget (its loss is Dense's at twice the tokens), so at one size the loss
levels off at b + A·N^-alpha, not at b (`data_world`).

Sizes: the v1 ladder without 109M (8 layers of width 256: a smaller body than 60M's 40 layers
of 128, so in a body world it would sit above 60M) and with one Dense-only rung above 421M
(width 1024, 28 layers, the v1 shape rule), as issue 11 asks of the real ladder.
"""

from __future__ import annotations

import argparse
import sys
from functools import cache

import numpy as np
import pandas as pd

SIZES = ("60M", "164M", "231M", "296M", "421M")
EXTRA_DENSE = {"765M": dict(d_model=1024, n_layers=28, n_heads=16, ffn_hidden=2752)}
ALPHA, B, TOP_LOSS = 0.34, 1.69, 3.5  # exponent, asymptote, loss of the smallest Dense model
SEQ_LEN = 512
V2_SIZES = ("200M", "400M", "700M", "1.2B")
V2_ARMS = {"dense": dict(arm="dense", head="tied"),  # conf/grid/decoupled.yaml
           "leviathan": dict(arm="leviathan", head="untied", depth_rule="fixed"),
           "dense_untied": dict(arm="dense", head="untied")}
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
DATA_BUDGETS = (5.0, 10.0, 20.0, 50.0, 100.0)  # tokens per Dense parameter (conf/grid/data_scaling)
DATA_WORLDS = {"data-2x": 2.0}  # name -> what Leviathan's tokens are worth (Dense 1)


@cache
def shapes(tokens_per_param: float = 20.0) -> pd.DataFrame:
    """One row per (size, arm): params, body_params, flops_per_token, tokens, flops."""
    from leviathan.config import ladder_config
    from leviathan.models.accounting import (
        count_params,
        flops_per_token,
        lev_macs_per_id,
        lev_params,
        resolve_model_config,
    )
    from leviathan.models.config import ModelConfig

    rows = []
    configs = [(s, ladder_config("v1", s)) for s in SIZES]
    configs += [(s, ModelConfig(ladder="custom", size=s, head="untied", **kw))
                for s, kw in EXTRA_DENSE.items()]
    for size, dense in configs:
        tokens = tokens_per_param * count_params(dense).total
        arms = {"dense": (count_params(dense), flops_per_token(dense, SEQ_LEN))}
        if size in SIZES:
            lev = resolve_model_config(ladder_config("v1", size, arm="leviathan"))
            c = count_params(lev)
            arms["leviathan"] = (c, flops_per_token(lev, SEQ_LEN))
            per_rank = lev.padded_vocab + lev.d_model  # factorized: V x r, r x D
            r = min((max(1, lev_params(lev) // per_rank), lev_params(lev) // per_rank + 1),
                    key=lambda k: abs(k * per_rank - lev_params(lev)))
            fpt = flops_per_token(lev, SEQ_LEN) + 6.0 * (r * lev.d_model - lev_macs_per_id(lev))
            arms["factorized"] = (c.__class__(total=r * per_rank + c.head + c.body,
                                              input=r * per_rank, head=c.head, body=c.body), fpt)
            for arm, kw in (("factorized_wide", dict(arm="factorized",
                                                     factorized={"rank": "span"})),
                            ("lev_codebooks", dict(arm="leviathan", lev={"splines": False}))):
                ctl = resolve_model_config(ladder_config("v1", size, **kw))
                arms[arm] = (count_params(ctl), flops_per_token(ctl, SEQ_LEN))
        for arm, (cnt, fpt) in arms.items():
            rows.append({"size": size, "arm": arm, "params": float(cnt.total),
                         "body_params": float(cnt.body), "flops_per_token": fpt,
                         "tokens": tokens, "flops": fpt * tokens})
    return pd.DataFrame(rows)


@cache
def decoupled_shapes(tokens_per_param: float = 20.0) -> pd.DataFrame:
    """shapes() for the v2 decoupled family: Dense tied, Leviathan untied, dense_untied."""
    from leviathan.config import ladder_config
    from leviathan.models.accounting import count_params, flops_per_token, resolve_model_config

    rows = []
    for size in V2_SIZES:
        tokens = tokens_per_param * count_params(ladder_config("v2", size)).total
        for arm, kw in V2_ARMS.items():
            c = resolve_model_config(ladder_config("v2", size, **kw))
            n, fpt = count_params(c), flops_per_token(c, SEQ_LEN)
            rows.append({"size": size, "arm": arm, "params": float(n.total),
                         "body_params": float(n.body), "flops_per_token": fpt,
                         "tokens": tokens, "flops": fpt * tokens})
    return pd.DataFrame(rows)


def toy_world(basis: str = "body", worth: dict | None = None, *, seeds: int = 3,
              noise: float = 0.005, seed: int = 0, alpha: float = ALPHA,
              arms: tuple[str, ...] | None = None, b: float = B,
              data: tuple[float, float] | None = None, tokens_per: str = "size",
              ladder: str = "v1") -> pd.DataFrame:
    """A runs.csv table (analysis/inputs/csv_input.py columns) of one toy world.

    L = b + A·(w_arm·X)^-alpha [+ B_D·D^-beta with data = (B_D, beta)]; tokens_per: "size"
    (every arm of a size trains 20x that size's Dense total parameters, as the real grids) or
    "body" (each run 20x its own body parameters); arms: those of the ladder (None: all, the
    WIDE_CONTROLS only where `worth` names them)."""
    worth = {"dense": 1.0, **(worth or {})}
    s = (decoupled_shapes() if ladder == "v2" else shapes()).copy()
    if tokens_per == "body":
        s["tokens"] = 20.0 * s["body_params"]
        s["flops"] = s["flops_per_token"] * s["tokens"]
    arms = arms or [a for a in s["arm"].unique() if a not in WIDE_CONTROLS or a in worth]
    s = s[s["arm"].isin(arms)].reset_index(drop=True)
    x = s[BASIS_COLUMN[basis]].to_numpy(float) * s["arm"].map(worth).fillna(1.0).to_numpy()
    x_min = s.loc[s["arm"] == "dense", BASIS_COLUMN[basis]].min()
    scale = (TOP_LOSS - b) * x_min ** alpha  # A, so that the smallest Dense model has TOP_LOSS
    clean = b + scale * x ** -alpha
    if data is not None:
        clean = clean + data[0] * s["tokens"].to_numpy(float) ** -data[1]
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(seeds):
        loss = clean * np.exp(rng.normal(0.0, noise, clean.size)) if noise else clean
        rows.append(s.assign(seed=k, loss=loss, pair=s["size"] + f"-s{k}"))
    out = pd.concat(rows, ignore_index=True)
    out.insert(0, "run", [f"{a}-{z}-s{k}" for a, z, k in zip(out["arm"], out["size"],
                                                             out["seed"], strict=True)])
    return out[["run", "arm", "size", "pair", "seed", "params", "body_params", "flops", "tokens",
                "loss"]]


def data_world(worth: float = 2.0, *, sizes: tuple[str, ...] = ("109M",),
               budgets: tuple[float, ...] = DATA_BUDGETS, seeds: int = 1, noise: float = 0.0,
               seed: int = 0, alpha: float = ALPHA, beta: float = DATA_BETA) -> pd.DataFrame:
    """A runs.csv table of a data-scaling world: Dense and Leviathan (isoparametric, the real
    v1 counts) at each size and budget (x Dense's parameters), L = b + A·N^-alpha +
    B_D·(w·D)^-beta with N the Dense count of the size (Leviathan matches it) and w = `worth`
    for Leviathan, 1 for Dense; log-normal seed noise."""
    from leviathan.config import ladder_config
    from leviathan.models.accounting import count_params, resolve_model_config

    scale = (TOP_LOSS - B) * float(shapes()["params"].min()) ** alpha  # toy_world's A
    rng = np.random.default_rng(seed)
    rows = []
    for size in sizes:
        dense = ladder_config("v1", size)
        n = float(count_params(dense).total)
        counts = {"dense": count_params(dense),
                  "leviathan": count_params(resolve_model_config(dense.replace(arm="leviathan")))}
        for k, per in ((k, p) for k in range(seeds) for p in budgets):
            d = per * n
            for arm, w in (("dense", 1.0), ("leviathan", worth)):
                loss = B + scale * n ** -alpha + DATA_B * (w * d) ** -beta
                if noise:
                    loss *= float(np.exp(rng.normal(0.0, noise)))
                rows.append({"run": f"{arm}-{size}-{per:g}N-s{k}", "arm": arm, "size": size,
                             "pair": f"{size}-{per:g}N-s{k}", "seed": k,
                             "params": float(counts[arm].total),
                             "body_params": float(counts[arm].body), "tokens": d, "loss": loss})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.toyworld", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("world", choices=sorted(WORLDS) + sorted(DATA_WORLDS))
    p.add_argument("out", help="runs.csv to write")
    p.add_argument("--seeds", type=int, default=3, help="seeds per arm and size")
    p.add_argument("--noise", type=float, default=0.005, help="seed noise, fraction of loss")
    p.add_argument("--seed", type=int, default=0, help="RNG seed")
    args = p.parse_args(argv)
    from leviathan.logs import setup_logging

    setup_logging()
    if args.world in DATA_WORLDS:
        df = data_world(DATA_WORLDS[args.world], seeds=args.seeds, noise=args.noise,
                        seed=args.seed)
        df.to_csv(args.out, index=False)
        print(f"wrote {len(df)} runs of the {args.world!r} world to {args.out} (Leviathan's "
              f"tokens worth {DATA_WORLDS[args.world]:g}x; noise {args.noise:g} x {args.seeds} "
              "seeds)")
        return 0
    basis, worth = WORLDS[args.world]
    df = toy_world(basis, worth, seeds=args.seeds, noise=args.noise, seed=args.seed,
                   ladder=WORLD_LADDER.get(args.world, "v1"))
    df.to_csv(args.out, index=False)
    print(f"wrote {len(df)} runs of the {args.world!r} world to {args.out} "
          f"(loss depends on {basis}; worth {worth}; noise {args.noise:g} x {args.seeds} seeds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

