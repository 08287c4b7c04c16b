"""The layout's promises: the pure core imports no framework (checked statically and in a fresh interpreter),
the verl glue package loads without verl, and the project's module import graph has no circle."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("llm4icd_plugins", "data_tools")
GLUE = ("llm4icd_plugins.verl", "llm4icd_plugins.llamafactory")
"""The framework subpackages: the only places under llm4icd_plugins allowed to import a framework."""
FRAMEWORKS = ("torch", "verl", "llamafactory")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules(packages=PACKAGES) -> dict[str, Path]:
    return {_module_name(p): p for pkg in packages for p in sorted((REPO / pkg).rglob("*.py"))}


def _in_glue(name: str) -> bool:
    return any(name == g or name.startswith(g + ".") for g in GLUE)


CORE = sorted(name for name in _modules(("llm4icd_plugins",)) if not _in_glue(name))


def _imports(path: Path, name: str) -> Iterator[tuple[int, str, tuple[str, ...]]]:
    """(line, absolute module, imported names) of every import in the file, function-level ones included."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, ()
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            yield node.lineno, module, tuple(alias.name for alias in node.names)


def import_graph() -> dict[str, set[str]]:
    """``{module: project modules it imports}`` over both packages; ``from pkg import mod`` points at ``pkg.mod``."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for _, module, names in _imports(path, name):
            targets = [f"{module}.{n}" for n in names if f"{module}.{n}" in modules]
            if len(targets) < len(names) or not names:
                targets.append(module)
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return cycles


# --- the checker itself, on hand-made graphs --------------------------------------------------------------

def test_cycle_finder_on_hand_made_graphs():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    two = import_cycles({"a": {"b"}, "b": {"a"}, "c": {"d", "a"}, "d": {"c"}, "e": {"e"}})
    assert sorted(two) == [["a", "b"], ["c", "d"]]


def test_graph_reads_function_level_and_relative_imports(tmp_path, monkeypatch):
    pkg = tmp_path / "llm4icd_plugins"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from llm4icd_plugins.sub import b\n")
    (pkg / "sub" / "b.py").write_text("from .. import a\nfrom . import c\n")
    (pkg / "sub" / "c.py").write_text("import llm4icd_plugins.sub\n")
    (tmp_path / "data_tools").mkdir()
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    graph = import_graph()
    assert graph["llm4icd_plugins.a"] == {"llm4icd_plugins.sub.b"}
    assert graph["llm4icd_plugins.sub.b"] == {"llm4icd_plugins.a", "llm4icd_plugins.sub.c"}
    assert graph["llm4icd_plugins.sub.c"] == {"llm4icd_plugins.sub"}
    assert import_cycles(graph) == [["llm4icd_plugins.a", "llm4icd_plugins.sub.b"]]


# --- the project --------------------------------------------------------------------------------------------

def test_the_core_is_what_the_layout_says():
    assert {"llm4icd_plugins.scoring", "llm4icd_plugins.parsing", "llm4icd_plugins.metrics"} <= set(CORE)
    assert not any(_in_glue(name) for name in CORE)
    assert {"llm4icd_plugins.verl.reward", "llm4icd_plugins.verl.dataset"} <= set(_modules())


@pytest.mark.parametrize("name", CORE)
def test_core_module_has_no_framework_import_statement(name):
    path = _modules()[name]
    found = [f"{path.relative_to(REPO)}:{line} imports {module}" for line, module, _ in _imports(path, name)
             if module.split(".")[0].lower() in FRAMEWORKS]
    assert not found, "the pure core imports a framework; move the code to llm4icd_plugins/verl or llamafactory"


_PROBE = (
    "import importlib, json, sys; importlib.import_module(sys.argv[1]); "
    f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0].lower() in {FRAMEWORKS!r})))"
)


def _loaded_frameworks(module: str) -> list[str]:
    proc = subprocess.run([sys.executable, "-c", _PROBE, module], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", CORE)
def test_importing_a_core_module_loads_no_framework(name):
    assert _loaded_frameworks(name) == []


def test_the_probe_sees_a_framework_when_one_is_imported():
    pytest.importorskip("verl.trainer", reason="verl lives in the rl environment (bash env/setup.sh rl)")
    assert "verl" in _loaded_frameworks("llm4icd_plugins.verl.dataset")


@pytest.mark.parametrize("name", ["llm4icd_plugins.verl", "llm4icd_plugins.verl.reward"])
def test_verl_glue_package_and_reward_load_without_verl(name):
    path = _modules()[name]
    assert not [m for _, m, _ in _imports(path, name) if m.split(".")[0] in FRAMEWORKS]
    assert _loaded_frameworks(name) == []


def test_no_import_circle_in_the_project():
    cycles = import_cycles(import_graph())
    assert not cycles, "import circles (function-level imports included): " + "; ".join(
        " <-> ".join(c) for c in cycles)
