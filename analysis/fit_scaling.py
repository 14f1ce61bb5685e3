"""`make fit-scaling`: fit a sweep's runs and write the report, the tables and the plots.

    python -m analysis.fit_scaling [--latest]               # newest sweep parent run in MLflow
    python -m analysis.fit_scaling --sweep isoparametric    # a named sweep
    python -m analysis.fit_scaling --csv runs.csv --out DIR [--curves curves.csv]
    python -m analysis.fit_scaling --chinchilla PATH        # validate the joint fit on Chinchilla
    python -m analysis.fit_scaling --sweep NAME fit.b=free fit.bootstrap=2000   # fit settings

The fit's settings are the `fit` config group (conf/fit/, schema analysis/config.py), composed
with the sweep config as every entry point composes it; --b, --bootstrap, ... are shortcuts.

Outputs go to sweeps/<sweep>/fit/ (or beside the CSV, or --out; the last fit's move to its
previous/) and, for an MLflow sweep, to the sweep's parent run: each fit its own artifact folder
fit/<UTC time>-<fit config hash>, the newest named by the parent's tag `fit_latest`, and its
headline tables (headline.md) the parent's description.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from analysis.runs import Runs
from leviathan.errors import LeviathanError

log = logging.getLogger(__name__)


# flag -> the `fit` key it is a shortcut for (conf/fit/, analysis/config.py: FitConfig)
SHORTCUTS = {"b": "b", "params": "params", "bootstrap": "bootstrap", "seed": "seed",
             "level": "level", "huber_delta": "delta", "b_grid": "b_grid"}


def fit_overrides(args: argparse.Namespace) -> list[str]:
    """The command line's overrides, then the shortcut flags given as `fit.<key>=value`."""
    out = list(args.overrides)
    for flag, key in SHORTCUTS.items():
        value = getattr(args, flag)
        if value is not None:
            value = f"[{value}]" if key == "b_grid" else value
            out.append(f"fit.{key}={value}")
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m analysis.fit_scaling", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--latest", action="store_true",
                   help="the most recently started sweep parent run (tags.kind='sweep'); the "
                   "default when no --sweep, --csv or --chinchilla is given")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--sweep", help="sweep name (MLflow tag `sweep`)")
    src.add_argument("--csv", type=Path, help="runs from a CSV: arm (dense | leviathan | "
                     "factorized | dense_untied | factorized_wide | lev_codebooks), params, "
                     "tokens, loss [, body_params, flops, "
                     "size, pair, seed, lr, family, status, cooled, run, name]; see "
                     "analysis/csv_input.py")
    src.add_argument("--chinchilla", type=Path, metavar="CSV",
                     help="fit the joint L(N, D) on Epoch's Chinchilla data and compare")
    p.add_argument("--curves", type=Path, metavar="CSV",
                   help="with --csv: validation curves run (or name), tokens, loss [, cooled] "
                   "for the token multiplier and the multiplier against tokens")
    p.add_argument("--buckets", type=Path, metavar="CSV",
                   help="with --csv: validation loss per token-frequency bucket run (or name), "
                        "bucket, loss (quantile q00-10 ... and/or count 0, 1e0-1e1 ...)")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow server (default: the composed tracking.uri: conf/local, "
                   "$MLFLOW_TRACKING_URI, else http://127.0.0.1:5000)")
    p.add_argument("--experiment", default=None,
                   help="MLflow experiment name (default: tracking.experiment)")
    p.add_argument("--out", type=Path, help="output folder (default <paths.sweeps_dir>/<sweep>/"
                   "fit/, or <csv stem>_fit/ beside the CSV)")
    p.add_argument("overrides", nargs="*", help="config overrides as for the sweep command, "
                   "and the fit's own settings fit.<key>=value (conf/fit/; e.g. fit.b=free "
                   "fit.bootstrap=2000 tracking.uri=http://host:5000 paths.root_dir=/proj)")
    short = p.add_argument_group("shortcuts for fit.<key>=value (defaults: analysis/config.py)")
    short.add_argument("--b", help="fit.b: irreducible loss b, or 'free' to fit it (1.69)")
    short.add_argument("--params", help="fit.params: N = total parameters (as the paper) or "
                       "body (non-embedding)")
    short.add_argument("--bootstrap", help="fit.bootstrap: bootstrap resamples (1000)")
    short.add_argument("--seed", help="fit.seed: bootstrap RNG seed (0)")
    short.add_argument("--level", help="fit.level: interval coverage (0.95)")
    short.add_argument("--huber-delta", help="fit.delta: Huber delta on log residuals of L(N), "
                       "L(C), L(D)")
    short.add_argument("--b-grid", help="fit.b_grid: comma-separated b values for the "
                       "sensitivity table")
    p.add_argument("--noise-from", metavar="SWEEP_OR_CSV",
                   help="measure each arm's run-to-run noise from a pilot sweep's seeds (an "
                   "MLflow sweep name, or a runs CSV) and use it where this sweep has one seed "
                   "(fit.seed_noise.<arm> given explicitly wins)")
    p.add_argument("--no-upload", action="store_true",
                   help="do not log the outputs to the sweep's MLflow parent run")
    return p


