"""LeviathanLM: lm-evaluation-harness's `LM` API over our LanguageModel (both arms).

Scores are log-probabilities under the model's distribution over the tokenizer's ids (the
logits of the padded vocabulary rows past `encoding.n_vocab` are dropped before the softmax:
no text can produce those ids). Requests are tokenized with tiktoken's `encode_ordinary`
(text is text: "<|endoftext|>" inside a document is not the special token), and an empty
context is the end-of-text token, which is also what precedes every document in training.

Batches are sorted by length and right-padded (causal attention: padding never reaches a real
position). The head runs only on the positions that are scored, in chunks, so a 200k-column
vocabulary costs memory per scored token, not per input token. In eval mode without autograd a
Leviathan model looks rows up in its materialised LEV table (computed once, cached).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from lm_eval.api.model import LM
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from leviathan.eval.config import EvalConfigError

LOGIT_ROWS = 512  # scored positions per head/softmax chunk (512 x 200k fp32 = 410 MB)


@dataclass
class _Item:
    index: int  # position in the request list
    tokens: list[int]  # model input (<= max_length ids)
    targets: list[int]  # the last len(targets) input positions predict these


class LeviathanLM(LM):
    """`model`: a LanguageModel; `encoding`: its tiktoken Encoding."""

    def __init__(self, model: torch.nn.Module, encoding, *, device: str = "cpu",
                 batch_size: int = 16, max_length: int | None = None,
                 precision: str = "auto") -> None:
        super().__init__()
        self._device = torch.device(device)
        if next(model.parameters()).device != self._device:
            model = model.to(self._device)  # (moving drops a cached LEV table)
        self.model = model.eval()
        self.enc = encoding
        self.eot = encoding.eot_token
        self.n_vocab = encoding.n_vocab
        self.batch_size = int(batch_size)
        self.max_length = int(max_length or model.cfg.max_seq_len)
        if self.max_length > model.cfg.max_seq_len:
            raise EvalConfigError(f"eval.max_length={self.max_length} exceeds the model's "
                             f"max_seq_len={model.cfg.max_seq_len}")
        if self.n_vocab > model.cfg.padded_vocab:
            raise EvalConfigError(f"tokenizer has {self.n_vocab} ids, the model only "
                             f"{model.cfg.padded_vocab}: wrong data.tokenizer in config.yaml?")
        bf16 = precision == "bf16" or (precision == "auto" and self._device.type == "cuda")
        self.autocast_dtype = torch.bfloat16 if bf16 else None

    @classmethod
    def from_run(cls, target, *, device: str = "cpu", tracking_uri: str | None = None,
                 **kw) -> LeviathanLM:
        """The adapter for a run folder, checkpoint file or MLflow run id."""
        from leviathan.data.tokenizer import get_encoding
        from leviathan.eval.checkpoint import load_model, locate, tokenizer_name

        files = locate(target, tracking_uri=tracking_uri)
        model, step = load_model(files, device=device)
        lm = cls(model, get_encoding(tokenizer_name(files)), device=device, **kw)
        lm.files, lm.step = files, step
        return lm

    # ------------------------------------------------------------------ tokenization
    def tok_encode(self, text: str) -> list[int]:
        return self.enc.encode_ordinary(text)

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """(context ids, continuation ids): trailing whitespace of the context moves to the
        continuation, whose ids are the whole text's ids past the context's (as HFLM does)."""
        if context == "":
            return [self.eot], self.tok_encode(continuation)
        n = len(context) - len(context.rstrip())
        if n:
            context, continuation = context[:-n], context[-n:] + continuation
        whole = self.tok_encode(context + continuation)
        ctx = self.tok_encode(context)
        cont = whole[len(ctx):]  # lm-eval's HFLM convention
        return ctx, cont or self.tok_encode(continuation)

    # ------------------------------------------------------------------ harness API
    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        pairs = [self.encode_pair(*req.args) for req in requests]
        return self.score_pairs(pairs)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Sum of log p over every token of each text, in windows of max_length tokens (the
        first token is predicted from end-of-text)."""
        windows, owner = [], []
        for i, req in enumerate(requests):
            tokens = self.tok_encode(req.args[0])
            for w in get_rolling_token_windows(token_list=tokens, prefix_token=self.eot,
                                               max_seq_len=self.max_length, context_len=1):
                windows.append(make_disjoint_window(w))
                owner.append(i)
        out = [0.0] * len(requests)
        for i, (lp, _) in zip(owner, self.score_pairs(windows), strict=True):
            out[i] += lp
        return out

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        raise NotImplementedError(
            "LeviathanLM scores text (loglikelihood, loglikelihood_rolling, multiple_choice "
            "tasks); generation tasks (output_type: generate_until) are not supported: remove "
            "them from eval.tasks")

    # ------------------------------------------------------------------ scoring
    def score_pairs(self, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """For (context ids, continuation ids) pairs: (sum of log p(continuation | context),
        whether every continuation token is the argmax). Contexts are cut from the left to fit
        max_length; a continuation must fit on its own."""
        items = []
        for i, (ctx, cont) in enumerate(pairs):
            if not cont:
                raise ValueError(f"request {i}: empty continuation")
            if len(cont) > self.max_length:
                raise ValueError(f"request {i}: continuation of {len(cont)} tokens exceeds "
                                 f"max_length={self.max_length}")
            if not ctx:
                ctx = [self.eot]
            whole = (ctx + cont)[-(self.max_length + 1):]
            items.append(_Item(i, whole[:-1], cont))
        results: list[tuple[float, bool] | None] = [None] * len(items)
        order = sorted(items, key=lambda it: (-len(it.tokens), it.index))
        for b in range(0, len(order), self.batch_size):
            for it, res in zip(order[b:b + self.batch_size],
                               self._score_batch(order[b:b + self.batch_size]), strict=True):
                results[it.index] = res
        return results  # type: ignore[return-value]

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self._device.type, dtype=self.autocast_dtype)

    @torch.no_grad()
    def hidden(self, idx: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, T, D) final-normed
        return self.model.hidden(idx)  # Leviathan in eval mode: rows of the cached LEV table

    @torch.no_grad()
    def _score_batch(self, batch: list[_Item]) -> list[tuple[float, bool]]:
        T = max(len(it.tokens) for it in batch)
        idx = torch.zeros(len(batch), T, dtype=torch.long)  # (B, T), right-padded
        rows, cols, tgts = [], [], []
        for r, it in enumerate(batch):
            n = len(it.tokens)
            idx[r, :n] = torch.tensor(it.tokens)
            k = len(it.targets)
            rows += [r] * k
            cols += range(n - k, n)
            tgts += it.targets
        idx = idx.to(self._device)
        with self._autocast():
            at = (torch.tensor(rows, device=self._device), torch.tensor(cols, device=self._device))
            h = self.hidden(idx)[at]  # (N, D): the scored positions only
            lps, greedy = [], []
            targets = torch.tensor(tgts, device=self._device)
            for s in range(0, h.shape[0], LOGIT_ROWS):
                logits = self.model.logits(h[s:s + LOGIT_ROWS])[:, :self.n_vocab].float()
                t = targets[s:s + LOGIT_ROWS]  # (n,)
                lps.append(F.log_softmax(logits, -1).gather(1, t[:, None])[:, 0])
                greedy.append(logits.argmax(-1) == t)
        lp = torch.cat(lps).double().cpu()
        gr = torch.cat(greedy).cpu()
        out, s = [], 0
        for it in batch:
            k = len(it.targets)
            out.append((float(lp[s:s + k].sum()), bool(gr[s:s + k].all())))
            s += k
        return out
