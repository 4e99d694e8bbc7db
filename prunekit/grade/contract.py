"""The rules a solution notebook's test cells follow, checked: ``python -m prunekit.grade.contract solutions``.

A test cell runs inside the student's kernel, so everything in it -- hidden part included --
can be read and *called* by the student's code while it runs (from the call stack and its
globals, the line cache, an AST transformer). Hence the rules, each of which a test checks on
every solution notebook:

1. every test cell gives its task points and **records** at least one value
   (:func:`prunekit.grade.record`): recorded values are compared in the grader's own process --
   or it has a **check** (``metadata.prunekit.check``, :mod:`prunekit.grade.checks`) and hands
   its file in (``hand_in(...)``): the grader then measures the file itself;
2. **no expected result is written in a hidden block**: no ``==`` / ``!=`` against a literal
   container, string or float, no ``abs(x - 0.4) < tol`` -- the value would sit in the kernel,
   ready to be lifted. Record the value instead, with a ``hint=`` for the feedback;
3. **no reference implementation in a test**: a hidden block defines no function, class or
   lambda (it would be the answer: a solution reads it from the line cache and runs it), and no
   helper of a visible test recomputes what a task computes -- a helper that is given a task's
   inputs but never its results, and whose result is compared with something
   (:func:`reference_helpers`). A solution calls such a helper through its caller's globals.
   Expected values come from the instructor's own run, recorded outside the kernel; a helper
   that *measures* the student's result (a forward pass, a count of zeros) or builds inputs is
   fine;
4. the markers pair up (the exercise can be generated);
5. every written answer graded by hand (nbgrader's ``solution`` + ``grade`` cells) has points.

What the rules cannot check mechanically, and the variants in ``tests/grader_fixtures`` do:
that every asserted property is also recorded (an answer graded with its asserts stripped
must still lose the task), and that no test depends on the global random generator (a
correct answer that draws extra random numbers must keep full marks).
"""

from __future__ import annotations

import ast
import operator
import sys
from pathlib import Path
from typing import Any

import nbformat

from . import cells
from .checks import check_of
from .generate import make_exercise

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}


class _NotConstant(Exception):
    pass


