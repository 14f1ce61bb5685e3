"""Is the asymptote b what the data say? (issue 24.5; calibrated in issue 37.5)

b = 1.69 is borrowed: Hoffmann et al.'s E, fitted on another tokenizer and corpus. Beside every
fit the Dense L(N) ladder (each size's largest token budget, every seed) is fitted once more with
b free, and the b used is tested against it:

- the statistic: F = (S(b_used) - S_free) / S_free, S the fit's summed Huber loss of the log
  residuals with b pinned at b_used and with b free: how much better the data fit with b free,
  in units of the free fit's own scatter (so the noise level cancels to first order);
- its null distribution: ladders of this design (the same runs: sizes, seeds) drawn on the
  curve fitted with b = b_used, each run's loss times (1 + sigma z), sigma its (arm, size)'s
  run-to-run noise as the headline reads it (analysis.readings.noise.reading_replicates: the
  sweep's seeds under fit.noise_model, an arm without seeds borrowing the others' level, or
  fit.seed_noise / --noise-from), times the LR rule's miss as the headline's replicates draw it
  (the LR model's own draws), refitted both ways; the warning fires when F exceeds the null's
  95th percentile (`FALSE_ALARM`: calibrated, where a percentile interval's nominal 5% had
  warned in 11-15% of ladders whose b was 1.69);
- its interval: the b's the same test does not reject (F(b) at or below that percentile), on a
  grid over (0, the smallest loss);
- its power: the same draws on the curve fitted with b = POWER_B, tested against b_used: "a b of
  1.80 would be seen in x% of ladders of this design".

The draws take each (arm, size)'s point level: its own uncertainty is what the studentised F
already allows for (drawing the level again too made the test warn in 2.5% of ladders, not 5%).
What they do not draw is the error the LR model's reading of a swept size carries (one curvature
shared by an arm's sizes): on the shipped design it adds a few points of false alarms
(docs/coverage/secondary_readings.py). Without seeds or a level (`fit`) the free fit's own
residual scatter is the level: the interval is labelled fit only. With fit.b=free the main fit
is this fit and the line compares it with 1.69. A free b on a short ladder is loosely pinned (it
trades off against A and alpha), so a wide interval and a low power are answers too: the data
cannot tell.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd

from analysis.config import B_DEFAULT, FitConfig
from analysis.laws import lm
from analysis.laws.powerlaw import ALPHA_BOUNDS, FitError, PowerLaw, fit_power_law
from analysis.readings.noise import FIT_ONLY, reading_replicates

log = logging.getLogger(__name__)
MIN_SIZES = 3  # a free b needs three distinct sizes (A, alpha, b)
FALSE_ALARM = 0.05  # the warning's rate where b_used is the truth
POWER_B = 1.80  # the alternative the power line reports (Epoch AI's refit of E is 1.82)
MAX_DRAWS = 200  # simulated ladders per test (an exact 5% Monte Carlo test at any number)
GRID = 100  # b values of the interval's grid


def check_b(ladder: pd.DataFrame, cfg: FitConfig, rng: np.random.Generator,
            family: str = "", lr_miss=None, context: pd.DataFrame | None = None
            ) -> dict | None:
    """The Dense L(N) fitted with b free, its interval, the calibrated test of the b used and
    its power (module docstring); None (with nothing to say) when the ladder has fewer than
    MIN_SIZES sizes or the fit fails. lr_miss, context: the LR model and the family's other runs
    the headline reads its noise from (reading_replicates; None: fit.lr_miss, the ladder
    alone)."""
    ladder = ladder[np.isfinite(ladder["loss"]) & (ladder["loss"] > 0)].reset_index(drop=True)
    if ladder["params"].nunique() < MIN_SIZES:
        return None
    try:
        fit = fit_power_law(ladder["params"], ladder["loss"], b=None, delta=cfg.delta)
    except FitError:
        return None
    x, loss = ladder["params"].to_numpy(float), ladder["loss"].to_numpy(float)
    used = B_DEFAULT if cfg.b is None else cfg.b
    _, noise = reading_replicates(ladder, cfg, 2, rng, lr_miss=lr_miss, context=context)
    sd = _levels(ladder, noise, x, loss, fit)
    miss = _MissDraws(ladder, noise, lr_miss)
    draws = min(cfg.bootstrap, MAX_DRAWS)
    test = _Test(x, loss, cfg.delta)
    out = {"b": fit.b, "b_lo": math.nan, "b_hi": math.nan, "alpha": fit.alpha,
           "n_points": fit.n_points, "n_sizes": int(ladder["params"].nunique()), "b_used": used,
           "b_fixed": cfg.b is not None, "interval": noise.source,
           "at_bound": bool(fit.b >= 0.999 * float(loss.min())), "outside": False,
           "p": math.nan, "threshold": math.nan, "power": math.nan, "power_b": _alternative(used),
           "draws": draws}
    null = _curve(x, loss, used, cfg.delta)
    if null is None:  # a loss at or below b_used: the b used is rejected by the data outright
        out.update(outside=True, p=0.0)
    else:
        f_null = test.simulate(null, used, _draws(rng, draws, sd, miss), fit)
        q = _threshold(f_null)
        f_obs = test.stat(loss[None], np.array([used]), fit)[0]
        p = (1 + np.sum(f_null >= f_obs)) / (1 + np.sum(~np.isnan(f_null)))
        out.update(threshold=q, p=float(p), outside=bool(f_obs > q))
        out["b_lo"], out["b_hi"] = test.accepted(q, fit)
        alt = _curve(x, loss, out["power_b"], cfg.delta)
        if alt is not None:
            f_alt = test.simulate(alt, used, _draws(rng, draws, sd, miss), fit)
            out["power"] = float(np.mean(f_alt > q))
    if out["outside"]:
        log.warning(f"family {family!r}: " + warning_text(out, cfg.level))
    return out


def _threshold(f_null: np.ndarray) -> float:
    """The Monte Carlo test's critical value: the k-th smallest of the n simulated F (NaN: a
    failed fit, left out), k = ceil((1 - FALSE_ALARM)(n + 1)), so that an F beyond it has the
    p-value (1 + #{F_null >= F}) / (n + 1) <= FALSE_ALARM: exactly 5% false alarms whatever
    n (the plain 95th percentile of 200 draws would warn in 5.5%)."""
    f = np.sort(f_null[~np.isnan(f_null)])
    k = math.ceil((1 - FALSE_ALARM) * (f.size + 1))
    return float(f[k - 1]) if 0 < k <= f.size else math.inf


class _MissDraws:
    """The LR rule's miss each simulated ladder draws, as the headline's replicates draw it: the
    LR model's own draws (`replicate_factors`, by each run's lr_key: correlated across the sizes
    whose miss one line predicts), or a zero-mean miss of fit.lr_miss shared by the seeds of an
    (arm, size) the headline's Noise names."""

    def __init__(self, ladder: pd.DataFrame, noise, lr_miss):
        self.keys = ladder["lr_key"].to_numpy(object) if "lr_key" in ladder else None
        self.model = lr_miss if hasattr(lr_miss, "replicate_factors") else None
        groups = (ladder["arm"].astype(str) + "|" + ladder["size"].astype(str)).to_numpy()
        self.sd = np.where(np.isin(groups, list(noise.unswept)), noise.lr_miss, 0.0)
        self.gid = np.unique(groups, return_inverse=True)[1]

    def __call__(self, rng: np.random.Generator, draws: int) -> np.ndarray | float:
        if self.model is not None and self.keys is not None:
            f = self.model.replicate_factors(self.keys, draws, rng)
            return 1.0 if f is None else f
        shared = rng.standard_normal((draws, int(self.gid.max()) + 1))[:, self.gid]
        return 1.0 + self.sd * shared


