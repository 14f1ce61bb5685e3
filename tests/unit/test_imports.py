"""The project's modules import each other without circles (function-level imports included):
each layer imports only the ones below it, so any module can be read and used on its own.

The layers, low to high (a module imports only from its own layer or a lower one):
- PACKAGE_LAYERS: leviathan (the library) < analysis < leviathan.cli (the commands that combine
  both). A documented `python -m` path inside the library that opens a command of leviathan.cli
  is a door (DOORS): it imports its command and nothing imports it.
- LEVIATHAN_LAYERS: the library's floors; leviathan.config registers every group's schema, so it
  may import a group's typed config module (SCHEMAS) wherever the group lives.
- ANALYSIS_LAYERS: the analysis's stages: inputs < laws < readings < power and the assembly
  (analysis.scaling) < report < the commands (fit_scaling, toyworld); analysis.config, the fit's
  settings, below them all.
No function crosses a package by a name in a string (hydra's get_method, importlib)."""

from __future__ import annotations

import ast
from pathlib import Path

from helpers import REPO

PACKAGES = ("leviathan", "analysis")
PACKAGE_LAYERS = (("leviathan",), ("analysis",), ("leviathan.cli",))
DOORS = {"leviathan.sweep.__main__": "leviathan.cli.sweep",
         "leviathan.sweep.design": "leviathan.cli.design",
         "leviathan.eval.__main__": "leviathan.cli.eval"}