def constant(node: ast.AST) -> Any:
    """The value of an expression made only of literals and arithmetic (``36864 * 8 + 129 * 4``)."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        return [constant(e) for e in node.elts]
    if isinstance(node, ast.Dict) and None not in node.keys:
        return {constant(k): constant(v) for k, v in zip(node.keys, node.values)}
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = constant(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        left, right = constant(node.left), constant(node.right)
        if isinstance(left, (int, float)) and isinstance(right, (int, float)) and abs(right) < 1e6:
            return _OPS[type(node.op)](left, right)
        if isinstance(left, list) and isinstance(right, (int, list)):  # [False] * 4 + [True] * 6
            return _OPS[type(node.op)](left, right)
    raise _NotConstant


def looks_like_an_answer(node: ast.AST, bound: set[str]) -> bool:
    """A literal container, a string or a float (ints are sizes and counts, and stay allowed)."""
    if isinstance(node, ast.Name):
        return node.id in bound
    try:
        value = constant(node)
    except (_NotConstant, ArithmeticError, TypeError, ValueError):
        return False
    if isinstance(value, (list, dict)):
        return len(value) > 1 or any(isinstance(v, (list, dict, str)) for v in value)
    return isinstance(value, (str, float)) and not isinstance(value, bool)


def hidden_answers(source: str) -> list[str]:
    """Comparisons in the hidden blocks of a test cell against an expected-looking literal."""
    hidden = cells.hidden_line_numbers(source)
    if not hidden:
        return []
    tree = ast.parse(source)
    bound = {n.targets[0].id for n in ast.walk(tree)
             if isinstance(n, ast.Assign) and len(n.targets) == 1 and isinstance(n.targets[0], ast.Name)
             and looks_like_an_answer(n.value, set())}
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Compare) and node.lineno in hidden):
            continue
        sides = [node.left, *node.comparators]
        equal = any(isinstance(op, (ast.Eq, ast.NotEq)) for op in node.ops)
        close = [s.args[0].right for s in sides  # abs(x - 0.4) < tol
                 if isinstance(s, ast.Call) and isinstance(s.func, ast.Name) and s.func.id == "abs"
                 and len(s.args) == 1 and isinstance(s.args[0], ast.BinOp) and isinstance(s.args[0].op, ast.Sub)]
        if (equal and any(looks_like_an_answer(s, bound) for s in sides)) or \
                any(looks_like_an_answer(c, bound) for c in close):
            found.append(f"line {node.lineno}: `{ast.get_source_segment(source, node)}`")
    return found


# ---------------------------------------------------------------- rule 3: reference implementations
_CLOSENESS = {"allclose", "equal", "isclose", "assert_close", "array_equal", "assert_allclose",
              "assert_array_equal", "assert_equal"}


def hidden_definitions(source: str) -> list[str]:
    """Functions, classes and lambdas defined on a hidden line of a test cell."""
    hidden = cells.hidden_line_numbers(source)
    return [f"line {n.lineno}: {getattr(n, 'name', 'lambda')}" for n in ast.walk(ast.parse(source))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)) and n.lineno in hidden]


def task_names(nb: nbformat.NotebookNode) -> set[str]:
    """What the students write: the functions and classes defined at the top of solution cells."""
    names: set[str] = set()
    for cell in nb.cells:
        if cell.cell_type == "code" and cells.kind(cell) == "solution":
            try:
                tree = ast.parse(cell.source)
            except SyntaxError:
                continue
            names.update(n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef)))
    return names


def reference_helpers(source: str, tasks: set[str]) -> list[str]:
    """Checks of a test cell whose expected side a helper of the cell recomputes from a task's inputs.

    A helper (a function the cell defines) is a *reference* when it is called with an argument some
    task is called with too, and never with what a task returned. Its results -- the call itself,
    an attribute, subscript or method of it, a name it is assigned to, a loop over it -- must not be
    a side of a comparison or of ``allclose`` / ``equal`` and the like, nor be subtracted from
    something there (``(got - want).abs().max() < tol``).
    """
    tree = ast.parse(source)
    helpers = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    results = _bound_from(tree, tasks, set())
    inputs = {ast.dump(a) for c in _calls(tree, tasks) for a in c.args if not isinstance(a, ast.Constant)}
    refs = set()
    for helper in helpers:
        args = [a for c in _calls(tree, {helper}) for a in c.args]
        if not any(_from(a, tasks, results) for a in args) and any(ast.dump(a) in inputs for a in args):
            refs.add(helper)
    values = _bound_from(tree, refs, set())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
        elif isinstance(node, ast.Call) and _name(node.func) in _CLOSENESS:
            sides = list(node.args)
        else:
            continue
        if any(_compares(side, refs, values) for side in sides):
            found.append(f"line {node.lineno}: `{ast.get_source_segment(source, node)}` compares with "
                         f"{', '.join(sorted(refs))}")
    return found


def _name(func: ast.AST) -> str:
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""


def _calls(tree: ast.AST, names: set[str]) -> list[ast.Call]:
    return [n for n in ast.walk(tree)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in names]


def _from(node: ast.AST, functions: set[str], names: set[str]) -> bool:
    """Is ``node`` a result of one of ``functions``: a call, a name bound to one, or an attribute,
    subscript or method call of those? (Calling such a result -- running a model it built -- is not.)"""
    while True:
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            return node.func.id in functions
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            node = node.func.value
        elif isinstance(node, (ast.Attribute, ast.Subscript)):
            node = node.value
        elif isinstance(node, ast.Name):
            return node.id in names
        else:
            return False


def _compares(side: ast.AST, functions: set[str], names: set[str]) -> bool:
    """A side of a check that is such a result, or a difference taken with one (``(got - want).abs()``)."""
    while isinstance(side, (ast.Call, ast.Attribute, ast.Subscript)) and not _from(side, functions, names):
        inner = side.func if isinstance(side, ast.Call) else side
        if not isinstance(inner, (ast.Attribute, ast.Subscript)):
            break
        side = inner.value
    if isinstance(side, ast.BinOp):
        return _compares(side.left, functions, names) or _compares(side.right, functions, names)
    return _from(side, functions, names)


def _bound_from(tree: ast.AST, functions: set[str], names: set[str]) -> set[str]:
    """Names bound (element by element for tuples; loop targets too) to results of ``functions``."""
    names = set(names)
    for _ in range(3):  # a name bound from a name bound from a call: a few rounds reach them all
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    _bind(target, node.value, functions, names)
            elif isinstance(node, (ast.For, ast.comprehension)):
                if any(_from(n, functions, names) for n in ast.walk(node.iter) if isinstance(n, ast.expr)):
                    names.update(n.id for n in ast.walk(node.target) if isinstance(n, ast.Name))
    return names


def _bind(target: ast.AST, value: ast.AST, functions: set[str], names: set[str]) -> None:
    if isinstance(target, (ast.Tuple, ast.List)) and isinstance(value, (ast.Tuple, ast.List)) \
            and len(target.elts) == len(value.elts):
        for t, v in zip(target.elts, value.elts):
            _bind(t, v, functions, names)
    elif _from(value, functions, names):
        names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))


def problems(nb: nbformat.NotebookNode) -> list[str]:
    """Everything in a solution notebook that breaks the rules above (empty: all good)."""
    found = []
    tasks = task_names(nb)
    for cell in nb.cells:
        gid = cells.grade_id(cell)
        if cells.is_manual(cell) and cells.points(cell) <= 0:
            found.append(f"{gid}: give the written answer points")
        if cells.kind(cell) != "test":
            continue
        if cells.points(cell) <= 0:
            found.append(f"{gid}: give the task points")
        try:
            check = check_of(cell)
        except ValueError as err:
            found.append(f"{gid}: {err}")
            continue
        hands_in = "hand_in(" in cell.source and repr(check.file if check else "") in cell.source.replace('"', "'")
        if check is not None and not hands_in:
            found.append(f"{gid}: the check measures {check.file!r}: save it and hand it in (hand_in) in this cell")
        if check is None and "record(" not in cell.source:
            found.append(f"{gid}: record at least one value the task computed")
        for where in hidden_answers(cell.source):
            found.append(f"{gid}: expected value written in a hidden test ({where}); record the value instead")
        for where in hidden_definitions(cell.source):
            found.append(f"{gid}: a hidden test defines {where}; a solution can read and run it -- record the "
                         "values and let the grader compare them with the solution's")
        for where in reference_helpers(cell.source, tasks):
            found.append(f"{gid}: a test helper recomputes the task's result ({where}); a solution can call it "
                         "-- record the value (or check a property) instead")
    try:
        make_exercise(nb)
    except cells.MarkerError as err:
        found.append(str(err))
    return found


def main(argv: list[str] | None = None) -> int:
    paths = [Path(a) for a in (sys.argv[1:] if argv is None else argv)] or [Path("solutions")]
    notebooks = [p for a in paths for p in (sorted(a.glob("*.ipynb")) if a.is_dir() else [a])]
    bad = 0
    for path in notebooks:
        for problem in problems(nbformat.read(path, as_version=4)):
            print(f"{path}: {problem}")
            bad += 1
    print(f"{len(notebooks)} notebook(s), {bad} problem(s)")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
