"""Do the secondary readings' intervals hold? (issue 37.5) Simulated ladders through the real
analysis (the runs.csv reader and `analyse`, what `make fit-scaling --csv` runs, without writing
its files), three measurements:

- `data`: the one-seed data-scaling design (conf/grid/data_scaling.yaml's size and budgets,
  5 N ... 100 N; analysis.power.simulate.data_world: Leviathan's tokens worth 2x, log-normal
  run-to-run noise 0.5%), analysed with `+fit.seed_noise.all=0.005` and without a level: how
  often each budget's data-multiplier interval covers the true 2x, and the label it carries;
- `b`: the shipped isoparametric design (analysis.coverage.plan_frame) in the power model's own
  world (analysis.power.model.PowerModel defaults: 1% noise, LR optimum +-0.5 octave, b = 1.69)
  and in the same world with b = 1.80: how often the b check warns (its false alarms where 1.69
  is true; its power where 1.80 is), beside the power the check itself predicts (its line
  "a b of 1.80 would be seen in x% of ladders of this design", averaged over the ladders);
- `run`: from the same b = 1.69 ladders, how often the per-run table's multiplier interval of
  each Leviathan run covers its size's true multiplier.

    TIKTOKEN_CACHE_DIR=... python docs/coverage/secondary_readings.py --ladders 400 \\
        --out docs/coverage/2026-12-08-secondary-readings.json
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root


def _analyse(df: pd.DataFrame, cfg, csv: Path):
    from analysis.inputs.csv_input import load_csv
    from analysis.scaling import analyse

    df.to_csv(csv, index=False)
    return analyse(load_csv(csv), cfg).families["default"]


def data(ladders: int, bootstrap: int, level: float | None, seeds: int = 1) -> dict:
    """Per-budget coverage of the data multipliers on the one-seed data-scaling design."""
    from analysis.config import FitConfig
    from analysis.power.simulate import data_world

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(ladders):
            cfg = FitConfig(bootstrap=bootstrap, seed=i,
                            seed_noise={"all": level} if level else {})
            m = _analyse(data_world(2.0, seeds=seeds, noise=0.005, seed=10_000 + i), cfg,
                         Path(tmp) / "runs.csv").data_multipliers
            rows.append(m.assign(per=(m["tokens"] / m["dense_params"]).round().astype(int)))
    d = pd.concat(rows, ignore_index=True)
    d["covers"] = (d["data_multiplier_lo"] <= 2.0) & (2.0 <= d["data_multiplier_hi"])
    out = {}
    for per, g in d.groupby("per"):
        out[f"{per}N"] = {"coverage": float(g["covers"].mean()), "runs": len(g),
                          "median": float(g["data_multiplier"].median()),
                          "median_half_width": float(np.median(np.sqrt(
                              g["data_multiplier_hi"] / g["data_multiplier_lo"])) - 1),
                          "interval": sorted(set(g["interval"]))}
    return out


def ladders_b(ladders: int, bootstrap: int, b: float, seed: int) -> dict:
    """The b check and the per-run table on the shipped isoparametric design, true b = b."""
    from analysis.config import FitConfig
    from analysis.coverage import plan_frame, truths
    from analysis.power.model import PowerModel
    from analysis.power.worlds import plan_runs

    frame = plan_frame("isoparametric", [])
    model = PowerModel(b=b)
    truth = truths(frame, model)
    rng = np.random.default_rng(seed)
    checks, runs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(ladders):
            r = _analyse(plan_runs(frame, model, rng), FitConfig(bootstrap=bootstrap, seed=i),
                         Path(tmp) / "runs.csv")
            checks.append(r.b_check)
            m = r.multipliers[r.multipliers["reason"] == ""]
            t = m["size"].map(lambda s: truth[("multiplier", "leviathan", s)])
            runs.append(m.assign(truth=t, covers=(m["multiplier_lo"] <= t)
                                 & (t <= m["multiplier_hi"])))
    c = pd.DataFrame(checks)
    d = pd.concat(runs, ignore_index=True)
    main = frame[frame["branch_of"].isna()]
    out = {"true_b": b, "ladders": ladders,
           "design": {f"{a}|{s}": {"seeds": int(g["seed"].nunique()),
                                   "lrs": int(g["lr_scale"].nunique())}
                      for (a, s), g in main.groupby(["arm", "size"])},
           "b_check": {"warns": float(c["outside"].mean()),
                       "predicted_power_1.80": float(c["power"].mean()),
                       "b_interval_covers": float(((c["b_lo"] <= b) & (b <= c["b_hi"])).mean()),
                       "median_b": float(c["b"].median()),
                       "median_half_width": float(((c["b_hi"] - c["b_lo"]) / 2).median()),
                       "interval": sorted(set(c["interval"]))}}
    per_run = {}
    for size, g in d.groupby("size"):
        per_run[size] = {"coverage": float(g["covers"].mean()), "runs": len(g),
                         "truth": float(g["truth"].iloc[0]),
                         "bias": float(np.median(g["multiplier"]) / g["truth"].iloc[0] - 1),
                         "median_half_width": float(np.median(np.sqrt(
                             g["multiplier_hi"] / g["multiplier_lo"])) - 1),
                         "interval": sorted(set(g["interval"]))}
    out["per_run_table"] = dict(sorted(per_run.items(), key=lambda kv: float(kv[0].rstrip("M"))))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ladders", type=int, default=400)
    p.add_argument("--bootstrap", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", choices=("data", "b"), action="append")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    logging.disable(logging.WARNING)
    record: dict = {"ladders": args.ladders, "bootstrap": args.bootstrap, "seed": args.seed}
    todo = args.only or ["data", "b"]

    def save(key, value, t0):
        record[key] = {**value, "seconds": round(time.time() - t0, 1)}
        print(key, json.dumps(record[key], indent=1), flush=True)
        if args.out:
            args.out.write_text(json.dumps(record, indent=1) + "\n")

    if "data" in todo:
        for key, level in (("data_given_0.005", 0.005), ("data_no_level", None)):
            t0 = time.time()
            save(key, data(args.ladders, args.bootstrap, level), t0)
    if "b" in todo:
        for key, b in (("isoparametric_b1.69", 1.69), ("isoparametric_b1.80", 1.80)):
            t0 = time.time()
            save(key, ladders_b(args.ladders, args.bootstrap, b, args.seed + int(b * 100)), t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
