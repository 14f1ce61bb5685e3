"""The run's Lightning strategy when it has several ranks: Lightning's own (DDP by default),
given `trainer.ddp_timeout_s` and one clear line when the ranks cannot meet.

`trainer.ddp_timeout_s` goes to the strategy's `timeout`, which Lightning passes to
`torch.distributed.init_process_group`: it bounds the rendezvous (a rank connecting to
MASTER_ADDR:MASTER_PORT, rank 0 waiting for the others) and every collective after it. A rank
that cannot reach its peers within it raises RendezvousError naming itself, the address and the
key, in place of torch's DistNetworkError / DistStoreError (or Gloo's connectFullMesh) traceback.
Written here by hand: the strategy class is Lightning's, with one method wrapped
(`setup_distributed`, where DDP and DeepSpeed initialise the process group; FSDP does it inline
in `setup_environment`, so it gets the timeout and torch's own message).
"""

from __future__ import annotations

import inspect
import os
from datetime import timedelta
from typing import Any

from leviathan.errors import LeviathanError


class RendezvousError(LeviathanError, RuntimeError):
    """The ranks of a run did not all meet within trainer.ddp_timeout_s."""


def rendezvous_message(rank: int, world_size: int, timeout_s: float, error: BaseException) -> str:
    addr = os.environ.get("MASTER_ADDR", "?")
    port = os.environ.get("MASTER_PORT", "?")
    first = (str(error).strip().splitlines() or [""])[0]
    return (f"rank {rank} of {world_size} could not meet its peers at {addr}:{port} within "
            f"trainer.ddp_timeout_s={timeout_s:g} ({type(error).__name__}: {first}); check that "
            f"every task started, that {addr} reaches rank 0's node from every node, and (a host "
            "name resolving to a loopback address) the interface Gloo/NCCL use: "
            "GLOO_SOCKET_IFNAME, NCCL_SOCKET_IFNAME")


class _NamesRendezvousFailure:
    """Mixed in before the Lightning strategy class: an error while it sets up the process group
    (`setup_distributed`: torch's store rendezvous, then Gloo's or NCCL's connections between
    the ranks) becomes RendezvousError (one line)."""

    _leviathan_timeout_s: float = 0.0

    def setup_distributed(self) -> None:
        try:
            super().setup_distributed()  # type: ignore[misc]
        except RuntimeError as e:  # torch's DistError, Gloo's "connectFullMesh failed", ...
            raise RendezvousError(rendezvous_message(
                self.global_rank, self.world_size, self._leviathan_timeout_s, e)) from e


def strategy(tc: Any) -> Any:
    """What build_trainer passes as `strategy=`: the config's name unchanged for one rank (or a
    name Lightning does not register: it names that error itself), else an instance of the
    registered class with the registry's arguments, `timeout` and the clear rendezvous line."""
    name = "ddp" if tc.strategy == "auto" and tc.world_size > 1 else tc.strategy
    if tc.world_size == 1:
        return name
    from lightning.pytorch.strategies import StrategyRegistry

    if name not in StrategyRegistry:
        return name
    entry = StrategyRegistry[name]
    cls, params = entry["strategy"], dict(entry["init_params"])
    if "timeout" in inspect.signature(cls.__init__).parameters:
        params["timeout"] = timedelta(seconds=float(tc.ddp_timeout_s))
    timed = type(cls.__name__, (_NamesRendezvousFailure, cls),
                 {"_leviathan_timeout_s": float(tc.ddp_timeout_s), "__module__": __name__})
    return timed(**params)
