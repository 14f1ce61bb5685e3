"""Tasks for the harness: offline mode, the task index, loading each task on its own (a task
whose data is missing is reported and skipped), and small local tasks built from the demo corpus.

Offline: the harness's tasks load their data with `datasets.load_dataset(<hub name>)`. With
eval.offline=auto we go offline when HF_DATASETS_OFFLINE / HF_HUB_OFFLINE say so, or when the
hub (HF_ENDPOINT, default https://huggingface.co) does not answer within a few seconds; offline,
`datasets` reads only its local cache ($HF_HOME, or HF_DATASETS_CACHE / HF_HUB_CACHE).
"""

from __future__ import annotations

import json
import os
import random
import re
import socket
from pathlib import Path
from urllib.parse import urlparse

from leviathan.eval.config import EvalConfigError

TRUE = ("1", "ON", "YES", "TRUE")


def env_offline() -> bool | None:
    """True/False when HF_DATASETS_OFFLINE or HF_HUB_OFFLINE is set, else None."""
    for var in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        v = os.environ.get(var)
        if v is not None and v.strip() != "":
            return v.strip().upper() in TRUE
    return None


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the hub's host opens within `timeout` seconds."""
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def set_offline(offline: bool) -> None:
    """Put `datasets` and `huggingface_hub` in (or out of) offline mode, also when they are
    already imported (both read the environment at import)."""
    import sys

    v = "1" if offline else "0"
    os.environ["HF_DATASETS_OFFLINE"] = v
    os.environ["HF_HUB_OFFLINE"] = v
    hub = sys.modules.get("huggingface_hub.constants")
    if hub is not None:
        hub.HF_HUB_OFFLINE = offline
    ds = sys.modules.get("datasets.config")
    if ds is not None:
        ds.HF_HUB_OFFLINE = offline
        ds.HF_DATASETS_OFFLINE = offline


def configure_offline(mode: str | bool = "auto", probe_timeout_s: float = 3.0) -> bool:
    """Decide offline mode (eval.offline) and apply it; returns True when offline."""
    if mode == "auto":
        env = env_offline()
        offline = env if env is not None else not hub_reachable(probe_timeout_s)
    else:
        offline = bool(mode)
    set_offline(offline)
    return offline


def task_manager(include_path: list[str] | None = None, include_defaults: bool = True):
    from lm_eval.tasks import TaskManager

    paths = [str(Path(p).expanduser()) for p in (include_path or [])]
    for p in paths:
        if not Path(p).is_dir():
            raise EvalConfigError(f"eval.include_path: {p} is not a folder")
    return TaskManager(include_path=paths or None, include_defaults=include_defaults)


def _dataset_of(tm, name: str, error: BaseException) -> tuple[str | None, str | None]:
    entry = getattr(tm, "task_index", {}).get(name)
    cfg = getattr(entry, "cfg", None) or {}
    path, sub = cfg.get("dataset_path"), cfg.get("dataset_name")
    if not path:
        m = re.search(r"'([^']+/[^']+)'", str(error))
        path = m.group(1) if m else None
    return path, sub


def missing_message(name: str, error: BaseException, dataset: str | None,
                    subset: str | None, offline: bool) -> str:
    why = f"{type(error).__name__}: {str(error).splitlines()[0][:300]}" if str(error) \
        else type(error).__name__
    if isinstance(error, KeyError) and "not a registered task" in str(error):
        return (f"task {name!r} is not a known task or group name ({why}); check the name "
                "(`lm-eval ls tasks`) or add its YAML folder to eval.include_path")
    if dataset is None:
        return f"task {name!r} could not be loaded ({why})"
    ds = f"{dataset}" + (f" (config {subset})" if subset else "")
    mode = "offline mode" if offline else "online mode"
    return (f"task {name!r}: its data, the Hugging Face dataset {ds}, is not available here "
            f"({mode}; {why}). To provide it: on a machine with internet, with the same HF_HOME, "
            f"run `python -c \"import datasets; datasets.load_dataset('{dataset}'"
            + (f", '{subset}'" if subset else "") + ")\"` (or `huggingface-cli download "
            f"--repo-type dataset {dataset}`), copy $HF_HOME (default ~/.cache/huggingface) to "
            "this machine and set HF_HOME to it (HF_DATASETS_OFFLINE=1 keeps it offline); or "
            "write a task YAML with `dataset_path: json` / `parquet` and local `data_files` "
            "into a folder listed in eval.include_path")


