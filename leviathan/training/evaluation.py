"""Validation on the fixed held-out set, with the rare-token metric.

Token ids are put in buckets by how often they occur in the training split (counted in both
data modes: leviathan.data.frequencies), and the validation loss is averaged per bucket of the
*target* token (val/loss_freq/<bucket>):
- `quantile` (default): ids ranked from rarest to most frequent, cut so that each bucket holds
  an equal share of the validation tokens: q00-10 is the rarest tenth of what the model is
  asked to predict, q90-100 the most frequent (every bucket is populated by construction);
- `log`: bucket "0" holds ids never seen, "b^(i-1)-b^i" ids seen [b^(i-1), b^i) times.
Under DDP each rank evaluates a disjoint share of the batches and the sums are all-reduced.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class FreqBuckets:
    names: list[str]  # bucket names as logged: "0", "1e0-1e1", ...
    edges: list[float]  # lower count edge of each bucket (0, 1, b, b^2, ...)
    bucket_of_id: torch.Tensor  # (V_pad,) long: bucket index of every token id
    ids_per_bucket: list[int]  # vocabulary ids in each bucket

    def as_dict(self) -> dict:
        return {"names": self.names, "lower_count_edges": self.edges,
                "ids_per_bucket": self.ids_per_bucket}


def _fmt(x: float, base: float) -> str:
    if base == 10:
        return f"1e{round(math.log10(x))}"
    return f"{x:g}"


def frequency_buckets(counts: np.ndarray | None, vocab: int, base: float = 10.0, *,
                      scheme: str = "log", quantiles: int = 10,
                      targets: np.ndarray | None = None) -> FreqBuckets | None:
    """Buckets over ids [0, vocab) from training counts (ids beyond `counts` count as 0);
    `scheme="quantile"` needs the validation `targets` (token ids) to cut equal shares."""
    if counts is None:
        return None
    c = np.zeros(vocab, dtype=np.int64)
    n = min(vocab, len(counts))
    c[:n] = counts[:n]
    if scheme == "quantile":
        return _quantile_buckets(c, quantiles, targets)
    top = max(1, int(c.max()))
    n_pos = int(math.floor(math.log(top, base) + 1e-9)) + 1  # buckets for counts >= 1
    idx = np.zeros(vocab, dtype=np.int64)
    pos = c > 0
    idx[pos] = np.floor(np.log(c[pos]) / math.log(base) + 1e-9).astype(np.int64) + 1
    idx = np.minimum(idx, n_pos)
    names = ["0"] + [f"{_fmt(base ** i, base)}-{_fmt(base ** (i + 1), base)}"
                     for i in range(n_pos)]
    edges = [0.0] + [float(base ** i) for i in range(n_pos)]
    per = np.bincount(idx, minlength=n_pos + 1).tolist()
    return FreqBuckets(names=names, edges=edges, bucket_of_id=torch.from_numpy(idx),
                       ids_per_bucket=per)


def _quantile_buckets(c: np.ndarray, q: int, targets: np.ndarray | None) -> FreqBuckets:
    vocab = len(c)
    if targets is None or len(targets) == 0:
        raise ValueError("quantile frequency buckets need the validation targets")
    mass = np.bincount(np.asarray(targets, dtype=np.int64), minlength=vocab)[:vocab]
    order = np.lexsort((np.arange(vocab), c))  # rarest first; ties by id
    share_before = (np.cumsum(mass[order]) - mass[order]) / mass.sum()  # rarer mass, in [0, 1)
    idx = np.empty(vocab, dtype=np.int64)
    idx[order] = np.minimum((share_before * q + 1e-9).astype(np.int64), q - 1)
    names = [f"q{100 * i // q:02d}-{100 * (i + 1) // q:02d}" for i in range(q)]
    seen = mass > 0
    edges = [float(c[seen & (idx == i)].min()) if (seen & (idx == i)).any() else math.nan
             for i in range(q)]  # the smallest training count in each bucket
    per = np.bincount(idx, minlength=q).tolist()
    return FreqBuckets(names=names, edges=edges, bucket_of_id=torch.from_numpy(idx),
                       ids_per_bucket=per)


@torch.no_grad()
def evaluate(model: torch.nn.Module, batches: list[torch.Tensor], *, device: torch.device,
             buckets: FreqBuckets | None = None, rank: int = 0, world_size: int = 1,
             autocast_dtype: torch.dtype | None = None) -> dict[str, float]:
    """Mean token loss over `batches` (and per frequency bucket), summed over all ranks.

    Returns {"val/loss": ..., "val/loss_freq/<name>": ...}; buckets with no target are left out.
    """
    was_training = model.training
    model.eval()
    nb = len(buckets.names) if buckets is not None else 0
    loss_sum = torch.zeros(1 + nb, dtype=torch.float64, device=device)
    count = torch.zeros(1 + nb, dtype=torch.float64, device=device)
    bucket_of_id = buckets.bucket_of_id.to(device) if buckets is not None else None
    try:
        for batch in batches[rank::world_size]:
            batch = batch.to(device, non_blocking=True)
            x, y = batch[:, :-1], batch[:, 1:]  # (B, T), (B, T)
            with torch.autocast(device.type, dtype=autocast_dtype,
                                enabled=autocast_dtype is not None):
                logits = model(x)  # (B, T, V_pad)
            loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(),
                                   reduction="none").double()  # (B*T,)
            loss_sum[0] += loss.sum()
            count[0] += loss.numel()
            if bucket_of_id is not None:
                b = bucket_of_id[y.flatten()] + 1  # (B*T,) slots 1..nb
                loss_sum.index_add_(0, b, loss)
                count.index_add_(0, b, torch.ones_like(loss))
    finally:
        model.train(was_training)
    if world_size > 1 and torch.distributed.is_initialized():
        torch.distributed.all_reduce(loss_sum)
        torch.distributed.all_reduce(count)
    out = {"val/loss": (loss_sum[0] / count[0].clamp(min=1)).item(),
           "val/tokens_evaluated": count[0].item()}
    for i in range(nb):
        if count[1 + i] > 0:
            out[f"val/loss_freq/{buckets.names[i]}"] = (loss_sum[1 + i] / count[1 + i]).item()
    return out