LEVIATHAN_LAYERS = (
    ("leviathan.errors", "leviathan.lazy", "leviathan.paths", "leviathan.typed_config",
     "leviathan.redaction"),
    ("leviathan.logs", "leviathan.models"),
    ("leviathan.data", "leviathan.tracking"),
    ("leviathan.training", "leviathan.eval"),
    ("leviathan.config",),
    ("leviathan.sweep", "leviathan.bench", "leviathan.train", "leviathan.demo",
     "leviathan.configdoc"),
)
SCHEMAS = ("leviathan.sweep.grid", "leviathan.sweep.launcher_config")
ANALYSIS_LAYERS = (
    ("analysis.config",),
    ("analysis.inputs",),
    ("analysis.laws",),
    ("analysis.readings",),
    ("analysis.power", "analysis.scaling"),
    ("analysis.report",),
    ("analysis.fit_scaling", "analysis.toyworld"),
)
STAGES = ("inputs", "laws", "readings", "power", "report")
MAX_LINES, MAX_MODULES = 350, 10


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports anywhere in its body."""
    files = {module_name(p): p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    anchor = mod.split(".")[: len(mod.split(".")) - node.level + is_pkg]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base
                           for a in node.names]
            for t in targets:
                while t and t not in files:  # a name inside a module: the module
                    t = t.rpartition(".")[0]
                if t and t != mod:
                    graph[mod].add(t)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_walker_finds_a_known_circle(tmp_path):
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_no_import_circles():
    found = cycles(import_graph())
    assert not found, "import circles:\n" + "\n".join(" <-> ".join(c) for c in found)


def layer(module: str, layers: tuple[tuple[str, ...], ...]) -> int | None:
    """The index of the layer whose longest prefix names `module` (None: in none of them)."""
    best = None
    for i, group in enumerate(layers):
        for prefix in group:
            if (module == prefix or module.startswith(prefix + ".")) and (
                    best is None or len(prefix) > best[1]):
                best = (i, len(prefix))
    return None if best is None else best[0]


def upward(graph: dict[str, set[str]], layers, allowed=()) -> list[str]:
    """'a -> b' for every import from a module to one of a higher layer, but those `allowed`."""
    out = []
    for mod, deps in sorted(graph.items()):
        for dep in sorted(deps):
            lo, hi = layer(mod, layers), layer(dep, layers)
            if lo is not None and hi is not None and hi > lo and (mod, dep) not in allowed:
                out.append(f"{mod} -> {dep}")
    return out


def test_the_layer_check_finds_an_import_back_up():
    graph = {"a.low": {"a.high"}, "a.high": {"a.low"}, "b": {"a.low"}}
    assert upward(graph, (("a.low",), ("a.high", "b"))) == ["a.low -> a.high"]
    assert layer("a.low.x", (("a",), ("a.low",))) == 1  # the longest prefix wins


def test_packages_import_only_downward():
    """analysis never imports the commands; the library imports neither (but its doors)."""
    graph = import_graph()
    doors = {(door, command) for door, command in DOORS.items()}
    assert not upward(graph, PACKAGE_LAYERS, doors), upward(graph, PACKAGE_LAYERS, doors)
    for door, command in DOORS.items():
        assert command in graph[door], f"{door} no longer opens {command}: update DOORS"
        callers = sorted(m for m, deps in graph.items() if door in deps)
        assert not callers, f"{door} is a door: {callers} import it"


def test_leviathan_layers():
    allowed = {("leviathan.config", s) for s in SCHEMAS}
    found = upward(import_graph(), LEVIATHAN_LAYERS, allowed)
    assert not found, "imports back up the library's layers:\n" + "\n".join(found)


def test_analysis_stages_import_only_downward():
    """report -> readings/power -> laws -> inputs: nothing in laws/ or inputs/ imports a
    reading or the report."""
    found = upward(import_graph(), ANALYSIS_LAYERS)
    assert not found, "imports back up the analysis's stages:\n" + "\n".join(found)


def test_no_function_is_named_by_a_string():
    """No function is looked up by a name in a string (hydra's get_method and kin) and no conf/
    value names one of the analysis: the import graph sees every edge. (importlib stays within a
    package: leviathan.lazy's exports, the bench registry.)"""
    found = []
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            text = path.read_text()
            found += [f"{path.relative_to(REPO)}: {word}" for word in
                      ("get_method", "get_class", "get_object", "hydra.utils.instantiate")
                      if word in text]
            found += [f"{path.relative_to(REPO)}: import_module of another package"
                      for node in ast.walk(ast.parse(text)) if isinstance(node, ast.Call)
                      and getattr(node.func, "attr", getattr(node.func, "id", "")) ==
                      "import_module" and node.args and isinstance(node.args[0], ast.Constant)
                      and not str(node.args[0].value).startswith(pkg)]
    config = "\n".join(p.read_text() for p in (REPO / "conf").rglob("*.yaml"))
    assert "analysis." not in config.replace("analysis.fit_scaling", ""), \
        "a conf/ value names an analysis function"
    assert not found, found


def test_analysis_modules_and_folders_stay_small():
    """No module of analysis/ over MAX_LINES lines, no folder over MAX_MODULES modules (its
    __init__ aside)."""
    long = [f"{p.relative_to(REPO)}: {n}" for p in sorted((REPO / "analysis").rglob("*.py"))
            if (n := len(p.read_text().splitlines())) > MAX_LINES]
    assert not long, f"over {MAX_LINES} lines: {long}"
    for folder in sorted({p.parent for p in (REPO / "analysis").rglob("*.py")}):
        modules = [p for p in folder.glob("*.py") if p.name != "__init__.py"]
        assert len(modules) <= MAX_MODULES, f"{folder.relative_to(REPO)}: {len(modules)} modules"


def test_each_stage_names_its_public_functions():
    """Each stage's __init__ names what the other stages and the commands take from it (its
    _EXPORTS, loaded lazily): a name another stage imports is one its __init__ names, from the
    module it comes from, and none starts with an underscore."""
    import importlib

    used = {}  # (stage, name) -> modules of that stage it is imported from, elsewhere
    for path in sorted([*(REPO / "analysis").rglob("*.py"), *(REPO / "leviathan").rglob("*.py")]):
        mod = module_name(path)
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                    "analysis.")):
                continue
            parts = node.module.split(".")
            if len(parts) < 3 or parts[1] not in STAGES or mod.startswith(".".join(parts[:2])):
                continue
            for alias in node.names:
                used.setdefault((parts[1], alias.name), set()).add(parts[2])
    for (stage, name), modules in sorted(used.items()):
        exports = importlib.import_module(f"analysis.{stage}")._EXPORTS
        assert not name.startswith("_"), f"analysis.{stage}: {name} is private"
        assert exports.get(name) in modules, \
            f"analysis/{stage}/__init__.py does not name {name} (from {sorted(modules)})"
    for stage in STAGES:
        package = importlib.import_module(f"analysis.{stage}")
        assert package.__all__ and all(getattr(package, n) is not None for n in package.__all__)


def test_lint_and_complexity():
    """ruff (pyproject: pycodestyle, pyflakes, isort, bugbear, pyupgrade and C901 at complexity
    10; each function over it carries a one-line reason) is clean over the whole tree."""
    import shutil
    import subprocess
    import sys

    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    out = subprocess.run([ruff, "check", "--output-format", "concise", str(REPO)], cwd=REPO,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:]
