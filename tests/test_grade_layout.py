"""The grader's house: no import cycles, and a layout that shows where each module's code runs.

* ``prunekit/grade/kernel/`` runs inside the student's kernel: standard library only at module
  level, and nothing of the grader (a kernel must not even be able to import the grader's logic
  by accident through it);
* ``prunekit/grade/sandbox/`` builds and polices the box; its launcher runs as a script with
  ``python -I`` before bwrap, so it imports nothing but the standard library;
* everything else runs in the grader. No module reaches into another's private names, and the
  limits, errors and defaults live in one place (``limits.py``).

Static checks on the source (``ast``), no kernels: a second or two.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "prunekit" / "grade"
STDLIB = set(sys.stdlib_module_names)


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = ("prunekit", *path.relative_to(PACKAGE.parent).with_suffix("").parts)
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _runtime_imports(path: Path) -> list[tuple[ast.AST, str, list[str]]]:
    """``(node, module, names)`` of every import that runs (``if TYPE_CHECKING:`` blocks do not)."""
    tree = ast.parse(path.read_text())
    skipped = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
               and ast.unparse(block.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")
               for n in ast.walk(block)}
    name = next(n for n, p in MODULES.items() if p == path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else [])) if node.level else node.module
            found.append((node, module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found += [(node, a.name, []) for a in node.names]
    return found


def _graph() -> dict[str, set[str]]:
    """Which grade module imports which (``from . import x`` counts as importing ``x``)."""
    graph = {}
    for name, path in MODULES.items():
        deps = set()
        for _, module, names in _runtime_imports(path):
            for imported in names or [""]:
                full = f"{module}.{imported}" if imported else module
                deps.add(full if full in MODULES else module)
        graph[name] = {d for d in deps if d in MODULES and d != name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle, as the list of modules around it, or []."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        stack.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_prunekit_grade_has_no_import_cycle():
    graph = _graph()
    assert "prunekit.grade.limits" in graph and graph["prunekit.grade.reference"]  # the walk found the modules
    assert _cycle(graph) == []


def test_limits_import_nothing_of_the_grader():
    assert _graph()["prunekit.grade.limits"] == set()


@pytest.mark.parametrize("name", [n for n in MODULES if n.startswith("prunekit.grade.kernel")
                                  or n == "prunekit.grade.sandbox.launcher"])
def test_code_that_runs_in_the_kernel_or_before_the_box_imports_only_the_standard_library(name):
    tree_imports = _runtime_imports(MODULES[name])
    top_level = {id(n) for n in ast.parse(MODULES[name].read_text()).body}
    outside = []
    for node, module, _ in tree_imports:
        root = module.split(".")[0]
        local = module.startswith("prunekit.grade.kernel") if "kernel" in name else False
        if root not in STDLIB and not local and (id(node) in top_level or "launcher" in name):
            outside.append(module)
    assert outside == [], f"{name} imports {outside} at module level"


def test_no_module_imports_another_s_private_names():
    private = [f"{name}: from {module} import {imported}" for name, path in MODULES.items()
               for _, module, names in _runtime_imports(path) if module.startswith("prunekit")
               for imported in names if imported.startswith("_") and imported != "__version__"]
    assert private == []


def _module_aliases(path: Path) -> dict[str, str]:
    """Local names bound to a grade module by an import (``from . import sandbox as sb`` -> sb)."""
    aliases = {}
    for node, module, _ in _runtime_imports(path):
        for alias in node.names:
            full = f"{module}.{alias.name}" if isinstance(node, ast.ImportFrom) else alias.name
            if full in MODULES and (isinstance(node, ast.ImportFrom) or alias.asname):
                aliases[alias.asname or alias.name] = full
    return aliases


def _private_reaches(path: Path) -> list[str]:
    """``alias._name`` attribute accesses on another grade module: private cross-imports, written as
    attributes (``sb._data_files(...)``)."""
    aliases = _module_aliases(path)
    return [f"{node.value.id}.{node.attr}" for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
            and node.attr.startswith("_") and not node.attr.startswith("__")]


def test_no_module_reaches_into_another_s_private_names():
    assert {name: found for name, path in MODULES.items() if (found := _private_reaches(path))} == {}


def test_the_private_name_finder_finds_one(tmp_path, monkeypatch):
    probe = tmp_path / "probe.py"
    probe.write_text("from prunekit.grade import sandbox as sb\nfrom .sandbox import cgroups\nimport os\n"
                     "sb._is_root()\ncgroups._mounts()\nsb.resolve()\nos._exit\n")
    monkeypatch.setitem(MODULES, "prunekit.grade.probe", probe)
    assert _private_reaches(probe) == ["sb._is_root", "cgroups._mounts"]


def test_the_default_limits_are_written_once():
    """60 / 900 / 4096 appear in limits.py and nowhere else in the grader's code."""
    literals = {}
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in (60.0, 900.0, 4096) and type(node.value) is not bool:
                literals.setdefault(name, []).append(node.value)
    assert set(literals) <= {"prunekit.grade.limits"}, literals


def test_the_layout_groups_kernel_and_sandbox_code():
    assert {n.rsplit(".", 1)[-1] for n in MODULES if n.startswith("prunekit.grade.kernel.")} == {
        "records", "handin", "seeding"}
    assert {"box", "launcher", "cgroups", "watchdog", "install"} <= {
        n.rsplit(".", 1)[-1] for n in MODULES if n.startswith("prunekit.grade.sandbox.")}
    assert "pruned_model_report" not in (PACKAGE / "checks.py").read_text()  # test-only code lives in tests
