"""Preemption signals: SIGTERM / SIGUSR1 (what SLURM sends before preemption or time-out) and
SIGUSR2 (submitit's default time-out/preemption signal, `--signal=USR2@<delay>`).

Once training runs, the handler only records the signal; the training loop checks the flag at
the next optimizer step boundary, where it agrees across ranks, writes a checkpoint and stops.
Only then is any handler that was installed before ours (e.g. submitit's checkpoint-and-requeue
on USR2, which then exits) called, so requeueing never races the checkpoint. Lightning's own
SLURM auto-requeue stays off.

Before the first step (start-up: Lightning's setup, the ranks' rendezvous, the restore) there is
nothing new to checkpoint, so a signal stops the process at once: one line, the handler that was
there before (submitit's requeue on USR2), exit status 128 + signal. A rank waiting for its peers
sits in torch's C++ rendezvous, where no Python handler runs until it returns (minutes, up to
trainer.ddp_timeout_s); so while starting, a thread also watches the signals (Python's wakeup
fd) and ends the process itself when the main thread has not acted within `startup_grace_s`.
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


class StartupInterrupted(SystemExit):
    """A preemption signal before the first training step: the process stops at once (exit
    status 128 + signal); the last checkpoint, if any, is where the next attempt resumes."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum

    def __str__(self) -> str:
        return (f"stopped by {signal.Signals(self.signum).name} while starting (before the "
                "first training step)")


class PreemptionFlag:
    """Install handlers that record the first preemption signal; restore them on `uninstall`.

    `starting=True` (a run installs it before fit): until `reinstall()` (fit start) a signal
    stops the process instead (module docstring)."""

    def __init__(self, signals: Iterable[int] = DEFAULT_SIGNALS, starting: bool = False,
                 startup_grace_s: float = 3.0) -> None:
        self.signals = tuple(signals)
        self.received: int | None = None
        self.training = not starting  # set at fit start: from then on, a signal waits for a step
        self.startup_grace_s = startup_grace_s
        self._previous: dict[int, object] = {}
        self._claimed = threading.Event()  # the start-up stop was taken (main thread or watcher)
        self._watch: tuple[int, int, int] | None = None  # (read fd, write fd, previous wakeup fd)

    def install(self) -> PreemptionFlag:
        if threading.current_thread() is not threading.main_thread():
            log.warning("not on the main thread: preemption signals are not handled")
            return self
        for sig in self.signals:
            self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handle)
        self._start_watching()
        return self

    def reinstall(self) -> None:
        """Fit has started (Lightning's on_train_start: the ranks have met, any checkpoint is
        restored): from now on a signal is handled at the next step boundary. Take the signals
        back (Lightning installs its own SIGTERM handler at fit start)."""
        self.training = True
        if threading.current_thread() is threading.main_thread():
            self._stop_watching()
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
        if not self.training:
            self._stop_starting(signum)
            return
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # asked twice: stop now, keep the last checkpoint
        if self.received is None:
            self.received = signum
            log.warning("received %s: checkpointing at the next step boundary",
                        signal.Signals(signum).name)

    def uninstall(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        self._stop_watching()
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

    # --------------------------------------------------------------- start-up
    def _stop_starting(self, signum: int) -> None:
        """In the main thread: a signal before the first step stops the process now."""
        if self._claimed.is_set():
            return  # the watcher is ending the process
        self._claimed.set()
        self.received = self.received or signum
        log.warning("received %s while starting (before the first training step): stopping",
                    signal.Signals(signum).name)
        self.uninstall()
        self.chain()  # submitit on USR2: requeue (rank 0), then exit
        raise StartupInterrupted(signum)

    def _start_watching(self) -> None:
        if self._watch is not None or self.training:
            return
        r, w = os.pipe()
        os.set_blocking(w, False)
        try:
            previous = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        except ValueError:  # not the main thread of the main interpreter
            os.close(r)
            os.close(w)
            return
        self._watch = (r, w, previous)
        threading.Thread(target=self._watcher, args=(r,), name="preemption-startup",
                         daemon=True).start()

    def _stop_watching(self) -> None:
        if self._watch is None:
            return
        r, w, previous = self._watch
        self._watch = None
        signal.set_wakeup_fd(previous)
        os.close(w)  # the watcher reads end of file and closes its end

    def _watcher(self, r: int) -> None:
        """Python's C-level handler writes each caught signal's number to the wakeup fd even
        while the main thread is stuck in C++; give the main thread `startup_grace_s` to stop
        the run itself, else end the process here."""
        try:
            while data := os.read(r, 64):
                for signum in data:
                    if signum in self.signals and not self.training:
                        self._stop_from_watcher(signum)
        finally:
            os.close(r)

    def _stop_from_watcher(self, signum: int) -> None:
        if self._claimed.wait(self.startup_grace_s) or self.training:
            return  # the main thread took it (and is unwinding), or training began
        self._claimed.set()
        self.received = self.received or signum
        name = signal.Signals(signum).name
        log.error(f"received {name} while starting (before the first training step) and still "
                  f"blocked {self.startup_grace_s:.0f} s later (waiting for the other ranks?): "
                  f"exiting with status {128 + signum}")
        try:
            self.chain()  # submitit on USR2: requeue (rank 0); its exit is ours below
        except BaseException as e:  # noqa: BLE001 - the process ends just below either way
            if not isinstance(e, SystemExit):
                log.error(f"the previous {name} handler failed: {type(e).__name__}: {e}")
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(128 + signum)
