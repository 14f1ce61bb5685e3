"""`python -m leviathan.data.minipile OUT [--mb 4]`: a small multi-source Pile-format corpus
from text every Python installation has. Deterministic for a given Python version.

Sources (meta.pile_set_name):
  Github          the standard library's source files (tests excluded)
  Docstrings      per module: its module, class and function docstrings, as prose
  Pydoc Topics    the language reference topics behind `help()` (pydoc_data.topics)
  DM Mathematics  seeded arithmetic questions and answers, in the style of the Pile's source
Written as OUT/minipile-NN.jsonl.zst shards plus OUT/manifest.json.
"""

from __future__ import annotations

import argparse
import ast
import functools
import hashlib
import json
import os
import random
import shutil
import sys
import sysconfig
from pathlib import Path

SHARES = {"Github": 0.55, "Docstrings": 0.25, "Pydoc Topics": 0.12, "DM Mathematics": 0.08}
SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__",
             "lib2to3", "ensurepip", "turtledemo"}


@functools.cache
def _stdlib_files() -> list[tuple[str, Path]]:
    root = Path(sysconfig.get_paths()["stdlib"])
    out = []
    for p in root.rglob("*.py"):
        rel = p.relative_to(root)
        if SKIP_DIRS & set(rel.parts[:-1]) or p.stat().st_size > 150_000:
            continue
        out.append((rel.as_posix(), p))
    # a stable pseudo-random order, so a budget takes modules from everywhere
    return sorted(out, key=lambda x: hashlib.sha1(x[0].encode()).hexdigest())


def _read(p: Path) -> str | None:
    try:
        return p.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return None


def github_docs():
    for _rel, p in _stdlib_files():
        text = _read(p)
        if text and len(text.strip()) > 200:
            yield text


def docstring_docs():
    for rel, p in _stdlib_files():
        text = _read(p)
        try:
            tree = ast.parse(text or "")
        except (SyntaxError, ValueError):
            continue
        name = rel[:-3].replace("/", ".").removesuffix(".__init__")
        parts = [f"Module {name}\n", ast.get_docstring(tree) or ""]
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node)
                if doc and not node.name.startswith("_"):
                    kind = "class" if isinstance(node, ast.ClassDef) else "function"
                    parts.append(f"\n{kind} {node.name}\n\n{doc}\n")
        body = "\n".join(parts).strip()
        if len(body) > 300:
            yield body


def topic_docs():
    from pydoc_data.topics import topics

    for name in sorted(topics):
        if len(topics[name].strip()) > 100:
            yield topics[name].strip() + "\n"


def math_docs(seed: int):
    rng = random.Random(seed)
    ops = [("+", lambda a, b: a + b), ("-", lambda a, b: a - b), ("*", lambda a, b: a * b)]
    while True:
        lines = []
        for _ in range(rng.randint(3, 12)):
            kind = rng.random()
            a, b = rng.randint(-999, 9999), rng.randint(1, 999)
            if kind < 0.6:
                sym, f = rng.choice(ops)
                lines.append(f"What is {a} {sym} {b}?\n{f(a, b)}")
            elif kind < 0.8:
                lines.append(f"Calculate the remainder when {abs(a)} is divided by {b}.\n"
                             f"{abs(a) % b}")
            else:
                x = rng.randint(-50, 50)
                lines.append(f"Solve {b}*x + {a} = {b * x + a} for x.\n{x}")
        yield "\n\n".join(lines) + "\n"


def write_minipile(out, *, mb: float = 4.0, n_shards: int = 4, seed: int = 0) -> dict:
    """Write the corpus into directory ``out`` (replacing its minipile shards); return the
    manifest."""
    import zstandard

    out = Path(out)
    budget = int(mb * 1_000_000)
    gens = {"Github": github_docs(), "Docstrings": docstring_docs(),
            "Pydoc Topics": topic_docs(), "DM Mathematics": math_docs(seed)}
    docs, sources = [], {}
    for name, share in SHARES.items():
        used, n = 0, 0
        for text in gens[name]:
            if used >= share * budget:
                break
            docs.append((name, text))
            used, n = used + len(text.encode()), n + 1
        sources[name] = {"docs": n, "bytes": used}
    random.Random(seed).shuffle(docs)
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    cctx = zstandard.ZstdCompressor(level=3)
    for i in range(n_shards):
        lines = [json.dumps({"text": t, "meta": {"pile_set_name": s}}, ensure_ascii=False)
                 for s, t in docs[i::n_shards]]
        data = ("\n".join(lines) + "\n").encode()
        (tmp / f"minipile-{i:02d}.jsonl.zst").write_bytes(cctx.compress(data))
    manifest = {"corpus": "minipile", "mb": mb, "n_shards": n_shards, "seed": seed,
                "python": sys.version.split()[0], "docs": len(docs), "sources": sources}
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    out.mkdir(parents=True, exist_ok=True)
    for f in sorted(tmp.iterdir()):
        os.replace(f, out / f.name)
    tmp.rmdir()
    return manifest


def cached_minipile(out, *, mb: float = 4.0, n_shards: int = 4, seed: int = 0) -> Path:
    """``out`` holding the corpus with these settings, written only if it is not there yet."""
    out = Path(out)
    m = out / "manifest.json"
    want = {"mb": mb, "n_shards": n_shards, "seed": seed, "python": sys.version.split()[0]}
    if m.is_file():
        have = json.loads(m.read_text())
        if all(have.get(k) == v for k, v in want.items()):
            return out
    write_minipile(out, mb=mb, n_shards=n_shards, seed=seed)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m leviathan.data.minipile", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="output directory")
    p.add_argument("--mb", type=float, default=4.0, help="approximate size in MB of text")
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    from leviathan.logs import setup_logging

    setup_logging()
    m = write_minipile(a.out, mb=a.mb, n_shards=a.shards, seed=a.seed)
    print(f"{a.out}: {m['docs']} documents in {a.shards} shards")
    for name, s in m["sources"].items():
        print(f"  {name:16s} {s['docs']:6d} docs {s['bytes'] / 1e6:7.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
