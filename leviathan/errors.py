"""The one base exception for what a user can fix.

A LeviathanError is an error in what the user gave or set up (a bad config key, a missing file,
a refused pair, a server that does not answer); its message says what and where, so every
command line catches it and prints `error: <message>` in one line (exit status 2 unless the
command documents another). Anything else is a bug and shows its traceback.

Subclasses keep the built-in base their callers caught before (ValueError, RuntimeError, ...)
as a second base, e.g. `class DataError(LeviathanError, ValueError)`.
"""

from __future__ import annotations

__all__ = ["LeviathanError", "TrainConfigError"]


class LeviathanError(Exception):
    """Something the user can fix; the message says what and where."""


class TrainConfigError(LeviathanError, ValueError):
    """A training config value that cannot work; the message names the key (trainer.*, and the
    tracking group a run reads: tracking.*)."""
