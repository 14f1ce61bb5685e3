"""`python -m leviathan.bench cost --fit <records> [--out sweeps/cost_model.json]`: fit the GPU
cost model (leviathan.sweep.cost_model) to measured training steps and write it for the plan
(sweep.cost_model). Prints each measured shape beside the fit and beside a fit without it (the
leave-one-shape-out error the plan's range uses). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DEFAULT_OUT = "sweeps/cost_model.json"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m leviathan.bench cost",
                                description=__doc__.splitlines()[0])
    p.add_argument("--fit", nargs="+", required=True, metavar="RECORD",
                   help="bench gpu / gpu-suite records (JSON), e.g. docs/gpu/*.json")
    p.add_argument("--device", help="the device to fit when the records hold several")
    p.add_argument("--out", type=Path, default=Path(DEFAULT_OUT), help="the model file")
    args = p.parse_args(argv)
    from leviathan.sweep import cost_records
    from leviathan.sweep.cost_model import fit

    notes: list[str] = []
    model = fit(cost_records.read(args.fit, notes), args.device)
    for note in notes:
        print(f"note: {note}")
    print(f"cost model of {model.device}: {len(model.points)} measured steps "
          f"(the newest record of each size and settings)")
    print("| shape | arm | mode | measured tok/s | fitted | left out | error left out |")
    print("|---|---|---|---|---|---|---|")
    for pt in model.points:
        mode = ("job " if pt["job"] else "") + ("compiled" if pt["compile"] else "eager")
        print(f"| {pt['shape']} | {pt['arm']} | {mode} | {pt['measured_tokens_per_s']:,.0f} | "
              f"{pt['fitted_tokens_per_s']:,.0f} | {pt['left_out_tokens_per_s']:,.0f} | "
              f"{pt['left_out_error']:+.1%} |")
    print("constants: " + ", ".join(f"{k} {v:.4g}" for k, v in model.coef.items()))
    print(f"leave-one-shape-out error: at most {model.loo_error:.1%}")
    model.save(args.out)
    print(f"written: {args.out} (the plan reads it through sweep.cost_model)")
    print(json.dumps({"device": model.device, "points": len(model.points),
                      "loo_error": model.loo_error, "out": str(args.out)}))
    return 0
