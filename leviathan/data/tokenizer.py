"""Offline tiktoken vocabularies: stage a verified `.tiktoken` file, load encodings offline.

tiktoken caches each vocabulary under ``$TIKTOKEN_CACHE_DIR/<sha1(blob URL)>`` and checks its
sha256 against the ``expected_hash`` in ``tiktoken_ext/openai_public.py``. Compute nodes are
often offline, so ``stage`` places a copy there ahead of time:

    python -m leviathan.data.tokenizer stage o200k_base.tiktoken [--cache-dir DIR]

The URLs and hashes are read from tiktoken's own source (not copied here), so they always match
the installed tiktoken.
"""

from __future__ import annotations

import argparse
import ast
import functools
import hashlib
import logging
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from leviathan.errors import LeviathanError

log = logging.getLogger(__name__)


class TokenizerError(LeviathanError, RuntimeError):
    """A vocabulary file is unknown, corrupt, or cannot be found offline."""


@dataclass(frozen=True)
class VocabFile:
    encoding: str  # encoding name, e.g. "o200k_base"
    url: str  # blob URL tiktoken downloads from
    sha256: str  # tiktoken's expected_hash of the file

    @property
    def filename(self) -> str:  # "o200k_base.tiktoken"
        return self.url.rsplit("/", 1)[-1]

    @property
    def cache_key(self) -> str:  # the name tiktoken looks for in its cache dir
        return hashlib.sha1(self.url.encode()).hexdigest()


@functools.cache
def known_vocab_files() -> dict[str, VocabFile]:
    """encoding name -> VocabFile, parsed from tiktoken_ext/openai_public.py (no network)."""
    import tiktoken_ext.openai_public as op

    tree = ast.parse(Path(op.__file__).read_text())
    out: dict[str, VocabFile] = {}
    for fn in tree.body:
        if not isinstance(fn, ast.FunctionDef):
            continue
        for node in ast.walk(fn):
            if not (isinstance(node, ast.Call) and getattr(node.func, "id", None)
                    == "load_tiktoken_bpe"):
                continue
            url = node.args[0].value if node.args and isinstance(node.args[0], ast.Constant) \
                else None
            digest = next((k.value.value for k in node.keywords if k.arg == "expected_hash"
                           and isinstance(k.value, ast.Constant)), None)
            if isinstance(url, str) and isinstance(digest, str):
                out[fn.name] = VocabFile(fn.name, url, digest)
    # encodings that reuse another's file (p50k_edit, o200k_harmony) resolve through it
    for name, ctor in op.ENCODING_CONSTRUCTORS.items():
        if name not in out:
            src = ast.unparse(next(f for f in tree.body if isinstance(f, ast.FunctionDef)
                                   and f.name == ctor.__name__))
            for base, vf in list(out.items()):
                if f"{base}()" in src:
                    out[name] = VocabFile(name, vf.url, vf.sha256)
    return out


def default_cache_dir() -> Path:
    """Where tiktoken reads its cache: $TIKTOKEN_CACHE_DIR, $DATA_GYM_CACHE_DIR, or tmp."""
    for var in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if os.environ.get(var):
            return Path(os.environ[var])
    return Path(tempfile.gettempdir()) / "data-gym-cache"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def identify(path: str | Path) -> VocabFile:
    """The VocabFile whose expected sha256 matches this file; TokenizerError otherwise."""
    path = Path(path)
    if not path.is_file():
        raise TokenizerError(f"vocabulary file not found: {path}")
    digest = _sha256(path)
    files = known_vocab_files()
    for vf in files.values():
        if vf.sha256 == digest:
            return vf
    by_name = [vf for vf in files.values() if vf.filename == path.name]
    if by_name:
        raise TokenizerError(
            f"sha256 mismatch for {path}: got {digest}, tiktoken expects {by_name[0].sha256} "
            f"for {by_name[0].filename} ({by_name[0].url}); the file is corrupt or truncated")
    names = sorted({vf.filename for vf in files.values()})
    raise TokenizerError(f"unknown vocabulary file {path} (sha256 {digest}); tiktoken knows "
                         f"only {', '.join(names)}")


def stage(path: str | Path, cache_dir: str | Path | None = None) -> Path:
    """Verify ``path`` against tiktoken's expected sha256 and copy it into the cache dir.

    Returns the staged path (``cache_dir / sha1(url)``). Idempotent.
    """
    vf = identify(path)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    dest = cache / vf.cache_key
    if dest.is_file() and _sha256(dest) == vf.sha256:
        return dest
    tmp = dest.with_name(f"{dest.name}.{os.getpid()}.tmp")
    shutil.copyfile(path, tmp)
    os.replace(tmp, dest)
    return dest