def describe_failure(tm, name: str, error: BaseException, *, offline: bool) -> str:
    """One line (no traceback) saying why task `name` produced no results and what to do."""
    if isinstance(error, NotImplementedError):
        return f"task {name!r} needs something the model does not do: {error}"
    data_errors = (ConnectionError, FileNotFoundError, OSError)
    names = {c.__name__ for c in type(error).__mro__}
    if isinstance(error, data_errors) or names & {"DatasetNotFoundError", "OfflineModeIsEnabled",
                                                  "LocalEntryNotFoundError", "HfHubHTTPError"}:
        ds, sub = _dataset_of(tm, name, error)
        return missing_message(name, error, ds, sub, offline)
    if isinstance(error, KeyError) and "not a registered task" in str(error):
        return missing_message(name, error, None, None, offline)
    first = str(error).splitlines()[0][:300] if str(error) else ""
    return f"task {name!r} failed: {type(error).__name__}: {first}"


# --------------------------------------------------------------------- local tasks
LASTWORD_YAML = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
  cache_dir: {cache}
output_type: loglikelihood
test_split: test
doc_to_text: "{{{{text.split(' ')[:-1]|join(' ')}}}}"
doc_to_target: "{{{{' '+text.split(' ')[-1]}}}}"
metric_list:
  - metric: perplexity
    aggregation: perplexity
    higher_is_better: false
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""

CHOICE_YAML = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
  cache_dir: {cache}
output_type: multiple_choice
test_split: test
doc_to_text: "{{{{context}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: label
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""

ROLLING_YAML = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
  cache_dir: {cache}
output_type: loglikelihood_rolling
test_split: test
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - metric: word_perplexity
    aggregation: weighted_perplexity
    higher_is_better: false
  - metric: byte_perplexity
    aggregation: weighted_perplexity
    higher_is_better: false
  - metric: bits_per_byte
    aggregation: bits_per_byte
    higher_is_better: false
metadata:
  version: 1.0
"""


def demo_passages(n: int, words: int = 24, seed: int = 0) -> list[list[str]]:
    """n word windows of prose from the demo corpus's Pydoc Topics source (the language
    reference that leviathan.data.minipile writes), each ending in an alphabetic word."""
    from leviathan.data.minipile import topic_docs

    rng = random.Random(seed)
    out: list[list[str]] = []
    for doc in topic_docs():
        toks = doc.split()
        for s in range(0, len(toks) - words, words * 3):
            w = toks[s:s + words]
            if w[-1].isalpha() and all(len(t) < 30 for t in w):
                out.append(w)
    rng.shuffle(out)
    if len(out) < n:
        raise ValueError(f"the demo corpus has only {len(out)} passages, asked for {n}")
    return out[:n]


def write_demo_tasks(folder: str | Path, *, n: int = 24, seed: int = 0, prefix: str = "demo",
                     n_choices: int = 4) -> list[str]:
    """Write three local tasks (JSON data + harness task YAML) into `folder`:
    <prefix>_lastword (LAMBADA-style: log-likelihood of the last word; acc, perplexity),
    <prefix>_choice (pick the true continuation among n_choices; acc, acc_norm) and
    <prefix>_text (rolling log-likelihood; word/byte perplexity, bits per byte).
    Returns the task names; use them with TaskManager(include_path=folder)."""
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    cache = folder / "hf_cache"
    rng = random.Random(seed)
    passages = demo_passages(n, seed=seed)
    lastword = [{"text": " ".join(w)} for w in passages]
    choice = []
    for i, w in enumerate(passages):
        others = [passages[(i + j) % n] for j in range(1, n_choices)]
        options = [" ".join(w[16:])] + [" ".join(o[16:]) for o in others]
        order = list(range(n_choices))
        rng.shuffle(order)
        choice.append({"context": " ".join(w[:16]), "choices": [options[k] for k in order],
                       "label": order.index(0)})
    text = [{"text": " ".join(w)} for w in passages]
    names = []
    for kind, docs, tmpl in (("lastword", lastword, LASTWORD_YAML),
                             ("choice", choice, CHOICE_YAML), ("text", text, ROLLING_YAML)):
        name = f"{prefix}_{kind}"
        data = folder / f"{name}.jsonl"
        data.write_text("".join(json.dumps(d) + "\n" for d in docs))
        (folder / f"{name}.yaml").write_text(tmpl.format(name=name, data=data, cache=cache))
        names.append(name)
    return names
