"""The LR rule's miss: what a size loses by not running at its arm's optimal learning rate.

A grid sweeps the learning rate at a few sizes (grid.lr_sizes) and runs the size rule's LR at
the others. A miss of the optimum only ever raises a loss: at log2 LR u, loss = L*·(1 + a·(u -
O)^2), O the optimum, a the curvature (relative loss per octave^2). So the miss is a bias, not
noise around zero, and it differs by arm where the arms' optima move differently with size
(Leviathan is 2-9x deeper than Dense at the same parameters; nothing says its optimum follows
the body-size rule as Dense's does). SCIENCE.md §7.

Per (family, arm), from the arm's own swept sizes (`estimate`):
- a quadratic in log2 LR fitted to each swept size's seed means (relative to their mean over
  the LRs), each size its own level and slope, one curvature `a` for the arm, weighted by each
  mean's variance (the seeds' scatter at that size; one seed: fit.seed_noise, else the arm's
  own seeds elsewhere, else its family's other arms', as its intervals borrow them);
- each swept size's optimum O_p = its vertex, and a line in log N (body parameters: the rule is a
  power law of them, so the rule's LR is a line there too) through the optima: at a size that ran
  one LR, the line's distance D of that LR from the optimum, and the miss a·(D + e)^2, e the
  size's own scatter around the line, which no sweep elsewhere shows: `fit.lr_spread` octaves
  (the power model's grid.power.lr_spread), also carried by each swept optimum the line is
  drawn through (a size between two swept sizes inherits a share of both of theirs).
The loss of such a size is divided by exp(the expected miss, a·(D^2 + s^2)), estimated without
bias: the line's D^2 less its estimation variance and less the swept optima's scatter it
carries; every bootstrap replicate draws that estimate's error again (a world drawn from the
fit: the truth's own scatter e, the estimate from a sweep redrawn: the curvature and slopes from
the fit's covariance, each swept optimum moved by its scatter), so the interval carries the
miss's uncertainty, shared by the size's seeds and correlated across sizes through the line.

A swept size's loss is read at its optimum too (fit.lr_estimator=mean): the fitted quadratic's
minimum (its level less the squared slope's excess over its variance), not the best LR's mean,
which is the lowest of K noisy means (a winner's curse of up to ~0.85 sd with two seeds) and
misses an optimum between two LRs. The vertex is kept inside the swept range.

Where an arm has no sweep to learn from (no size with three LRs), an unswept size falls back to
a zero-mean miss of fit.lr_miss (relative sd), as the power model's spread alone would give.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.inputs.runs import budget_ids
from analysis.laws.lr_curve import Point, fit_arm, miss


@dataclass(frozen=True)
class LrMiss:
    """The LR model of every (family, arm) with a sweep: what the analysis divides each group's
    loss by, and what each replicate draws. `groups`: one row per (family, arm, size, budget)
    group corrected (columns: family, arm, size, tokens, swept, lr, distance, expected, sd,
    factor, how); `offsets`: each swept size's optimum, octaves from the LR an unswept size
    of its arm would run, with its sd."""

    groups: pd.DataFrame
    offsets: pd.DataFrame
    dev: dict = field(default_factory=dict)  # group key -> (R,) replicate deviations
    fallback: float = 0.0  # fit.lr_miss of groups without a sweep to learn from
    spread: float = 0.5

    def corrected(self, table: pd.DataFrame) -> pd.DataFrame:
        """`table` with each corrected group's losses times its factor (column `lr_key` names
        the group of each run, '' for none)."""
        if self.groups.empty:
            return table.assign(lr_key="")
        factor = dict(zip(self.groups["key"], self.groups["factor"], strict=True))
        key = _keys(table, set(factor))
        f = key.map(factor).fillna(1.0).to_numpy(float)
        return table.assign(loss=table["loss"].to_numpy(float) * f, lr_key=key.to_numpy())

    def replicate_factors(self, keys: np.ndarray, n_rep: int, rng: np.random.Generator
                          ) -> np.ndarray | None:
        """(n_rep, n) what each replicate multiplies each run's loss by (keys: each run's
        lr_key): exp(-the miss's deviation) for a corrected unswept group; 1 + fit.lr_miss z
        for an unswept group of an arm without a sweep; 1 elsewhere."""
        keys = np.asarray(keys, dtype=object)
        fallback = set(self.groups.loc[self.groups["how"] == "fallback", "key"]) if len(
            self.groups) else set()
        if not any(k in self.dev or (k in fallback and self.fallback > 0) for k in keys):
            return None
        out = np.ones((n_rep, keys.size))
        for k in np.unique(keys.astype(str)):
            cols = keys == k
            if k in self.dev:
                out[:, cols] = np.exp(-self.dev[k][:n_rep])[:, None]
            elif k in fallback and self.fallback > 0:
                out[:, cols] = 1.0 + self.fallback * rng.standard_normal((n_rep, 1))
        return out

    def for_family(self, family: str) -> LrMiss | None:
        """This model's rows of one family (None where it corrects nothing there)."""
        if self.groups.empty or not (self.groups["family"] == family).any():
            return None
        mine = self.groups["family"] == family
        keys = set(self.groups.loc[mine, "key"])
        off = self.offsets[self.offsets["family"] == family] if len(self.offsets) else \
            self.offsets
        return LrMiss(self.groups[mine].reset_index(drop=True), off.reset_index(drop=True),
                      {k: v for k, v in self.dev.items() if k in keys}, self.fallback,
                      self.spread)

    @property
    def unswept(self) -> tuple[str, ...]:
        g = self.groups[~self.groups["swept"]] if not self.groups.empty else self.groups
        return tuple(f"{a}|{s}" for a, s in zip(g.get("arm", []), g.get("size", []),
                                                 strict=True))


def _keys(table: pd.DataFrame, known: set) -> pd.Series:
    """Each run's group key (family|arm|size|budget) where it is in `known`, else ''."""
    if table.empty:
        return pd.Series([], dtype=object)
    key = (table["family"].astype(str) + "|" + table["arm"].astype(str) + "|"
           + table["size"].astype(str) + "|" + _budget_col(table).astype(str))
    return key.where(key.isin(known), "")


def _budget_col(table: pd.DataFrame) -> pd.Series:
    out = pd.Series(0, index=table.index)
    for _, g in table.groupby(["family", "arm", "size"], sort=False):
        out.loc[g.index] = budget_ids(g["tokens"].to_numpy(float), 0.05)
    return out


def _x(g: pd.DataFrame) -> float:
    col = "body_params" if "body_params" in g and np.isfinite(
        g["body_params"].to_numpy(float)).all() and (g["body_params"] > 0).all() else "params"
    return float(np.log(g[col].to_numpy(float).mean()))


def estimate(table: pd.DataFrame, kept: pd.DataFrame, cfg, rng: np.random.Generator,
             n_rep: int) -> LrMiss:
    """The LR model of `table` (the finished runs, every LR tried; `reason` '' for usable) and
    the groups it corrects (`kept`: the usable runs after the LR choice); module docstring."""
    spread, fallback = float(cfg.lr_spread), float(cfg.lr_miss)
    rows, offsets, dev = [], [], {}
    usable = table[(table["status"] == "FINISHED") & (table["reason"] == "")
                   & np.isfinite(table["lr"].to_numpy(float))]
    if usable.empty or kept.empty:
        return LrMiss(pd.DataFrame(), pd.DataFrame(), {}, fallback, spread)
    usable = usable.assign(_budget=_budget_col(usable))
    kept = kept.assign(_budget=_budget_col(kept))
    n_lr = usable.groupby(["family", "arm", "size", "_budget"])["lr"].nunique()
    swept_families = {f for (f, _, _, _), k in n_lr.items() if k >= 2}
    family_sds = {f: _arm_sd(h) for f, h in usable.groupby("family")}  # once per family
    for (fam, arm), g in usable.groupby(["family", "arm"], sort=True):
        sweeps, singles = [], []
        for (size, budget), h in g.groupby(["size", "_budget"], sort=False):
            (sweeps if h["lr"].nunique() >= 2 else singles).append((size, budget, h))
        if sweeps or fam in swept_families:
            mine = kept[(kept["family"] == fam) & (kept["arm"] == arm)]
            _arm_rows(fam, arm, g, sweeps, singles, mine, cfg, rng, n_rep, (rows, offsets, dev),
                      family_sds[fam])
    cols = ["key", "family", "arm", "size", "tokens", "swept", "lr", "distance", "expected",
            "sd", "factor", "how"]
    return LrMiss(pd.DataFrame(rows, columns=cols), pd.DataFrame(offsets), dev, fallback, spread)


def _arm_rows(fam, arm, g, sweeps, singles, kept, cfg, rng, n_rep, out, family_sd=None
              ) -> None:
    """One arm's rows of `estimate` (appended to out = (rows, offsets, dev)); a one-seed arm
    reads its sweeps with a given level, else its own seeds elsewhere, else its family's other
    arms' (as the intervals borrow them: analysis/readings/noise.py)."""
    rows, offsets, dev = out
    given = (cfg.seed_noise or {}).get(arm, (cfg.seed_noise or {}).get("all"))
    own = _arm_sd(g)
    points = [_point(h, given, own if own is not None else family_sd) for _, _, h in sweeps]
    fit = fit_arm(points) if points and all(p is not None for p in points) else None
    key = {(s, b): f"{fam}|{arm}|{s}|{b}" for s, b, _ in sweeps + singles}
    if fit is None:
        rows += [_row(fam, arm, s, h, False, math.nan, 0.0, float(cfg.lr_miss), 1.0,
                      "fallback", key[(s, b)]) for s, b, h in singles]
        return
    rule = _rule(singles, sweeps)
    opt, opt_sd = fit.optima()
    offsets += [{"family": fam, "arm": arm, "size": s, "offset": float(opt[0, j] - rule(h)),
                 "offset_sd": float(opt_sd[0, j]), "curvature": float(fit.a[0]),
                 "curvature_sd": float(fit.a_sd[0])} for j, (s, _, h) in enumerate(sweeps)]
    if cfg.lr_estimator == "mean":
        level = fit.at_optimum()[0]
        for j, (s, b, h) in enumerate(sweeps):
            mine = kept[(kept["size"] == s) & (kept["_budget"] == b)]
            if len(mine):
                f = _ref(h) * (1.0 + level[j]) / float(mine["loss"].mean())
                rows.append(_row(fam, arm, s, h, True, math.nan, -math.log(f), math.nan, f,
                                 "swept: the quadratic's minimum", key[(s, b)]))
    if singles:
        x_t = np.array([_x(h) for _, _, h in singles])
        u_t = np.array([float(np.log2(h["lr"].to_numpy(float)).mean()) for _, _, h in singles])
        exp_k, d, dist = miss(fit, x_t, u_t, float(cfg.lr_spread), n_rep, rng)
        for t, (s, b, h) in enumerate(singles):
            dev[key[(s, b)]] = d[0, :, t]
            rows.append(_row(fam, arm, s, h, False, float(dist[0, t]), float(exp_k[0, t]),
                             float(np.sqrt(np.mean(d[0, :, t] ** 2))),
                             math.exp(-float(exp_k[0, t])), "line through the swept optima",
                             key[(s, b)]))


def _row(fam, arm, size, h, swept, distance, expected, sd, factor, how, key) -> dict:
    return {"key": key, "family": fam, "arm": arm, "size": size,
            "tokens": float(h["tokens"].max()), "swept": swept,
            "lr": float(np.exp(np.log(h["lr"].to_numpy(float)).mean())),
            "distance": distance, "expected": expected, "sd": sd, "factor": factor, "how": how}


def _ref(h: pd.DataFrame) -> float:
    """A swept point's reference loss: the mean over its LRs of the seed means (finite)."""
    m = h.groupby("lr")["loss"].mean().to_numpy(float)
    m = m[np.isfinite(m)]
    return float(m.mean())


def _arm_sd(g: pd.DataFrame) -> float | None:
    """The relative run-to-run sd pooled over the (arm, size, LR, budget) groups of 2+ seeds of
    `g` (one arm's runs, or a family's)."""
    rel = []
    for _, h in g.groupby(["arm", "size", "_budget", "lr"], sort=False):
        loss = h["loss"].to_numpy(float)
        loss = loss[np.isfinite(loss)]
        if loss.size >= 2:
            rel.append((loss / loss.mean() - 1.0, loss.size - 1))
    dof = sum(d for _, d in rel)
    if not dof:
        return None
    return float(np.sqrt(sum((r ** 2).sum() for r, _ in rel) / dof))


def _point(h: pd.DataFrame, given: float | None, arm_sd: float | None) -> Point | None:
    """A swept (size, budget): relative seed means per LR and their variances; the variance of
    one run from this point's own seeds (2+ at some LR), else the given level, else the arm's."""
    ref = _ref(h)
    lrs = np.sort(h["lr"].unique().astype(float))
    y, n, dev = [], [], []
    for lr in lrs:
        loss = h.loc[h["lr"] == lr, "loss"].to_numpy(float)
        ok = loss[np.isfinite(loss)]
        if ok.size < loss.size or not ok.size:
            y.append(np.inf)
            n.append(1)
            continue
        y.append(ok.mean() / ref - 1.0)
        n.append(ok.size)
        if ok.size >= 2:
            dev.append((ok / ok.mean() - 1.0, ok.size - 1))
    dof = sum(d for _, d in dev)
    if dof:
        sd = math.sqrt(sum((r ** 2).sum() for r, _ in dev) / dof)
    elif given is not None:
        sd = float(given)
    elif arm_sd is not None:
        sd = arm_sd
    else:
        return None
    sd = max(sd, 1e-6)
    return Point(_x(h), np.log2(lrs), np.array(y)[None, :],
                 (sd * sd / np.array(n, float))[None, :])


def _rule(singles: list, sweeps: list):
    """The log2 LR an unswept size of this arm would run at a swept size's N: the line in log N
    through the unswept sizes' LRs (the rule), else the middle of the sweep."""
    if len(singles) >= 2:
        x = np.array([_x(h) for _, _, h in singles])
        u = np.array([float(np.log2(h["lr"].to_numpy(float)).mean()) for _, _, h in singles])
        if np.unique(x).size >= 2:
            k, c = np.polyfit(x, u, 1)
            return lambda h: float(k * _x(h) + c)
    return lambda h: float(np.median(np.log2(np.unique(h["lr"].to_numpy(float)))))


def refuse_pooled(table: pd.DataFrame, cfg) -> None:
    """fit.lr_estimator=pooled chooses each size's LR on the arm's other swept sizes: with two
    swept sizes each learns from one other size (the power simulations: 51-72% coverage). Refused
    below three, naming the key and the sizes."""
    if cfg.lr_estimator != "pooled" or table.empty:
        return
    from analysis.config import FitConfigError

    ok = (table["status"] == "FINISHED") & np.isfinite(table["lr"].to_numpy(float))
    n_lr = table[ok].groupby(["family", "arm", "size"])["lr"].nunique()
    swept = n_lr[n_lr >= 2].reset_index()
    for (fam, arm), g in swept.groupby(["family", "arm"], sort=True):
        if len(g) < 3:
            raise FitConfigError(
                f"fit.lr_estimator=pooled: {fam} {arm} sweeps LR at {len(g)} size(s) "
                f"({', '.join(map(str, g['size']))}); pooled chooses each size's LR on the "
                "arm's other swept sizes and needs 3 or more: use fit.lr_estimator=mean, or "
                "sweep more sizes (grid.lr_sizes)")


def unswept_miss(groups: np.ndarray, unswept: np.ndarray, sd: float, n_rep: int,
                 rng: np.random.Generator, m: int | None = None) -> np.ndarray:
    """((M,) n_rep, n) factors 1 + sd z', one z' per unswept group and replicate (1 elsewhere):
    a zero-mean miss of the LR rule shared by a group's seeds."""
    shape = (n_rep,) if m is None else (m, n_rep)
    out = np.ones(shape + (len(groups),))
    for g in np.unique(groups[unswept]):
        cols = np.flatnonzero(groups == g)
        out[..., cols] = 1.0 + sd * rng.standard_normal(shape + (1,))
    return out
