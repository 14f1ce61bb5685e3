"""`python -m leviathan.bench <name> [options]` — dispatch to one benchmark module.

Each benchmark prints human-readable progress and, as its last line, one JSON object.
"""

import importlib
import logging
import sys

BENCHES = {
    "throughput": "leviathan.bench.throughput",  # Leviathan vs Dense training tokens/s
    "data": "leviathan.bench.data",  # raw tiktoken vs streaming vs prepared reader
    "loss": "leviathan.bench.loss",  # plain vs lean (chunked) head + cross-entropy
    "gpu": "leviathan.bench.gpu",  # real training steps on CUDA: tokens/s, MFU, peak memory
    "gpu-suite": "leviathan.bench.gpu_suite",  # every GPU figure in one call: one JSON
    "gpu-grid": "leviathan.bench.gpu_grid",  # every shape of the shipped grids, in a budget
    "shapes": "leviathan.bench.shapes",  # the shapes file for `bench gpu` where Hydra is absent
    "tracking": "leviathan.bench.tracking",  # N concurrent jobs' MLflow writers vs one server
    "loop": "leviathan.bench.loop",  # Lightning's Trainer vs the plain step, per optimizer step
    "lev": "leviathan.bench.lev",  # the two LEV forms: params, time, init scale, training
    "ckpt": "leviathan.bench.ckpt",  # one checkpoint's write: Lightning's IO vs in place
    "cost": "leviathan.bench.cost",  # fit the plan's GPU cost model to measured steps
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in BENCHES:
        names = ",".join(BENCHES)
        print(f"usage: python -m leviathan.bench {{{names}}} [options]", file=sys.stderr)
        return 2
    from leviathan.errors import LeviathanError
    from leviathan.logs import setup_logging

    setup_logging()
    module = importlib.import_module(BENCHES[argv[0]])
    try:
        return module.main(argv[1:]) or 0
    except LeviathanError as e:  # e.g. ShapeError; anything else shows its traceback
        logging.getLogger(__name__).error(f"error: {e}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