def missing_message(name: str) -> str:
    """What to do when encoding ``name`` cannot be loaded offline."""
    vf = known_vocab_files().get(name)
    cache = default_cache_dir()
    if vf is None:
        from leviathan.data.debug_vocab import DEBUG_VOCABS

        return (f"unknown tiktoken encoding {name!r} (data.tokenizer); known: "
                f"{', '.join(sorted([*known_vocab_files(), *DEBUG_VOCABS]))}")
    return (f"cannot load tiktoken encoding {name!r} offline: {cache / vf.cache_key} is missing "
            f"or corrupt. Download {vf.url} (sha256 {vf.sha256}) on a machine with network, "
            f"then run `python -m leviathan.data.tokenizer stage {vf.filename}` with "
            f"TIKTOKEN_CACHE_DIR set to a directory the compute nodes can read (now: "
            f"{cache}), and export the same TIKTOKEN_CACHE_DIR for the run.")


@functools.cache
def _load(name: str, cache_dir: str):
    import tiktoken

    return tiktoken.get_encoding(name)


@functools.cache
def load_debug(name: str):
    """A debug vocabulary from the file shipped beside leviathan/data/debug_vocab.py, its sha256
    checked first."""
    import tiktoken

    from leviathan.data import debug_vocab

    n, digest = debug_vocab.DEBUG_VOCABS[name]
    path = debug_vocab.vocab_path(name)
    if not path.is_file():
        raise TokenizerError(f"{path} is missing: the debug vocabulary ships with the package; "
                             f"rebuild it with `python -m leviathan.data.debug_vocab build "
                             f"o200k_base.tiktoken`")
    got = _sha256(path)
    if got != digest:
        raise TokenizerError(f"sha256 mismatch for {path}: got {got}, expected {digest}")
    return tiktoken.Encoding(name=name, pat_str=debug_vocab.PAT_STR,
                             mergeable_ranks=debug_vocab.read_ranks(path),
                             special_tokens={debug_vocab.ENDOFTEXT: n})


def get_encoding(name: str = "o200k_base"):
    """tiktoken.Encoding ``name``: a debug vocabulary shipped with the package (`debug_2k`,
    leviathan/data/debug_vocab.py), else from the local cache (staged or downloaded before),
    else downloaded by tiktoken if this machine is online; TokenizerError saying what to stage."""
    import tiktoken

    from leviathan.data import debug_vocab

    if debug_vocab.is_debug_vocab(name):
        return load_debug(name)
    if name not in tiktoken.list_encoding_names():
        raise TokenizerError(missing_message(name))
    try:
        return _load(name, str(default_cache_dir()))
    except Exception as e:  # offline (connection error), hash mismatch, unwritable cache ...
        raise TokenizerError(f"{missing_message(name)} ({type(e).__name__}: "
                             f"{str(e)[:200]})") from e


def vocab_hash(name: str) -> str:
    """The sha256 of the encoding's vocabulary file (what a prepared index records)."""
    from leviathan.data import debug_vocab

    if debug_vocab.is_debug_vocab(name):
        return debug_vocab.DEBUG_VOCABS[name][1]
    vf = known_vocab_files().get(name)
    if vf is None:
        raise TokenizerError(missing_message(name))
    return vf.sha256


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m leviathan.data.tokenizer",
                                description="Stage tiktoken vocabularies for offline use.")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("stage", help="verify FILE's sha256 and copy it into the tiktoken cache")
    s.add_argument("files", nargs="+", metavar="FILE")
    s.add_argument("--cache-dir", default=None,
                   help="target dir (default $TIKTOKEN_CACHE_DIR, else tiktoken's default)")
    c = sub.add_parser("check", help="load an encoding offline and report")
    c.add_argument("name", nargs="?", default="o200k_base")
    args = p.parse_args(argv)
    from leviathan.logs import setup_logging

    setup_logging()
    try:
        if args.cmd == "stage":
            for f in args.files:
                dest = stage(f, args.cache_dir)
                print(f"staged {f} ({identify(dest).encoding}) -> {dest}")
            if args.cache_dir is not None:
                print(f"export TIKTOKEN_CACHE_DIR={Path(args.cache_dir).resolve()}")
        else:
            enc = get_encoding(args.name)
            print(f"{args.name}: n_vocab={enc.n_vocab} eot={enc.eot_token}")
    except LeviathanError as e:  # TokenizerError; anything else shows its traceback
        log.error(f"error: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
