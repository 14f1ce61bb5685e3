"""`python -m analysis.coverage --grid isoparametric --world growing [--ladders 200]`: do the
printed intervals hold in a world the analysis does not assume?

SCIENCE.md §7: a coverage test run inside the power model's own world cannot fail. This command
plans a grid as the sweep would (its seeds, LR variants and sizes), draws `--ladders` simulated
sweeps of it from a stated world (analysis.power.worlds.plan_runs: noise that grows or shrinks
with size, a LEV advantage that changes with size, LR optima that drift per arm, seeds shared by
Leviathan and its control), runs each through the real analysis (the runs.csv reader and
`analyse`, what `make fit-scaling --csv` runs, without writing its files) and prints, per
headline number, how often its printed 95% interval covers the truth, the bias of its estimate
and its median half-width; and how often the homogeneity test rejects, and how often the pooled
LEV/control is the headline. `--out` writes the same as JSON (the record quoted in notes).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

# a world: the PowerModel's keys it sets (noise at the smallest size, slopes in log N); the
# slopes for "5x over the ladder" are ln 5 / ln(421M / 60M) on the v1 pairs
FIVE = math.log(5) / math.log(421e6 / 60e6)
WORLDS = {
    "constant": {"noise": {"all": 0.01}},
    "growing": {"noise": {"all": 0.003}, "noise_slope": FIVE},
    "shrinking": {"noise": {"all": 0.015}, "noise_slope": -FIVE},
    "falling-effect": {"noise": {"all": 0.01}, "effect": 1.3,
                       "effect_slope": math.log(1 / 1.3) / math.log(421e6 / 60e6)},
    "shared-seeds": {"noise": {"all": 0.01}, "seed_corr": 0.7},
    "lr-drift": {"noise": {"all": 0.01}, "lr_drift": {"leviathan": 1.0, "factorized": -0.5}},
}


def plan_frame(grid: str, overrides: list[str]) -> pd.DataFrame:
    """The grid's plan (what `python -m leviathan.sweep +grid=<grid> sweep.dry_run=true`
    plans), without the power analysis; planned once per grid and overrides."""
    return _plan_frame(grid, tuple(overrides)).copy()


@functools.cache
def _plan_frame(grid: str, overrides: tuple[str, ...]) -> pd.DataFrame:
    from leviathan.config import compose
    from leviathan.sweep.plan import make_plan

    args = [f"+grid={grid}", "grid.power.enabled=false", *overrides]
    with tempfile.TemporaryDirectory() as tmp:
        return make_plan(compose("sweep", [*args, f"paths.root_dir={tmp}"]), args,
                         Path(tmp)).frame()


def truths(frame: pd.DataFrame, model) -> dict:
    """(quantity, arm, size) -> the true value of each headline number in the params basis."""
    from analysis.power.model import CONTROL_ARMS
    from analysis.power.worlds import worth

    main = frame[frame["branch_of"].isna()]
    dense_n = main[main["arm"] == "dense"].groupby("size")["params_total"].mean()
    paired = main.loc[main["arm"] != "dense", "size"].unique()
    n_min = float(dense_n[paired].min())
    controls = set(main["arm"]) & set(CONTROL_ARMS)
    out = {}
    for (arm, size), g in main[main["arm"] != "dense"].groupby(["arm", "size"]):
        rel = float(dense_n[size] / n_min)
        out[("multiplier", arm, size)] = worth(arm, model, rel, controls) * dense_n[size] / float(
            g["params_total"].mean())
        if arm in controls:
            out[("lev_over_control", arm, size)] = model.ratio(rel)
    for control in controls:
        logs = [math.log(v) for (q, a, _), v in out.items()
                if q == "lev_over_control" and a == control]
        out[("lev_over_control_pooled", control, "pooled")] = math.exp(np.mean(logs))
        out[("slope", control, "trend")] = model.effect_slope
    return out


def read_ladder(res, fam: str = "default") -> dict:
    """(quantity, arm, size) -> (estimate, lo, hi) from one analysed ladder, params basis; and
    the homogeneity verdicts."""
    r = res.families[fam]
    out = {}
    rows = r.matching.rows
    for x in rows[(rows["basis"] == "params") & (rows["reason"] == "")].itertuples():
        out[("multiplier", x.arm, x.size)] = (x.multiplier, x.multiplier_lo, x.multiplier_hi)
    c = r.controls[r.controls["basis"] == "params"]
    for x in c.itertuples():
        out[("lev_over_control", x.control, x.size)] = (x.ratio, x.ratio_lo, x.ratio_hi)
    p = r.pooled[r.pooled["basis"] == "params"]
    for x in p.itertuples():
        out[("lev_over_control_pooled", x.control, "pooled")] = (x.ratio, x.ratio_lo, x.ratio_hi)
        out[("homogeneous", x.control, "pooled")] = (float(x.homogeneous), np.nan, np.nan)
    t = r.trends[(r.trends["basis"] == "params") & (r.trends["quantity"] == "lev_over_control")]
    for x in t.itertuples():
        out[("slope", x.arm, "trend")] = (x.slope, x.slope_lo, x.slope_hi)
    return out


def run(grid: str, world: str, ladders: int, bootstrap: int, seed: int,
        overrides: list[str], fit_overrides: list[str]) -> tuple[pd.DataFrame, dict]:
    """The coverage table of one world (module docstring) and the counts behind it."""
    from tqdm import tqdm

    from analysis.config import FitConfig
    from analysis.inputs.csv_input import load_csv
    from analysis.power.model import PowerModel
    from analysis.power.worlds import plan_runs
    from analysis.scaling import analyse

    frame = plan_frame(grid, overrides)
    model = PowerModel(**WORLDS[world])
    truth = truths(frame, model)
    cfg = FitConfig(bootstrap=bootstrap, **dict(o.split("=", 1) for o in fit_overrides))
    rng = np.random.default_rng(seed)
    got: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "runs.csv"
        for i in tqdm(range(ladders), desc=f"{world}", unit="ladder", file=sys.stderr):
            plan_runs(frame, model, rng).to_csv(csv, index=False)
            res = analyse(load_csv(csv), FitConfig(**{**cfg.__dict__, "seed": seed + i}))
            for key, v in read_ladder(res).items():
                got.setdefault(key, []).append(v)
    rows = []
    for key in sorted(got, key=lambda k: (k[0], k[1], _size_order(frame, k[2]))):
        v = np.array(got[key], float)
        q, arm, size = key
        if q == "homogeneous":
            rows.append({"number": q, "arm": arm, "size": size, "truth": math.nan,
                         "coverage": math.nan, "bias": math.nan, "half_width": math.nan,
                         "rate": float(np.mean(v[:, 0])), "ladders": len(v)})
            continue
        t = truth.get(key, math.nan)
        ok = np.isfinite(v[:, 1]) & np.isfinite(v[:, 2])
        cover = (v[ok, 1] <= t) & (t <= v[ok, 2])
        if q == "slope":
            bias = float(np.median(v[:, 0]) - t)
            half = float(np.median((v[ok, 2] - v[ok, 1]) / 2))
        else:
            bias = float(np.median(v[:, 0]) / t - 1)
            half = float(np.median(np.sqrt(v[ok, 2] / v[ok, 1])) - 1)
        rows.append({"number": q, "arm": arm, "size": size, "truth": t,
                     "coverage": float(cover.mean()) if ok.any() else math.nan, "bias": bias,
                     "half_width": half, "rate": math.nan, "ladders": int(ok.sum())})
    return pd.DataFrame(rows), {"world": world, **WORLDS[world]}


def _size_order(frame: pd.DataFrame, size: str) -> float:
    n = frame.loc[frame["size"] == size, "params_total"]
    return float(n.mean()) if len(n) else math.inf


def table_md(table: pd.DataFrame, world: dict, ladders: int) -> str:
    out = [f"World {world['world']}: " + ", ".join(f"{k} {v}" for k, v in world.items()
                                                  if k != "world") + f"; {ladders} ladders", "",
           "| number | arm | size | truth | coverage | bias | median ± |",
           "|---|---|---|---|---|---|---|"]
    for r in table.itertuples():
        if r.number == "homogeneous":
            out.append(f"| pooled is the headline (homogeneity not rejected) | {r.arm} | | | "
                       f"{r.rate:.0%} of ladders | | |")
            continue
        bias = f"{r.bias:+.4f}" if r.number == "slope" else f"{r.bias:+.1%}"
        half = f"{r.half_width:.4f}" if r.number == "slope" else f"{r.half_width:.1%}"
        out.append(f"| {r.number} | {r.arm} | {r.size} | {r.truth:.4g} | {r.coverage:.0%} | "
                   f"{bias} | {half} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.coverage",
                                description=__doc__.splitlines()[0])
    p.add_argument("--grid", default="isoparametric", help="the grid whose design is simulated")
    p.add_argument("--world", action="append", choices=sorted(WORLDS),
                   help="a world (repeat for several; default all)")
    p.add_argument("--ladders", type=int, default=200)
    p.add_argument("--bootstrap", type=int, default=200, help="fit.bootstrap of each analysis")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="a sweep override of the planned grid (e.g. grid.seeds=[0])")
    p.add_argument("--fit", action="append", default=[], metavar="KEY=VALUE",
                   help="a fit setting of every analysis (e.g. noise_model=pooled)")
    p.add_argument("--out", type=Path, help="write the tables as JSON")
    args = p.parse_args(argv)
    record = {"grid": args.grid, "ladders": args.ladders, "bootstrap": args.bootstrap,
              "overrides": args.override, "fit": args.fit, "worlds": []}
    for world in args.world or sorted(WORLDS):
        t0 = time.time()
        table, spec = run(args.grid, world, args.ladders, args.bootstrap, args.seed,
                          args.override, args.fit)
        print(table_md(table, spec, args.ladders) + f"\n({time.time() - t0:.0f} s)\n",
              flush=True)
        record["worlds"].append({"spec": spec, "rows": table.to_dict(orient="records"),
                                 "seconds": round(time.time() - t0, 1)})
        if args.out:
            args.out.write_text(json.dumps(record, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
