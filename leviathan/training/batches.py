"""The training stream as Lightning sees it, with a state that is exact at any step boundary.

Lightning's fetcher pulls a batch ahead of the one being trained on, so the data stream's own
state runs ahead of training. `ResumableBatches` keeps the batches it handed out that no
training step has consumed yet; its state is the stream's state plus those pending batches
(a few micro-batches of token ids), and after `load_data_state` they are handed out first.
Restoring therefore continues with exactly the batch the interrupted run would have trained on
next, without asking the stream for a state at every step.

The state is deliberately *not* Lightning's (the methods are `data_state` / `load_data_state`,
not `state_dict`): Lightning saves a stateful train loader's state from the rank that writes
the checkpoint and restores it on every rank, so with more than one rank every rank would
resume at rank 0's position. Each rank's state travels in the run's callback instead
(training/callbacks.py: gathered from every rank, restored by each rank from its own entry).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any

import torch


class ResumableBatches:
    """Wrap a stream (iterable with state_dict/load_state_dict) of (B, T+1) micro-batches."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self._it: Iterator[torch.Tensor] | None = None
        self._pending: deque[torch.Tensor] = deque()  # handed out, not yet trained on
        self.consumed = 0  # micro-batches trained on (over all resumes)

    def __iter__(self) -> Iterator[torch.Tensor]:
        # A fresh iterator first re-yields what an abandoned one handed out but nobody trained
        # on (Lightning may call iter() more than once), then continues the stream.
        replay = list(self._pending)
        self._pending.clear()
        for b in replay:
            self._pending.append(b)
            yield b
        if self._it is None:
            self._it = iter(self.stream)
        for b in self._it:
            self._pending.append(b)
            yield b

    def consume(self, batch: torch.Tensor | None = None) -> None:
        """Called by the training step for every micro-batch it trains on, in order."""
        if not self._pending:
            raise RuntimeError("training consumed a batch that the stream never handed out")
        head = self._pending.popleft()
        if batch is not None and batch.shape != head.shape:
            raise RuntimeError(f"batch order broken: trained on {tuple(batch.shape)}, expected "
                               f"{tuple(head.shape)}")
        self.consumed += 1

    def data_state(self) -> dict:
        """This rank's position: the stream's state and the batches handed out, not trained on."""
        return {"stream": self.stream.state_dict(),
                "pending": [b.clone() for b in self._pending],
                "consumed": self.consumed}

    def load_data_state(self, state: dict) -> None:
        self.stream.load_state_dict(state["stream"])
        self._pending = deque(state["pending"])
        self.consumed = int(state["consumed"])
        self._it = None

    @property
    def stats(self):  # skipped-record statistics of the underlying stream
        return getattr(self.stream, "stats", None)
