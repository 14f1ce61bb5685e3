"""The streams inside a real Lightning fit: Lightning fetches one batch ahead; wrapped in
ResumableBatches (as training wraps them) whose position the module keeps in the checkpoint (as
the run's callback does, per rank), a resumed fit trains on exactly the batches an uninterrupted
fit would have. Lightning's own loader state is left out deliberately (it would restore the
writing rank's position on every rank)."""

from __future__ import annotations

import pytest
import torch
from helpers.corpora import write_corpus

from leviathan.data import build_train_stream


def _module(loader):
    import lightning as L

    class Recorder(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.seen: list[torch.Tensor] = []

        def training_step(self, batch, i):  # batch: (B, seq_len + 1)
            loader.consume(batch)
            self.seen.append(batch.clone())
            return (self.w * batch.float().mean()).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

        def on_save_checkpoint(self, checkpoint):
            checkpoint["data"] = loader.data_state()

        def on_load_checkpoint(self, checkpoint):  # before the fetcher's first batch
            loader.load_data_state(checkpoint["data"])

    return Recorder()


def _fit(stream, max_steps, root, ckpt_path=None, save=None):
    import lightning as L

    from leviathan.training.batches import ResumableBatches

    stream = ResumableBatches(stream)  # Lightning's fetcher prefetches one batch
    m = _module(stream)
    t = L.Trainer(max_steps=max_steps, logger=False, enable_checkpointing=False,
                  enable_progress_bar=False, enable_model_summary=False,
                  default_root_dir=root, accelerator="cpu", devices=1)
    t.fit(m, train_dataloaders=stream, ckpt_path=ckpt_path)
    if save:
        t.save_checkpoint(save)
    return m.seen


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["stream", "prepared"])
def test_lightning_checkpoint_resume_is_exact(tmp_path, mode):
    write_corpus(tmp_path / "c", n_docs=60, n_shards=3)
    cfg = dict(path=str(tmp_path / "c"), mode=mode, prepared_dir=str(tmp_path / "p"),
               auto_prepare=True, seq_len=15, shuffle_buffer=8, val_fraction=0.1)
    ref = _fit(build_train_stream(cfg, batch_size=2), 8, tmp_path / "a")
    first = _fit(build_train_stream(cfg, batch_size=2), 3, tmp_path / "b",
                 save=tmp_path / "x.ckpt")
    ckpt = torch.load(tmp_path / "x.ckpt", weights_only=False)
    assert not ckpt["loops"]["fit_loop"]["state_dict"].get("combined_loader")  # not Lightning's
    state = ckpt["data"]
    # the stream has yielded 4 (one fetched ahead); the wrapper holds the one not trained on
    assert state["stream"]["batches"] == 4 and len(state["pending"]) == 1
    rest = _fit(build_train_stream(cfg, batch_size=2), 8, tmp_path / "b",
                ckpt_path=tmp_path / "x.ckpt")
    assert len(ref) == 8 and len(first) == 3 and len(rest) == 5
    assert all(torch.equal(a, b) for a, b in zip(first + rest, ref, strict=True))