def _draws(rng: np.random.Generator, draws: int, sd: np.ndarray, miss: _MissDraws
           ) -> np.ndarray:
    """(draws, n) relative factors of simulated ladders: (1 + sd z) per run (its (arm, size)'s
    point level) times the LR rule's miss as the headline draws it."""
    return (1.0 + sd * rng.standard_normal((draws, sd.size))) * miss(rng, draws)


def _alternative(used: float) -> float:
    """The b the power line is about: POWER_B, or 1.69 where that is the b used."""
    return B_DEFAULT if abs(used - POWER_B) < 0.02 else POWER_B


def _levels(ladder: pd.DataFrame, noise, x, loss, fit: PowerLaw) -> np.ndarray:
    """(n,) each run's relative sd: its (arm, size)'s point level as the headline's Noise reads
    it; without one (`fit`) the free fit's residual scatter, the same for every run."""
    groups = (ladder["arm"].astype(str) + "|" + ladder["size"].astype(str)).to_numpy()
    if noise.source != "fit":
        sd = np.array([float(np.ravel(noise.by_size[g][0])[0]) if g in noise.by_size else
                       float(noise.levels.get(g.split("|", 1)[0], math.nan)) for g in groups])
        if np.isfinite(sd).all():
            return sd
    r = np.log(loss) - np.log(fit.predict(x))
    return np.full(x.size, float(np.sqrt((r ** 2).sum() / max(x.size - 3, 1))))


