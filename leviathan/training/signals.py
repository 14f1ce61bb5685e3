"""Preemption signals: SIGTERM / SIGUSR1 (what SLURM sends before preemption or time-out) and
SIGUSR2 (submitit's default time-out/preemption signal, `--signal=USR2@<delay>`).

The handler only records the signal; the training loop checks the flag at the next optimizer
step boundary, where it agrees across ranks, writes a checkpoint and stops. Only then is any
handler that was installed before ours (e.g. submitit's checkpoint-and-requeue on USR2, which
then exits) called, so requeueing never races the checkpoint. Lightning's own SLURM
auto-requeue stays off.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Iterable

log = logging.getLogger(__name__)

# SIGINT too: Ctrl-C checkpoints and stops at the next step; a second Ctrl-C aborts at once.
DEFAULT_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT)
# Rehearsing a preemption: LEVIATHAN_REHEARSE_PREEMPTION=<run key>@<step> makes the first
# attempt of that run wait at that step boundary until a preemption signal comes (`scontrol
# requeue`, `scancel --signal=USR2`, Ctrl-C), which it then handles as usual. Tests use it to
# requeue a real job mid-run without racing its end; cluster engineers can use it to try
# requeueing by hand.
REHEARSE_PREEMPTION_ENV = "LEVIATHAN_REHEARSE_PREEMPTION"
REHEARSAL_MAX_S = 3600.0  # a forgotten rehearsal stops waiting after an hour


def rehearsal_step(run_key: str) -> int | None:
    """The step at which this run's first attempt waits for a preemption signal
    ($LEVIATHAN_REHEARSE_PREEMPTION=<run key>@<step>), or None."""
    key, _, step = os.environ.get(REHEARSE_PREEMPTION_ENV, "").rpartition("@")
    return int(step) if key == run_key and step.isdigit() else None


class Preempted(SystemExit):
    """Raised by train() after the preemption checkpoint is safely on disk (exit code 128+sig)."""

    def __init__(self, signum: int, step: int, checkpoint: str) -> None:
        super().__init__(128 + signum)
        self.signum, self.step, self.checkpoint = signum, step, checkpoint

    def __str__(self) -> str:
        return (f"preempted by {signal.Signals(self.signum).name} at step {self.step}; "
                f"checkpoint {self.checkpoint}")


class PreemptionFlag:
    """Install handlers that record the first preemption signal; restore them on `uninstall`."""

    def __init__(self, signals: Iterable[int] = DEFAULT_SIGNALS) -> None:
        self.signals = tuple(signals)
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def install(self) -> PreemptionFlag:
        if threading.current_thread() is not threading.main_thread():
            log.warning("not on the main thread: preemption signals are not handled")
            return self
        for sig in self.signals:
            self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handle)
        return self

    def reinstall(self) -> None:
        """Take the signals back (Lightning installs its own SIGTERM handler at fit start)."""
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                if signal.getsignal(sig) is not self._handle:
                    signal.signal(sig, self._handle)

    def wait_for_preemption(self, step: int, max_s: float = REHEARSAL_MAX_S) -> None:
        """Wait at this step boundary until a preemption signal is received (a rehearsal:
        $LEVIATHAN_REHEARSE_PREEMPTION)."""
        log.warning("%s: holding at step %d until a preemption signal", REHEARSE_PREEMPTION_ENV,
                    step)
        log.info(f"holding at step {step} until a preemption signal "
                 f"({REHEARSE_PREEMPTION_ENV})")  # stdout
        end = time.monotonic() + max_s
        while self.received is None and time.monotonic() < end:
            time.sleep(0.05)

    def _handle(self, signum, frame) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # asked twice: stop now, keep the last checkpoint
        if self.received is None:
            self.received = signum
            log.warning("received %s: checkpointing at the next step boundary",
                        signal.Signals(signum).name)

    def uninstall(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig, prev in self._previous.items():
            signal.signal(sig, prev if prev is not None else signal.SIG_DFL)
        # _previous stays: train() uninstalls first and then chains to the handler that was
        # there before (submitit's checkpoint-and-requeue), once the checkpoint is on disk

    def chain(self) -> None:
        """Call the handler that was installed before ours, if it was a Python callable."""
        if self.received is None:
            return
        prev = self._previous.get(self.received)
        if callable(prev) and prev is not signal.default_int_handler:  # that one only raises
            prev(self.received, None)
