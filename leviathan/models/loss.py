"""The output head fused with the cross-entropy, chunked over tokens: the lean training loss.

    h (N, D), W (V_pad, D), y (N,) -> mean_i [ logsumexp_v (h_i . W_v) - h_i . W_{y_i} ]

The plain path, F.cross_entropy(F.linear(h, W), y), holds the (N, V_pad) logits, their
log-softmax and their gradient at once: at N = 8,192 tokens and V_pad = 200,376 each fp32 copy
is 6.6 GB. `linear_cross_entropy` computes the same mean loss `chunk` tokens at a time. For each
chunk it forms the logits, their log-sum-exp and, when a gradient is wanted, the gradient of the
mean loss with respect to those logits, (softmax - onehot(y)) / N, and turns it at once into the
chunk's rows of dL/dh and its share of dL/dW; then the chunk's logits are freed. Backward only
scales the stored gradients by the incoming one (1 / accumulation under Lightning).

Why the gradients are formed in the forward (as Liger's fused linear cross-entropy does) rather
than by recomputing each chunk's logits in backward (torch.utils.checkpoint per chunk): the
recomputation is a fourth V x D matmul per token on top of the three of the plain path;
`python -m leviathan.bench loss --variants plain,lean,recompute` measures the three.

Every logit column counts, the padded ids past the tokenizer's 200,019 included, exactly as in
the plain path. Precision: matmuls run in the autocast dtype when autocast is on (as nn.Linear
would), the log-sum-exp and softmax in fp32, dL/dW is accumulated over chunks in fp32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _logit_grad(z: torch.Tensor, yc: torch.Tensor, inv_n: float, dtype: torch.dtype
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """z (c, V) logits in the compute dtype -> (the chunk's summed loss, dL/dz in `dtype`):
    the same arithmetic as `_chunk`'s in-place eager steps (fp32 log-sum-exp and softmax,
    minus the one-hot, times 1/n), written out of place so that torch.compile fuses it into a
    few passes over the logits that never hold an fp32 copy of them (`fused=True`)."""
    z = z.float()
    target_logit = z.gather(1, yc[:, None])  # (c, 1)
    zmax = z.amax(1, keepdim=True)
    e = (z - zmax).exp()
    sumexp = e.sum(1, keepdim=True)
    loss = (zmax + sumexp.log() - target_logit).sum()
    p = e / sumexp
    cols = torch.arange(z.shape[1], device=z.device)
    g = torch.where(cols[None, :] == yc[:, None], p - 1.0, p) * inv_n
    return loss, g.to(dtype)


_fused_logit_grad = None  # torch.compile(_logit_grad), made on first use


def _compiled_logit_grad():
    global _fused_logit_grad
    if _fused_logit_grad is None:
        _fused_logit_grad = torch.compile(_logit_grad, dynamic=False)
    return _fused_logit_grad


def _chunk(hc: torch.Tensor, yc: torch.Tensor, w: torch.Tensor, n: int,
           dh: torch.Tensor | None, dw: torch.Tensor | None,
           fused: bool = False) -> torch.Tensor:
    """One chunk: returns its summed loss; writes its rows of dL/dh into dh, adds its share of
    dL/dW to dw (either may be None). Its logits die on return, before the next chunk's exist."""
    if fused and (dh is not None or dw is not None):
        loss, g = _compiled_logit_grad()(hc @ w.T, yc, 1.0 / n, w.dtype)
        return _apply_grad(g, hc, w, dh, dw, loss)
    z = (hc @ w.T).float()  # (c, V) logits; reused in place below
    target_logit = z.gather(1, yc[:, None])  # (c, 1)
    zmax = z.amax(1, keepdim=True)  # (c, 1)
    z.sub_(zmax).exp_()  # exp(z - max)
    sumexp = z.sum(1, keepdim=True)  # (c, 1)
    loss = (zmax + sumexp.log() - target_logit).sum()
    if dh is None and dw is None:
        return loss
    g = z.div_(sumexp)  # softmax (c, V)
    g.scatter_add_(1, yc[:, None], torch.full_like(target_logit, -1.0))  # - onehot(y)
    g = g.mul_(1.0 / n).to(w.dtype)  # dL/dz of the mean over all n tokens
    return _apply_grad(g, hc, w, dh, dw, loss)