def _curve(x, loss, b: float, delta: float) -> np.ndarray | None:
    """The Dense curve fitted with b pinned, at every run (None when a loss is at or below b)."""
    if not float(loss.min()) > b:
        return None
    try:
        return fit_power_law(x, loss, b=b, delta=delta).predict(x)
    except FitError:
        return None


class _Test:
    """F = (S(b) - S_free) / S_free on the runs at x, batched over rows of log losses."""

    def __init__(self, x: np.ndarray, loss: np.ndarray, delta: float):
        lx = np.log(x)
        self.x0 = float(lx.mean())
        self.u, self.delta = lx - self.x0, delta
        self.y = np.log(loss)
        self.dof = x.size - 3

    def _start(self, y: np.ndarray, b: np.ndarray) -> np.ndarray:
        """(R, 2) (a_c, alpha): least squares of log(L - b) on centred log x, per row."""
        gap = np.log(np.maximum(np.exp(y) - b[:, None], 1e-12))
        uc = self.u - self.u.mean()
        slope = (gap * uc).sum(1) / (uc @ uc)
        return np.column_stack([gap.mean(1) - slope * self.u.mean(),
                                np.clip(-slope, *ALPHA_BOUNDS)])

    def fixed(self, y: np.ndarray, b: np.ndarray) -> np.ndarray:
        """(R,) S with b pinned at b (R,) for each row of y (R, n): least squares on
        log(L - b) as the start, then the Huber fit."""
        e = np.log(b)[:, None]

        def residuals(th, rows):
            t1 = th[:, :1] - th[:, 1:2] * self.u
            pred = np.logaddexp(t1, e[rows])
            w = np.exp(t1 - pred)
            return pred - y[rows], np.stack([w, -w * self.u], axis=-1)

        _, f = lm.solve(residuals, self._start(y, b), delta=self.delta, iters=100,
                        lower=[-50.0, ALPHA_BOUNDS[0]], upper=[50.0, ALPHA_BOUNDS[1]])
        return f

    def free(self, y: np.ndarray, starts: tuple[float, ...]) -> np.ndarray:
        """(R,) S with b free for each row of y (R, n), from each b in `starts` (A and alpha by
        least squares there), the best kept; b stays below each row's smallest loss."""
        best = np.full(len(y), np.inf)
        e_max = np.log(np.exp(y).min(1)) - 1e-9
        for b_start in starts:
            b0 = np.minimum(b_start, 0.98 * np.exp(e_max))
            start = np.column_stack([self._start(y, b0), np.log(b0)])

            def residuals(th, rows):
                e = np.minimum(th[:, 2:3], e_max[rows, None])
                t1 = th[:, :1] - th[:, 1:2] * self.u
                pred = np.logaddexp(t1, e)
                w = np.exp(t1 - pred)
                return pred - y[rows], np.stack([w, -w * self.u, 1.0 - w], axis=-1)

            _, f = lm.solve(residuals, start, delta=self.delta, iters=100,
                            lower=[-50.0, ALPHA_BOUNDS[0], math.log(1e-3)],
                            upper=[50.0, ALPHA_BOUNDS[1], float(e_max.max())])
            best = np.minimum(best, f)
        return best

    def stat(self, loss: np.ndarray, b: np.ndarray, fit: PowerLaw) -> np.ndarray:
        """(R,) F of each row of loss (R, n) against b (R,) (or one b for every row)."""
        y = np.log(loss)
        b = np.broadcast_to(np.asarray(b, float), (len(y),))
        s_b = self.fixed(y, b)
        s_free = np.minimum(self.free(y, (float(b[0]), fit.b)), s_b)
        with np.errstate(divide="ignore", invalid="ignore"):
            return (s_b - s_free) / (s_free if self.dof >= 2 else 1.0)

    def simulate(self, curve: np.ndarray, b: float, factors: np.ndarray, fit: PowerLaw
                 ) -> np.ndarray:
        """(R,) F of ladders drawn on `curve` times factors (R, n), tested against b."""
        loss = curve * factors
        ok = (loss > b).all(1)
        out = np.full(len(loss), np.inf)  # a draw at or below b rejects b outright
        out[ok] = self.stat(loss[ok], np.full(int(ok.sum()), b), fit)
        return out

    def accepted(self, q: float, fit: PowerLaw) -> tuple[float, float]:
        """(lo, hi): the b's on a grid over (0, the smallest loss) whose F is at or below q."""
        top = float(np.exp(self.y.min()))
        grid = np.unique(np.r_[np.linspace(0.01, 0.999 * top, GRID), fit.b])
        y = np.broadcast_to(self.y, (grid.size, self.y.size))
        s_b = self.fixed(y, grid)
        s_free = min(float(s_b.min()), float(self.free(self.y[None], (fit.b,))[0]))
        with np.errstate(divide="ignore", invalid="ignore"):
            f = (s_b - s_free) / (s_free if self.dof >= 2 else 1.0)
        ok = grid[f <= q]
        if not ok.size:
            return math.nan, math.nan
        return (0.0 if ok.min() <= grid[0] else float(ok.min()),
                top if ok.max() >= grid[-1] else float(ok.max()))