def parent_note(out_dir: Path, folder: str) -> str:
    """The sweep's parent run's description: the fit's headline tables (headline.md) and
    where the rest is, within MLflow's limit on a tag's length."""
    from mlflow.utils.validation import MAX_TAG_VAL_LENGTH

    from analysis.report import HEADLINE

    where = (f"\nFrom the fit in the artifacts `{folder}/`: the whole report `summary.md`, "
             "the plots (`scaling.png`, ...) and the tables.\n")
    text = (out_dir / HEADLINE).read_text()
    if len(text) + len(where) > MAX_TAG_VAL_LENGTH:
        cut = "\n\n(cut here: the rest is in `summary.md`)\n"
        keep = MAX_TAG_VAL_LENGTH - len(where) - len(cut)
        text = text[:text.rfind("\n", 0, keep)] + cut
    return text + where


def upload(out_dir: Path, tracking_uri: str, experiment: str, sweep: str) -> tuple[str, str]:
    """Log this fit's files (not previous/) to the sweep's parent run, in an artifact folder of
    their own (analysis.report.fit_folder), name it in the tags Tag.FIT_*, and make the fit's
    headline the run's description (Tag.NOTE); returns the run id and the folder."""
    import json

    from mlflow.entities import RunTag
    from mlflow.tracking import MlflowClient

    from analysis.report import fit_folder
    from analysis.runs import sweep_parent
    from leviathan.tracking.runs import Tag

    run_id = sweep_parent(tracking_uri, experiment, sweep, create=True)
    fit = json.loads((out_dir / "fit.json").read_text())
    folder = fit_folder(fit)
    c = MlflowClient(tracking_uri=tracking_uri)
    for p in sorted(p for p in out_dir.iterdir() if p.is_file()):
        c.log_artifact(run_id, str(p), folder)
    c.log_batch(run_id, tags=[RunTag(Tag.FIT_LATEST, folder),
                              RunTag(Tag.FIT_CONFIG_HASH, fit["config_hash"]),
                              RunTag(Tag.NOTE, parent_note(out_dir, folder))])
    return run_id, folder


def run_chinchilla(path: Path, out: Path | None, bootstrap: int, seed: int) -> int:
    import json

    from analysis.joint import bootstrap_joint, fit_joint, load_chinchilla
    from analysis.report import chinchilla_line

    df = load_chinchilla(path)
    t0 = time.perf_counter()
    fit = fit_joint(df["N"], df["D"], df["loss"])
    took = time.perf_counter() - t0
    print(f"Chinchilla joint fit on {fit.n_points} points ({fit.n_starts} starts, {took:.1f}s): "
          + chinchilla_line(fit))
    se = bootstrap_joint(df["N"], df["D"], df["loss"], fit, n_rep=bootstrap, seed=seed)
    print("bootstrap SE: " + ", ".join(f"{k} {v['se']:.3g}" for k, v in se.items()))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "chinchilla_fit.json").write_text(json.dumps(
            {"fit": fit.as_dict(), "bootstrap": se, "seconds": took}, indent=2))
    return 0


def add_downstream(out: Path, sweep: str, uri: str, experiment: str) -> list[Path]:
    """Append the per-pair downstream table (lm-eval scores on the runs) to summary.md."""
    from analysis.downstream import downstream_md, from_mlflow, pair_table

    long = from_mlflow(sweep, tracking_uri=uri, experiment=experiment)
    if long.empty:
        return []
    table = pair_table(long)
    table.to_csv(out / "downstream.csv", index=False)
    with open(out / "summary.md", "a") as f:
        f.write("\n" + downstream_md(table))
    return [out / "downstream.csv"]


def site_settings(args: argparse.Namespace) -> None:
    """Fill --tracking-uri, --experiment, the sweeps folder and the fit's settings (args.fit, a
    FitConfig) from the composed conf/fit.yaml (the sweep config, conf/local included, plus the
    `fit` group); flags win. A bad key or value raises FitConfigError naming it."""
    from analysis.config import compose_fit
    from leviathan.tracking.credentials import use_credentials

    cfg, args.fit = compose_fit(fit_overrides(args))
    args.tracking_uri = use_credentials(args.tracking_uri or str(cfg.tracking.uri),
                                        cfg.tracking.get("credentials_file"))
    args.experiment = args.experiment or str(cfg.tracking.experiment)
    args.sweeps_dir = Path(str(cfg.paths.sweeps_dir))


