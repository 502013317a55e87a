"""The layout's rules, checked on the source: no import circles, command modules independent
of each other, no module past 600 lines, and `import lmshrink` free of torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "lmshrink"
COMMANDS = (
    "finetune",
    "distill",
    "prune",
    "export",
    "quantize",
    "evaluate",
    "bench",
    "report",
    "shrink",
)
# The one command that composes others: shrink trains its candidates with distill (students)
# and prune (pruned teachers).
COMPOSED = {"lmshrink.shrink": {"lmshrink.distill", "lmshrink.prune"}}
MAX_LINES = 600


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def lmshrink_imports(path: Path, modules: set[str]) -> set[str]:
    """The lmshrink modules that `path` imports (at any depth in the file), resolved to
    modules that exist (`from lmshrink.data import splits` -> lmshrink.data.splits)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in names:
            # the longest existing module the name starts with
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name.startswith("lmshrink"):
                found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(files)
    graph = {}
    for name, path in files.items():
        # a package's __init__ is imported with any of its modules; an edge to it says nothing
        graph[name] = {m for m in lmshrink_imports(path, modules) if m != name and m in files}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_one_and_only_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_circles():
    # Edges to packages are left out: `from lmshrink import __version__` runs
    # lmshrink/__init__.py, which names the commands lazily (strings, not imports).
    packages = {module_name(p) for p in PACKAGE.rglob("__init__.py")}
    graph = {name: deps - packages for name, deps in import_graph().items()}
    assert find_cycle(graph) is None


def test_command_modules_do_not_import_each_other():
    graph = import_graph()
    for command in COMMANDS:
        others = {f"lmshrink.{c}" for c in COMMANDS} - {f"lmshrink.{command}"}
        allowed = COMPOSED.get(f"lmshrink.{command}", set())
        assert not (graph[f"lmshrink.{command}"] & others) - allowed, command


def test_building_blocks_do_not_import_commands():
    commands = {f"lmshrink.{c}" for c in COMMANDS} | {"lmshrink.cli"}
    for name, deps in import_graph().items():
        if name.count(".") >= 2:  # lmshrink.<package>.<module>
            assert not deps & commands, f"{name} imports {sorted(deps & commands)}"


def test_no_module_is_longer_than_the_limit():
    long = {
        module_name(p): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long


def test_importing_lmshrink_loads_neither_torch_nor_transformers():
    code = (
        "import sys, lmshrink; "
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
