"""One logging setup for every entry point: module loggers, plain messages, rank zero only.

Modules log through `log = logging.getLogger(__name__)`; each CLI's `main` (and a sweep job's
entry) calls `setup_logging()` once. Our records (leviathan, analysis, a `python -m` module's
`__main__`) at INFO go to stdout as the message alone, WARNING and above to stderr, so a CLI's
output reads like plain prints; other libraries' records show from WARNING on, unless the
library has a handler of its own (urllib3's retries stay quiet, Lightning prints its own). The
streams are looked up at each record (pytest's capsys, a redirected sys.stdout see them). In a
distributed run only global rank 0 says what it is doing: below WARNING, other ranks' records
are dropped. Every handler masks secrets (leviathan.redaction) in what it writes.

No torch or Lightning import here (config composition stays torch-free): the rank is
Lightning's `rank_zero_only.rank` once Lightning is loaded, else RANK / LOCAL_RANK /
SLURM_PROCID / JSM_NAMESPACE_RANK (Lightning's own order), else 0.
"""

from __future__ import annotations

import logging
import os
import sys

OURS = ("leviathan", "analysis", "__main__")  # the loggers whose INFO records are shown
RANK_ENV = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")


def global_rank() -> int:
    """This process's global rank (0 outside distributed runs), without importing Lightning."""
    mod = sys.modules.get("lightning_utilities.core.rank_zero")
    rank = getattr(getattr(mod, "rank_zero_only", None), "rank", None)
    if rank is not None:
        return int(rank)
    for key in RANK_ENV:
        if os.environ.get(key, "").strip().isdigit():
            return int(os.environ[key])
    return 0


class RankZeroFilter(logging.Filter):
    """Drop records below `all_ranks_from` from every rank but global rank 0 (warnings and
    errors are a rank's own: they pass everywhere)."""

    def __init__(self, all_ranks_from: int = logging.WARNING) -> None:
        super().__init__()
        self.all_ranks_from = all_ranks_from

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= self.all_ranks_from or global_rank() == 0


def _handled_below_root(name: str) -> bool:
    """Whether logger `name` or a parent below the root has a handler of its own (a library's
    NullHandler, Lightning's console handler): that library decides what it shows."""
    lg = logging.getLogger(name)
    while isinstance(lg, logging.Logger) and lg.parent is not None:
        if lg.handlers:
            return True
        lg = lg.parent
    return False


class RedactFilter(logging.Filter):
    """Mask secrets in every record a handler emits (leviathan.redaction: URI userinfo, secret
    NAME=value pairs, the tracking password), whoever logged it."""

    def filter(self, record: logging.LogRecord) -> bool:
        from leviathan.redaction import redact_text

        message = record.getMessage()
        clean = redact_text(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


class _OursFilter(logging.Filter):
    """Our records from `level` on; another library's from WARNING on, and only when it has no
    handler of its own (what Python's last-resort handler showed before any setup)."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.split(".", 1)[0] in OURS:
            return record.levelno >= self.level
        return record.levelno >= logging.WARNING and not _handled_below_root(record.name)


class _StdStream(logging.StreamHandler):
    """A StreamHandler writing to the *current* sys.stdout or sys.stderr."""

    def __init__(self, err: bool) -> None:
        logging.Handler.__init__(self)
        self.err = err

    @property
    def stream(self):  # noqa: D102 - looked up at each record
        return sys.stderr if self.err else sys.stdout

    @stream.setter
    def stream(self, _value) -> None:  # StreamHandler.setStream: the stream is not ours to fix
        pass


def setup_logging(level: int | str = logging.INFO, *, info_to_stderr: bool = False) -> None:
    """Configure logging for a CLI (idempotent: a second call replaces the first).

    Records of `level` and up from our loggers, WARNING and up from any: the message alone,
    below WARNING to stdout (stderr with `info_to_stderr`, e.g. when stdout carries JSON), from
    WARNING on to stderr; below WARNING only on global rank 0. A console handler already on the
    root logger (Hydra's job logging) is replaced; file handlers (Hydra's <job>.log) stay."""
    level = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_leviathan", False) or (
                type(h) is logging.StreamHandler
                and h.stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)):
            root.removeHandler(h)
    low = _StdStream(err=info_to_stderr)
    low.addFilter(lambda r: r.levelno < logging.WARNING)
    high = _StdStream(err=True)
    high.setLevel(logging.WARNING)
    for h in (low, high):
        h._leviathan = True  # noqa: SLF001 - marks our handlers for the next call
        h.setFormatter(logging.Formatter("%(message)s"))
        h.addFilter(_OursFilter(level))
        h.addFilter(RankZeroFilter())
        root.addHandler(h)
    for h in root.handlers:  # ours and those kept (Hydra's <job>.log)
        if not any(isinstance(f, RedactFilter) for f in h.filters):
            h.addFilter(RedactFilter())
    if root.level > logging.WARNING or root.level == logging.NOTSET:
        root.setLevel(logging.WARNING)
    for name in OURS:
        logging.getLogger(name).setLevel(level)
