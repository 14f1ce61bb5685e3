"""`python -m analysis.toyworld WORLD runs.csv`: a toy world's runs, where we decide what LEV is
worth, for the analysis to read back (the worlds: analysis/power/worlds.py; the simulator that
draws them: analysis/power/simulate.py).

    python -m analysis.toyworld body-only runs.csv      # then: python -m analysis.fit_scaling
    python -m analysis.toyworld lev-1.3 runs.csv --seeds 3 --noise 0.005   --csv runs.csv
    python -m analysis.toyworld data-2x runs.csv        # data scaling: Leviathan's tokens 2x

More knobs are keywords of analysis.power.simulate.toy_world: `b` (the asymptote; the fit assumes
1.69), `data` (a term B·D^-beta of the tokens trained), `tokens_per` (each run's budget: 20x its
size's Dense total parameters, as the real grids, or 20x its own body) and `ladder` (v1, v2).
"""

from __future__ import annotations

import argparse
import sys

from analysis.power.simulate import data_world, toy_world
from analysis.power.worlds import DATA_WORLDS, WORLD_LADDER, WORLDS


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
