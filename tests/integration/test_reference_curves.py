"""A stored reference loss curve for the debug model of each arm, trained by the real
LightningModule (loss, AdamW with the weight-decay rule by role, schedule, clipping) on fixed
synthetic token ids. A change that moves every arm alike (init, loss, optimizer, schedule, data
order) keeps the arms' comparison intact and so passes every A/B test; it does not pass this.

After an intended change, rewrite the reference and say why in the commit:
    .venv/bin/python tests/integration/test_reference_curves.py --write
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from helpers import TESTS

REFERENCE = TESTS / "data" / "reference_curves.json"
ARMS = {  # name -> model overrides on conf/model/debug.yaml
    "dense": {"arm": "dense", "head": "untied"},
    "dense_tied": {"arm": "dense", "head": "tied"},
    "leviathan": {"arm": "leviathan", "head": "untied"},
    "factorized": {"arm": "factorized", "head": "untied"},
}
STEPS, BATCH, SEQ, IDS = 30, 2, 16, 1000
TOLERANCE = 2e-3  # absolute, on a loss of 5-12 nats: far below what any real change moves


class FixedIds:
    """Batches of a fixed Markov chain over ids [0, IDS): next = perm[prev] with p = 0.7."""

    def __init__(self) -> None:
        self.n = 0

    def __iter__(self):
        while True:
            rng = np.random.default_rng([1234, self.n])
            perm = np.random.default_rng(99).permutation(IDS)
            out = np.empty((BATCH, SEQ + 1), np.int64)
            out[:, 0] = rng.integers(IDS, size=BATCH)
            for t in range(1, SEQ + 1):
                jump = rng.random(BATCH) < 0.3
                out[:, t] = np.where(jump, rng.integers(IDS, size=BATCH), perm[out[:, t - 1]])
            self.n += 1
            yield torch.from_numpy(out)  # (B, T + 1)

    def state_dict(self) -> dict:
        return {"n": self.n}

    def load_state_dict(self, state: dict) -> None:
        self.n = state["n"]


def curve(arm: str) -> list[float]:
    """Per-step training loss of the debug model of `arm` over STEPS optimizer steps."""
    import lightning as L

    from leviathan.config import compose
    from leviathan.models import build_model
    from leviathan.models.config import to_model_config
    from leviathan.training.batches import ResumableBatches
    from leviathan.training.config import trainer_config
    from leviathan.training.module import LanguageModelModule

    cfg = compose("train", ["model=debug", "trainer.lr=3e-3", "trainer.min_lr=3e-4",
                            "trainer.warmup_steps=4", f"trainer.max_steps={STEPS}",
                            f"trainer.global_batch={BATCH}", f"trainer.micro_batch={BATCH}"])
    mcfg = to_model_config(cfg.model).replace(**ARMS[arm])
    tc = trainer_config(cfg)
    torch.manual_seed(0)
    model = build_model(mcfg)
    plan = type("Plan", (), {"max_steps": STEPS, "warmup_steps": 4})()
    batches = ResumableBatches(FixedIds())
    module = LanguageModelModule(model, tc, plan, batches)
    losses: list[float] = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, *_):
            losses.append(pl_module.last["train/loss"])

    trainer = L.Trainer(max_steps=STEPS, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, accelerator="cpu", devices=1,
                        callbacks=[Record()])
    trainer.fit(module, train_dataloaders=batches)
    return losses


@pytest.mark.slow
@pytest.mark.parametrize("arm", list(ARMS))
def test_loss_curve_matches_the_reference(arm):
    want = json.loads(REFERENCE.read_text())[arm]
    got = curve(arm)
    assert len(got) == len(want) == STEPS
    worst = max(range(STEPS), key=lambda i: abs(got[i] - want[i]))
    assert abs(got[worst] - want[worst]) <= TOLERANCE, (
        f"{arm}: step {worst + 1} loss {got[worst]:.5f}, reference {want[worst]:.5f}: if the "
        f"change is intended, rewrite the reference ({__doc__.splitlines()[-1].strip()})")
    assert got[-1] < got[0] - 0.1  # it learns (the chain is predictable)


if __name__ == "__main__" and "--write" in sys.argv:
    REFERENCE.parent.mkdir(exist_ok=True)
    REFERENCE.write_text(json.dumps({a: [round(x, 6) for x in curve(a)] for a in ARMS},
                                    indent=1) + "\n")
    print(f"wrote {REFERENCE}")