def add_environments(out: Path, sweep: str, uri: str, experiment: str) -> None:
    """Append to summary.md on which environments the sweep's runs ran (which packages differ)."""
    from leviathan.tracking import runs as tr
    from leviathan.tracking.environment import sweep_report

    c = tr.client(uri)
    exp = tr.experiment_id(c, experiment, create=False)
    lines = sweep_report(c, tr.training_runs(c, exp, sweep) if exp else [])
    with open(out / "summary.md", "a") as f:
        f.write("\n".join(["", "## Environments", "", *lines]) + "\n")


def noise_from(source: str, args: argparse.Namespace) -> dict[str, float]:
    """arm -> relative sd of one run's loss, measured on a pilot sweep's seeds (after its LR
    choice); AnalysisError when the pilot has no arm with two seeds at a size."""
    from analysis.csv_input import load_csv
    from analysis.lr_selection import select_lr
    from analysis.noise import arm_levels
    from analysis.runs import AnalysisError, load_mlflow

    path = Path(source)
    pilot = load_csv(path, "total") if path.is_file() else load_mlflow(
        source, tracking_uri=args.tracking_uri, experiment=args.experiment, histories=False)
    table = pilot.table.copy()
    select_lr(table, args.fit.budget_tol, args.fit.lr_estimator)
    levels = arm_levels(table[table["reason"] == ""])
    if not levels:
        raise AnalysisError(f"--noise-from {source}: no arm has two or more seeds at a size; a "
                            "pilot sweep needs grid.seeds with two or more seeds")
    log.info("--noise-from %s: run-to-run noise per arm %s", source,
             ", ".join(f"{a} {v:.2%}" for a, v in levels.items()))
    return levels


def load_runs(args: argparse.Namespace) -> tuple[Runs, Path]:
    """The runs to fit (a CSV, a named sweep or the latest) and the output folder."""
    from analysis.csv_input import load_csv
    from analysis.runs import latest_sweep, load_mlflow

    cfg = args.fit
    if args.csv:
        runs = load_csv(args.csv, cfg.params, curves=args.curves, buckets=args.buckets)
        return runs, args.out or args.csv.resolve().parent / f"{args.csv.stem}_fit"
    sweep = args.sweep or latest_sweep(args.tracking_uri, args.experiment)
    log.info(f"fit-scaling: sweep {sweep!r} from {args.tracking_uri}")
    runs = load_mlflow(sweep, tracking_uri=args.tracking_uri, experiment=args.experiment,
                       params_kind=cfg.params)
    return runs, args.out or args.sweeps_dir / sweep / "fit"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from leviathan.logs import setup_logging

    setup_logging()
    if (args.curves or args.buckets) and not args.csv:
        parser.error("--curves and --buckets go with --csv (MLflow runs bring their own)")
    try:
        site_settings(args)
    except LeviathanError as err:  # FitConfigError: a bad fit.* (or other) key or value
        log.error(f"fit-scaling: error: {err}")
        return 2
    cfg = args.fit
    if args.chinchilla:
        return run_chinchilla(args.chinchilla, args.out, min(cfg.bootstrap, 400), cfg.seed)
    from analysis.plots import (
        plot_data_scaling,
        plot_multiplier_vs_tokens,
        plot_rare_tokens,
        plot_scaling,
    )
    from analysis.report import write_outputs
    from analysis.scaling import analyse
    try:
        if args.noise_from:
            cfg.seed_noise = {**noise_from(args.noise_from, args), **cfg.seed_noise}
        runs, out = load_runs(args)
        results, table = analyse(runs, cfg)
    except LeviathanError as err:  # AnalysisError, FitError, TrackingUnreachable, ...
        log.error(f"fit-scaling: error: {err}")
        return 2
    out = Path(out)
    written = write_outputs(out, runs, cfg, results, table)
    for plot in (plot_scaling(out / "scaling.png", results, table, cfg.level),
                 plot_multiplier_vs_tokens(out / "multiplier_vs_tokens.png", results),
                 plot_rare_tokens(out / "rare_tokens.png", results),
                 plot_data_scaling(out / "data_scaling.png", results, table)):
        if plot is not None:
            written.append(plot)
    if runs.sweep and not args.csv:
        add_environments(out, runs.sweep, args.tracking_uri, args.experiment)
        written += add_downstream(out, runs.sweep, args.tracking_uri, args.experiment)
    print((out / "summary.md").read_text())
    log.info("wrote " + ", ".join(str(p) for p in written))
    if runs.sweep and not args.csv and not args.no_upload:
        run_id, folder = upload(out, args.tracking_uri, args.experiment, runs.sweep)
        log.info(f"logged to MLflow run {run_id} (artifacts {folder}/) at {args.tracking_uri}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