def _apply_grad(g: torch.Tensor, hc: torch.Tensor, w: torch.Tensor, dh: torch.Tensor | None,
                dw: torch.Tensor | None, loss: torch.Tensor) -> torch.Tensor:
    if dh is not None:
        dh.copy_(g @ w)  # (c, D)
    if dw is not None:
        if dw.dtype == w.dtype:
            dw.addmm_(g.T, hc)  # (V, D) += (V, c) @ (c, D)
        else:
            dw += g.T @ hc  # bf16 product, accumulated in fp32
    return loss


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int,
                dtype: torch.dtype, grads: bool, fused: bool = False) -> torch.Tensor:
        n = h.shape[0]
        w = weight.to(dtype)  # (V, D) in the compute dtype
        dh = torch.empty_like(h) if grads and ctx.needs_input_grad[0] else None  # (N, D)
        acc = torch.promote_types(weight.dtype, torch.float32)  # dL/dW accumulates in >= fp32
        dw = (torch.zeros(weight.shape, dtype=acc, device=h.device)
              if grads and ctx.needs_input_grad[1] else None)  # (V, D)
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        for s in range(0, n, chunk):
            total += _chunk(h[s:s + chunk].to(dtype), targets[s:s + chunk], w, n,
                            None if dh is None else dh[s:s + chunk], dw, fused)
        ctx.dh, ctx.dw, ctx.weight_dtype = dh, dw, weight.dtype
        return total / n

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        dh, dw = ctx.dh, ctx.dw
        ctx.dh = ctx.dw = None  # one backward per forward; the buffers become the gradients
        if dh is not None:
            dh = dh.mul_(grad.to(dh.dtype))
        if dw is not None:
            dw = dw.mul_(grad.to(dw.dtype)).to(ctx.weight_dtype)
        return dh, dw, None, None, None, None, None


def linear_cross_entropy(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, *,
                         chunk: int = 1024, fused: bool = False) -> torch.Tensor:
    """Mean cross-entropy of the logits h @ weight^T against targets, `chunk` tokens at a time.

    h (..., D), weight (V, D), targets (...) long in [0, V) -> a scalar. Equal to
    `plain_cross_entropy` (fp32: to rounding) with the same gradients for h and weight, without
    ever holding more than (chunk, V) logits. `fused=True` (trainer.compile) runs each chunk's
    log-sum-exp and softmax gradient as one torch.compile'd function (`_logit_grad`): a few
    fused passes over the logits in their compute dtype instead of ~8 eager passes over an fp32
    copy (on a GPU the eager passes are memory-bound: bench gpu's profile of v1/421M).
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1 (trainer.loss_chunk), got {chunk}")
    h2, y = h.reshape(-1, h.shape[-1]), targets.reshape(-1)  # (N, D), (N,)
    dev = h.device.type
    if torch.is_autocast_enabled(dev):
        dtype = torch.get_autocast_dtype(dev)
    else:
        dtype = torch.promote_types(h.dtype, weight.dtype)
    grads = torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad)
    with torch.autocast(dev, enabled=False):
        return _LinearCrossEntropy.apply(h2, weight, y, chunk, dtype, grads, fused)


def plain_cross_entropy(h: torch.Tensor, weight: torch.Tensor,
                        targets: torch.Tensor) -> torch.Tensor:
    """The reference: all (N, V) logits at once, then F.cross_entropy in fp32."""
    logits = F.linear(h, weight)  # (..., V)
    return F.cross_entropy(logits.float().flatten(0, -2), targets.flatten())


def checkpointed_cross_entropy(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, *,
                               chunk: int = 1024) -> torch.Tensor:
    """The alternative measured by `bench loss`: each chunk under torch.utils.checkpoint, so its
    logits are recomputed in backward (4 V x D matmuls per token instead of 3)."""
    from torch.utils.checkpoint import checkpoint

    h2, y = h.reshape(-1, h.shape[-1]), targets.reshape(-1)
    n = h2.shape[0]

    def part(hc: torch.Tensor, yc: torch.Tensor) -> torch.Tensor:
        logits = F.linear(hc, weight).float()
        return F.cross_entropy(logits, yc, reduction="sum")

    total = sum(checkpoint(part, h2[s:s + chunk], y[s:s + chunk], use_reentrant=False)
                for s in range(0, n, chunk))
    return total / n
