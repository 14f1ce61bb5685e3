"""The software a run ran on: capture it, hash it, compare two of them, and record it.

`capture()` reads every installed distribution (importlib.metadata, the first of a name on
sys.path, as imports see it), the Python version and, where present, the CUDA and cuDNN torch
uses and the model of each visible GPU. The hash covers Python and the full package set, so two
runs with the same hash ran the same library versions. Training records it on its MLflow run
(params env.*, artifact environment.json) and in its run folder; a resumed attempt compares
itself with the first. Evaluation records its own beside its results. `sweep_report` tells
whether the runs of a sweep ran on different environments and which packages differ.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import re
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ENV_FILE = "environment.json"
PREFIX = "env."  # MLflow params (training) and tags (eval: <eval prefix>.env.*)
CHANGED_TAG = "env.changed"  # on a resumed run whose environment differs from its first attempt
# the versions every run logs by name (the full set is in the artifact)
KEY_PACKAGES = ("torch", "lightning", "hydra-core", "submitit", "tiktoken", "mlflow", "numpy",
                "scipy", "pandas", "lm-eval")
ABSENT = "absent"


def canonical(name: str) -> str:
    """PEP 503 name: "Hydra_Core" -> "hydra-core"."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Environment:
    python: str  # "3.11.9"
    packages: dict[str, str]  # every installed distribution: canonical name -> version
    implementation: str = "CPython"
    platform: str = ""  # OS, kernel and libc (not hashed)
    cuda: str | None = None  # the CUDA torch was built with; None for a CPU build
    cudnn: str | None = None  # the cuDNN torch loads
    gpus: list[str] = field(default_factory=list)  # model of each visible GPU

    @property
    def hash(self) -> str:
        """sha256 of the Python version and every package==version, sorted."""
        lines = [f"python {self.implementation} {self.python}"]
        lines += [f"{n}=={v}" for n, v in sorted(self.packages.items())]
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()

    def versions(self) -> dict[str, str]:
        """{"python", KEY_PACKAGES..., "cuda", "cudnn", "gpu", "hash"}: what each run logs."""
        gpu = ", ".join(f"{n} x{self.gpus.count(n)}" if self.gpus.count(n) > 1 else n
                        for n in dict.fromkeys(self.gpus))
        return {"python": self.python,
                **{p: self.packages.get(p, ABSENT) for p in KEY_PACKAGES},
                "cuda": self.cuda or "none", "cudnn": self.cudnn or "none",
                "gpu": gpu or "none", "hash": self.hash}

    def as_dict(self) -> dict[str, Any]:
        return {"hash": self.hash, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Environment:
        return cls(python=d["python"], packages=dict(d["packages"]),
                   implementation=d.get("implementation", "CPython"),
                   platform=d.get("platform", ""), cuda=d.get("cuda"), cudnn=d.get("cudnn"),
                   gpus=list(d.get("gpus") or []))


def installed_packages() -> dict[str, str]:
    """Every distribution on sys.path (the first of each name, as `import` would find it), but
    the copies a package vendors (importing setuptools puts setuptools/_vendor on sys.path: its
    autocommand, jaraco.*, ... would otherwise come and go with whatever imported it)."""
    from importlib.metadata import distributions

    out: dict[str, str] = {}
    for dist in distributions():
        if "_vendor" in Path(str(getattr(dist, "_path", ""))).parts:
            continue
        name = dist.metadata["Name"] if dist.metadata else None
        if name and canonical(name) not in out:
            out[canonical(name)] = dist.version
    return out


def _accelerator() -> tuple[str | None, str | None, list[str]]:
    try:
        import torch
    except ImportError:
        return None, None, []
    cudnn = None
    try:
        if torch.backends.cudnn.is_available():
            v = int(torch.backends.cudnn.version())  # 91002 (cuDNN 9) / 8907 (cuDNN 8)
            cudnn = f"{v // 10000}.{v % 10000 // 100}.{v % 100}" if v >= 90000 else \
                f"{v // 1000}.{v % 1000 // 100}.{v % 100}"
    except Exception:  # noqa: BLE001 - a CUDA build without its libraries: no cuDNN to report
        cudnn = None
    gpus = ([torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            if torch.cuda.is_available() else [])
    return torch.version.cuda, cudnn, gpus


def capture() -> Environment:
    """This process's environment."""
    cuda, cudnn, gpus = _accelerator()
    return Environment(python=platform.python_version(), packages=installed_packages(),
                       implementation=platform.python_implementation(),
                       platform=platform.platform(), cuda=cuda, cudnn=cudnn, gpus=gpus)


def diff(a: Environment, b: Environment) -> dict[str, tuple[str | None, str | None]]:
    """{name: (version in a, version in b)} for Python and every package that differs
    (None: not installed there)."""
    out: dict[str, tuple[str | None, str | None]] = {}
    if (a.implementation, a.python) != (b.implementation, b.python):
        out["python"] = (a.python, b.python)
    for name in sorted(set(a.packages) | set(b.packages)):
        va, vb = a.packages.get(name), b.packages.get(name)
        if va != vb:
            out[name] = (va, vb)
    return out


def describe(changes: dict[str, tuple[str | None, str | None]]) -> str:
    """"torch 2.13.0+cpu -> 2.14.1, tqdm absent -> 4.67.1"."""
    return ", ".join(f"{n} {a or ABSENT} -> {b or ABSENT}" for n, (a, b) in changes.items())


def save(env: Environment, path: Path, **extra: Any) -> Path:
    from leviathan.tracking.runs import write_atomic

    write_atomic(path, json.dumps({**env.as_dict(), **extra}, indent=1, sort_keys=True))
    return path


def load(path: Path) -> tuple[Environment, dict[str, Any]]:
    """(environment, the whole JSON) from a file `save` wrote."""
    d = json.loads(Path(path).read_text())
    return Environment.from_dict(d), d


# ---------------------------------------------------------------------------- runs
def record_training(tracker, run_dir: Path, env: Environment | None = None) -> Environment:
    """Log this process's environment (or `env`) on the tracker's run: params env.*, artifact
    environment.json, also kept in <run dir>/environment.json. A resumed attempt on a different
    environment says so, tags env.changed with the packages that differ and logs its own list
    under environment/."""
    env = env or capture()
    path = run_dir / ENV_FILE
    first, meta = load(path) if path.exists() else (None, {})
    # the same run: its MLflow id, or (the server not answering yet) its run_uid
    uid = tracker.run_uid
    same = first is not None and ((tracker.run_id and meta.get("mlflow_run_id") == tracker.run_id)
                                  or (uid and meta.get("run_uid") == uid))
    if not same:  # this run's first attempt
        save(env, path, mlflow_run_id=tracker.run_id, run_uid=uid)
        tracker.log_params({PREFIX + k: v for k, v in env.versions().items()})
        tracker.log_artifact(path)
        return env
    tracker.log_params({PREFIX + k: v for k, v in first.versions().items()})  # no-op if logged
    changes = diff(first, env)
    if changes:
        text = describe(changes)
        log.info(f"environment differs from this run's first attempt (hash {first.hash[:12]} -> "
                 f"{env.hash[:12]}): {text}")
        tracker.set_tags({CHANGED_TAG: text[:5000], "env.hash_resumed": env.hash})
        tracker.log_artifact(save(env, run_dir / f"environment.{env.hash[:12]}.json"),
                             "environment")
    return env


def record_eval(run_dir: Path, out_dir: Path, name: str, *, uri: str | None = None,
                run_id: str | None = None, prefix: str = "eval") -> dict[str, str]:
    """Write <out_dir>/<name>.environment.json; with `uri`/`run_id`, tag the MLflow run
    <prefix>.env.* (and <prefix>.env.changed when training ran elsewhere) and log the file.
    Returns the logged versions (for the results JSON)."""
    env = capture()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = save(env, out_dir / f"{name}.environment.json")
    tags = {f"{prefix}.{PREFIX}{k}": v for k, v in env.versions().items()}
    trained = run_dir / ENV_FILE
    if trained.exists():
        changes = diff(load(trained)[0], env)
        if changes:
            log.info(f"note: evaluating on another environment than training: {describe(changes)}")
            tags[f"{prefix}.{CHANGED_TAG}"] = describe(changes)[:5000]
    if uri and run_id:
        from mlflow.entities import RunTag
        from mlflow.tracking import MlflowClient

        client = MlflowClient(uri)
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        client.log_artifact(run_id, str(path), artifact_path="eval")
    return env.versions()


# ---------------------------------------------------------------------------- sweeps
def _run_environment(client, run) -> tuple[Environment | None, bool]:
    """(a training run's environment, complete?): its artifact, else the versions in its
    params (the key packages only)."""
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = client.download_artifacts(run.info.run_id, ENV_FILE, tmp)
            return load(Path(path))[0], True
    except Exception:  # noqa: BLE001 - no artifact (or unreadable): fall back to the params
        p = run.data.params
        if PREFIX + "python" not in p:
            return None, False
        pk = {k: p[PREFIX + k] for k in KEY_PACKAGES if p.get(PREFIX + k, ABSENT) != ABSENT}
        return Environment(python=p[PREFIX + "python"], packages=pk), False


def _names(names: list[str], most: int = 8) -> str:
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most
                                      else "")


def _group_by_environment(latest: dict[str, Any]
                          ) -> tuple[dict[str, list[str]], list[str], list[str]]:
    """(environment hash -> run names, most runs first; runs that recorded none; lines for the
    runs resumed on another environment than their first attempt)."""
    groups: dict[str, list[str]] = {}
    unrecorded, resumed = [], []
    for name, r in sorted(latest.items()):
        h = r.data.params.get(PREFIX + "hash")
        if h:
            groups.setdefault(h, []).append(name)
        else:
            unrecorded.append(name)
        if r.data.tags.get(CHANGED_TAG):
            resumed.append(f"- {name} was resumed on another environment than its first "
                           f"attempt: {r.data.tags[CHANGED_TAG]}")
    groups = dict(sorted(groups.items(), key=lambda g: (-len(g[1]), g[1][0])))  # most first
    return groups, unrecorded, resumed


def _one_environment_line(groups: dict[str, list[str]], latest: dict[str, Any],
                          partial: bool) -> str:
    """The line for a sweep whose runs (those that recorded one, if `partial`) share one
    environment: its hash and key versions."""
    (h, names), = groups.items()
    v = latest[names[0]].data.params
    shown = ", ".join(f"{k} {v.get(PREFIX + k, '?')}" for k in ("python", "torch",
                                                                  "lightning", "cuda", "gpu"))
    who = f"The {len(names)} runs that recorded one" if partial else f"All {len(names)} runs"
    return f"{who} ran on one environment, {h[:12]} ({shown})."


def _differing_packages(found: dict[str, tuple[Environment | None, bool]]) -> list[str]:
    """The packages (python first) whose versions differ between the environments found; only
    python and the key packages when some environment is known from its params alone."""
    known = [e for e, _ in found.values() if e is not None]
    differ: set[str] = set()
    for e in known[1:]:
        differ |= set(diff(known[0], e))
    if not all(complete for _, complete in found.values()):  # some have key versions only
        differ &= {"python", *KEY_PACKAGES}
    return sorted(differ, key=lambda n: (n != "python", n))


def _environments_table(client, groups: dict[str, list[str]], latest: dict[str, Any]
                        ) -> list[str]:
    """The environments of a sweep whose runs differ, and a table of the packages that
    differ (one column per environment)."""
    found = {h: _run_environment(client, latest[names[0]]) for h, names in groups.items()}
    envs = {h: e for h, (e, _) in found.items()}
    out = [f"The {sum(map(len, groups.values()))} runs ran on {len(groups)} different "
           "environments:", ""]
    out += [f"- {h[:12]}: {len(names)} runs ({_names(names)})" for h, names in groups.items()]
    out += ["", "Packages that differ:", "",
            "| package | " + " | ".join(h[:12] for h in envs) + " |",
            "|---|" + "---|" * len(envs)]
    for n in _differing_packages(found):
        cells = [("?" if e is None else e.python if n == "python"
                  else e.packages.get(n, ABSENT)) for e in envs.values()]
        out.append(f"| {n} | " + " | ".join(cells) + " |")
    return out


def sweep_report(client, runs: list[Any]) -> list[str]:
    """Markdown lines: on which environments a sweep's training runs (newest first; the newest
    run of each name counts) ran and, when they differ, a table of the packages that differ."""
    latest: dict[str, Any] = {}
    for r in runs:
        latest.setdefault(r.data.tags.get("mlflow.runName") or r.info.run_name, r)
    groups, unrecorded, resumed = _group_by_environment(latest)
    out = []
    if len(groups) == 1:
        out.append(_one_environment_line(groups, latest, bool(unrecorded)))
    elif groups:
        out += _environments_table(client, groups, latest)
    if unrecorded:
        out.append(f"{len(unrecorded)} runs recorded no environment: {_names(unrecorded)}.")
    if resumed:
        out += ["", *resumed]
    return out
