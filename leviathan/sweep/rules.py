"""The ladder's rules, applied to each run when a sweep is planned (OLMo-core's model ladder):

- learning rate and warm-up as functions of the run's size (`grid.lr_rule`), times the grid's
  LR variants (`grid.lr`), so every arm gets its own tuned LR from the same sweep;
- WSD-S (`grid.cooldowns`): one constant-LR main run and, per listed multiple m of the token
  budget D, a branch that starts from the main run's checkpoint at step S_m - c_m and decays
  over c_m = cooldown_fraction x S_m steps to reach S_m = ceil(m D / tokens per step);
- matched pairs differ in the model only: `check_pairs` names the first other key that differs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from leviathan.sweep.grid import GridError, LRRule

# keys that may differ between the arms of a matched pair: the model, run bookkeeping, each
# run's own tuned LR and its size-derived warm-up, and settings that change speed, not maths
PAIR_FREE = ("model", "meta", "run_name", "resume", "tracking", "paths", "trainer.lr",
             "trainer.min_lr", "trainer.warmup_steps", "trainer.micro_batch",
             "trainer.val_micro_batch", "trainer.compile", "trainer.peak_flops",
             "trainer.init_from", "trainer.log_every", "trainer.ckpt_every")


def rule_lr(rule: LRRule, n_body: float) -> float:
    """lr_rule's learning rate for a model with `n_body` body parameters."""
    return rule.lr * (n_body / rule.params) ** rule.exponent


def lr_settings(rule: LRRule | None, scale: float, n_body: int, tokens_per_step: int,
                trainer: Any) -> dict[str, Any]:
    """trainer.lr / min_lr (the same floor ratio as configured) and, with a rule, warmup_steps
    for one run: the rule's LR for the run's own body size (else trainer.lr) x `scale`."""
    base = rule_lr(rule, n_body) if rule is not None else float(trainer.lr)
    ratio = float(trainer.min_lr) / float(trainer.lr)
    out: dict[str, Any] = {"trainer.lr": base * scale, "trainer.min_lr": base * scale * ratio}
    if rule is not None:
        out["trainer.warmup_steps"] = math.ceil(rule.warmup_tokens_per_param * n_body
                                                / tokens_per_step)
    return out


@dataclass(frozen=True)
class Branch:
    multiple: float  # of the token budget
    total_steps: int  # S_m: the branch ends here, cooled down
    start_step: int  # S_m - c_m: the main run's snapshot the branch starts from

    @property
    def cooldown_steps(self) -> int:
        return self.total_steps - self.start_step


def branches(budget_tokens: int, tokens_per_step: int, multiples: list[float],
             fraction: float, warmup_steps: int) -> list[Branch]:
    """The cooldown branches of one main run, smallest first; each must start after warm-up."""
    from leviathan.training.schedule import cooldown_steps

    out = []
    for m in sorted(multiples):
        total = max(1, math.ceil(m * budget_tokens / tokens_per_step))
        start = total - cooldown_steps(total, fraction)
        if start <= warmup_steps:
            raise GridError(f"grid.cooldowns: the {m:g}x branch ({total} steps, cooldown from "
                            f"step {start}) would start inside the {warmup_steps}-step warm-up; "
                            "use larger multiples or a larger token budget")
        out.append(Branch(float(m), total, start))
    return out


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _free(key: str) -> bool:
    return any(key == f or key.startswith(f + ".") for f in PAIR_FREE)


def check_pairs(runs: list[Any]) -> None:
    """Every run of a pair (same pair id and cooldown multiple) has the same configuration
    except the model and PAIR_FREE keys: the same data, sequence length, batch, token budget,
    world size and workers, optimizer rules and schedule. Raises GridError naming the key."""
    check_budgets(runs)
    groups: dict[tuple, list[Any]] = {}
    for r in runs:
        groups.setdefault((r.pair, r.cooldown), []).append(r)
    for (pair, _), members in groups.items():
        ref = members[0]
        ref_flat = {k: v for k, v in flatten(ref.config).items() if not _free(k)}
        for other in members[1:]:
            flat = {k: v for k, v in flatten(other.config).items() if not _free(k)}
            for key in sorted(set(ref_flat) | set(flat)):
                a, b = ref_flat.get(key, "<absent>"), flat.get(key, "<absent>")
                if a != b:
                    raise GridError(
                        f"grid.arms: pair {pair}: {ref.run} ({ref.arm}) and {other.run} "
                        f"({other.arm}) differ in {key} ({a!r} vs {b!r}); the runs of a matched "
                        "pair may differ in the model (and their own LR) only")


def check_budgets(runs: list[Any]) -> None:
    """Every run of one (size, budget multiple, cooldown branch), whatever its arm, seed or
    LR, trains on the same tokens: its seeds are pooled as replicates of one point and its arms
    compared at one budget. Raises GridError naming two runs that differ."""
    first: dict[tuple, Any] = {}
    for r in runs:
        point = (r.pair.rsplit("-s", 1)[0], r.cooldown)  # pair = <size>-<budget>-s<seed>
        ref = first.setdefault(point, r)
        if r.tokens != ref.tokens:
            raise GridError(
                f"grid.seeds_by_arm: {ref.run} ({ref.arm}, seed {ref.seed}) trains on "
                f"{ref.tokens:,} tokens and {r.run} ({r.arm}, seed {r.seed}) on {r.tokens:,}: "
                f"every run of {point[0]} must train on its Dense budget (seeds of one size and "
                "budget are pooled as replicates)")