def interval_label(check: dict) -> str:
    """How the b check's draws got their noise, for the summary."""
    return {"seeds": "run-to-run noise from the sweep's seeds, as the headline",
            "given": "run-to-run noise at the level given (fit.seed_noise / --noise-from), as "
                     "the headline"}.get(check["interval"], FIT_ONLY + ": the free fit's own "
                                                            "scatter, one seed and no level given")


def power_text(check: dict) -> str:
    """'a b of 1.80 would be seen in x% of ladders of this design' (or why not)."""
    if not np.isfinite(check.get("power", math.nan)):
        return ""
    return (f"a b of {check['power_b']:.2f} would be seen in {check['power']:.0%} of ladders of "
            f"this design ({check['draws']} simulated)")


def warning_text(check: dict, level: float) -> str:
    why = (f"p = {check['p']:.3f}; {FALSE_ALARM:.0%} false alarms where it is true; its "
           f"{1 - FALSE_ALARM:.0%} interval [{check['b_lo']:.3g}, {check['b_hi']:.3g}]"
           if np.isfinite(check["b_lo"]) else "a Dense loss lies at or below it")
    return (f"b = {check['b_used']:g} is rejected by the free-b fit ({why}; b = "
            f"{check['b']:.3g} fitted on the Dense L(N), {check['n_sizes']} sizes)" + (
                ": the multipliers rest on an asymptote the data reject; see how they move with "
                "b, or fit it (fit.b=free)" if check["b_fixed"] else ""))
