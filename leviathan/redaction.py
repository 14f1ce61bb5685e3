"""No secret in any record: what is masked (`***`) before a config, a URI or a log line is kept.

A run's config travels to its job as it is (the job needs the real value); everything written
where others read it goes through here first: MLflow params and tags, the run folder's
config.yaml (an MLflow artifact), the sweep's configs/<run>.yaml, plan.csv and manifest.json,
and every log line of our loggers (leviathan.logs). Masked:

- the userinfo of a URI: `http://user:token@host:5000` -> `http://***@host:5000`;
- the value of a key whose name has a secret word as one of its parts (`hf_token`,
  `db.password`, `clientSecret`, `MLFLOW_TRACKING_PASSWORD`; not `tokens` or `tokenizer`),
  when that value is a string that is not a number (as MLflow and Lightning, which mask only
  what is declared secret: a count, a rate or a flag is never a secret), and the key is not one
  of the platform's own measures (NOT_SECRET: `plan.flops_per_token`, `tokens_per_step`, ...);
- in text (a `launcher.setup` line, a log line), `NAME=value` / `NAME: value` where NAME is
  such a name, and any value registered with `register` (the tracking password read from the
  environment or from tracking.credentials_file).
"""

from __future__ import annotations

import os
import re
from typing import Any

MASK = "***"
SECRET_WORDS = {"password", "passwd", "token", "secret", "apikey"}
# key parts: split on separators and camelCase; api_key / api-key count as one word
_PARTS = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
_USERINFO = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://)([^/?#@\s\"']+)@")
_NAME = r"[A-Za-z_][A-Za-z0-9_.-]*"
_VALUE = r"(?:\"[^\"]*\"|'[^']*'|[^\s\"'`(<,;][^\s\"',;]*)"
# NAME=value (a shell line), NAME = value (an ini file), NAME: value (YAML, a dict's repr)
_ASSIGN = re.compile(rf"(?P<name>{_NAME})(?P<sep>[\"']?=|\s+=\s+|[\"']?\s*:\s*)"
                     rf"(?P<val>{_VALUE})")
_FLAG = re.compile(rf"(?P<name>--?{_NAME})(?P<sep>\s+)(?P<val>{_VALUE})")
_ENV_SECRETS = ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")
_known: set[str] = set()
MIN_SECRET_CHARS = 4  # shorter values are not scrubbed from free text (they would hit anything)
# The platform's own keys whose last part holds a secret word but which name a measure: never
# masked, whatever their value (the one list; the analysis reads plan.flops_per_token from
# MLflow to match by compute).
NOT_SECRET = frozenset({"flops_per_token", "tokens_per_step", "budget_tokens", "tokens_per_param",
                        "max_tokens", "tokens_seen", "freq_tokens", "val_tokens",
                        "warmup_tokens_per_param", "tokens_per_s", "distinct_tokens"})


def is_secret_key(key: Any) -> bool:
    """Whether a config key / variable name names a secret (one of its parts is a secret word;
    `api_key` and `access_key` count as `apikey`)."""
    if not isinstance(key, str) or re.split(r"[./]", key)[-1].lower() in NOT_SECRET:
        return False
    for segment in re.split(r"[./]", key):
        words = [w.lower() for w in _PARTS.findall(segment)]
        joined = ["".join(p) for p in zip(words, words[1:], strict=False)]
        if any(w in SECRET_WORDS for w in (*words, *joined)) or "apikey" in joined \
                or "accesskey" in joined or "privatekey" in joined:
            return True
    return False


def _is_number(value: Any) -> bool:
    """A number, or a string that reads as one ('2.5e6', ' 12 ', 'nan'): never a secret."""
    if isinstance(value, (bool, int, float)):
        return True
    if not isinstance(value, str):
        return False
    try:
        float(value.strip())
    except ValueError:
        return False
    return True


def masks(key: Any, value: Any) -> bool:
    """Whether the value of `key` is masked: the key names a secret (is_secret_key) and the
    value is a non-empty string that is not a number."""
    return (is_secret_key(key) and isinstance(value, str) and value not in ("", MASK)
            and not _is_number(value))


def register(value: str | None) -> None:
    """A secret value read at run time (a password, a token): masked wherever it shows."""
    if value and len(value) >= MIN_SECRET_CHARS:
        _known.add(value)


def known_secrets() -> set[str]:
    """Registered values and the tracking password/token of the environment."""
    env = {os.environ.get(k) for k in _ENV_SECRETS}
    return _known | {v for v in env if v and len(v) >= MIN_SECRET_CHARS}


def strip_userinfo(uri: str) -> str:
    """The URI without its `user:password@` part (a masked `***@` included)."""
    return _USERINFO.sub(r"\1", uri)


def redact_text(text: str) -> str:
    """Mask URI userinfo, secret NAME=value assignments and known secret values in `text`."""
    if not text:
        return text
    for value in sorted(known_secrets(), key=len, reverse=True):
        text = text.replace(value, MASK)
    text = _USERINFO.sub(lambda m: m.group(1) + MASK + "@" if m.group(2) != MASK
                         else m.group(0), text)

    def assign(m: re.Match) -> str:
        if not masks(m.group("name").lstrip("-"), m.group("val").strip("\"'")):
            return m.group(0)
        return f"{m.group('name')}{m.group('sep')}{MASK}"

    return _FLAG.sub(assign, _ASSIGN.sub(assign, text))


def redact(obj: Any, key: str | None = None) -> Any:
    """A copy of `obj` (dicts, lists, scalars) with every secret masked: the value of a secret
    key, and secrets inside strings (redact_text)."""
    if isinstance(obj, dict):
        return {k: redact(v, k) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact(v) for v in obj)
    if key is not None and masks(key, obj):
        return MASK
    return redact_text(obj) if isinstance(obj, str) else obj
