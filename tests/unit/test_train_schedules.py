"""Schedules (cosine, WSD with linear / 1-sqrt cooldown, constant), WSD-S branch arithmetic, and
the rare-token buckets by frequency quantile."""

from __future__ import annotations

import math

import numpy as np
import pytest

from leviathan.training.evaluation import frequency_buckets
from leviathan.training.schedule import cooldown_steps, lr_at

KW = {"lr": 1e-3, "min_lr": 1e-4, "warmup_steps": 10, "total_steps": 100}


@pytest.mark.parametrize("shape", ["linear", "1-sqrt"])
def test_wsd_is_flat_then_decays_over_its_last_fraction(shape):
    lrs = [lr_at(s, schedule="wsd", cooldown_fraction=0.2, cooldown_shape=shape, **KW)
           for s in range(100)]
    assert lrs[9] == pytest.approx(1e-3) and all(x == pytest.approx(1e-3) for x in lrs[10:80])
    assert all(b < a for a, b in zip(lrs[79:], lrs[80:], strict=False))  # cooldown falls
    assert lrs[-1] == pytest.approx(1e-4)  # ends at the floor
    mid = lrs[89]  # half-way through the cooldown
    expected = 0.5 if shape == "linear" else 1 - math.sqrt(0.5)
    assert mid == pytest.approx(1e-4 + 9e-4 * expected)
    assert cooldown_steps(100, 0.2) == 20 and cooldown_steps(7, 0.1) == 1


def test_constant_is_the_stable_phase_of_every_wsd_branch():
    """A WSD-S main run (constant) and a branch that ends at S steps agree before the branch's
    cooldown, so the branch continues the main run exactly and only adds its decay."""
    for total in (60, 100, 250):
        start = total - cooldown_steps(total, 0.2)
        main = [lr_at(s, schedule="constant", **{**KW, "total_steps": 400}) for s in range(start)]
        branch = [lr_at(s, schedule="wsd", cooldown_fraction=0.2, **{**KW, "total_steps": total})
                  for s in range(start)]
        assert main == branch
        assert lr_at(start, schedule="wsd", cooldown_fraction=0.2,
                     **{**KW, "total_steps": total}) < 1e-3


def test_quantile_buckets_hold_equal_shares_of_the_validation_tokens():
    rng = np.random.default_rng(0)
    vocab = 5000
    # Zipf-like training frequencies (the top id holds ~6% of tokens), in random id order
    counts = rng.permutation((1e7 / np.arange(1, vocab + 1) ** 0.9).astype(np.int64))
    p = counts / counts.sum()
    targets = rng.choice(vocab, size=200_000, p=p)  # validation tokens from the same law
    b = frequency_buckets(counts, vocab, scheme="quantile", quantiles=10, targets=targets)
    assert b.names == [f"q{10 * i:02d}-{10 * (i + 1)}" if i else "q00-10" for i in range(10)]
    share = np.bincount(b.bucket_of_id.numpy()[targets], minlength=10) / len(targets)
    assert share.max() < 0.2 and share.min() > 0.05, share  # every bucket populated
    # rarer buckets hold rarer tokens: bucket index never falls as the training count rises
    order = np.argsort(counts, kind="stable")
    assert np.all(np.diff(b.bucket_of_id.numpy()[order]) >= 0)
    assert b.edges == sorted(b.edges)
    with pytest.raises(ValueError, match="validation targets"):
        frequency_buckets(counts, vocab, scheme="quantile")
