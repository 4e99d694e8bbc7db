"""Three rules of the lectures' prose that a reader notices and a test can check.

1. **The course as it is, never its history.** A student does not know (or care) what an earlier
   version of a notebook concluded; a sentence like "an earlier version of this lecture showed ..."
   is a note for the authors that leaked into the lesson.
2. **Every figure says what it shows.** The first markdown cell after a figure starts its point
   with "**Takeaway:**", and the code cell just before that sentence checks it (a claim, an
   nbval-compared output or an assert), so the sentence cannot drift from the figure.
3. **Nothing before it is taught.** A lecture that calls a library function or uses a term before
   the lecture that teaches it must say where it is taught: "(... lecture 06)". The map below
   names, for each such function or term, the lecture that teaches it; an earlier lecture that
   uses it in a cell a student reads must point there in its markdown.

Hidden claim cells (``jupyter.source_hidden``) are not on the reading path and are not scanned.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
LECTURES = sorted((ROOT / "notebooks").glob("*.ipynb"))
STUDENT_FACING = LECTURES + sorted((ROOT / "exercises").glob("*.ipynb")) + sorted((ROOT / "solutions").glob("*.ipynb"))

HISTORY = re.compile(
    r"\b(?:earlier|previous|older|former|first|original)\s+(?:versions?|drafts?|editions?|releases?)\s+of\s+"
    r"(?:this|the)\s+(?:lecture|notebook|course|exercise)"
    r"|\bthis\s+(?:lecture|notebook|exercise)\s+(?:used\s+to|once|previously|originally)\b"
    r"|\b(?:lecture|notebook)\s+used\s+to\s+(?:say|show|conclude|claim)\b",
    re.I)

# function or term -> the lecture that teaches it (course numbering of issue 21)
TAUGHT_IN = {
    "prunekit.prune(": "02",
    "slimming_ratios": "03",
    "build_graph": "05",
    "coupled group": "05",
    "recalibrate_bn": "06",
    "fine_tune": "06",
    "round_to": "08",
    "compare_latency": "08",
    "paired_comparison": "08",
    "fold_batchnorm": "08",
}
TOUR = "00"   # the table of contents: it names every later lecture's subject by design

CHECK = re.compile(r"NBVAL_CHECK_OUTPUT|\bassert\b|\bcheck\.(?:near|above|below|between|beats|exact)\(")


def history_sentences(path: Path) -> list[str]:
    cells = nbformat.read(path, as_version=4).cells
    return [f"cell {i}: ...{m.group(0)}..." for i, c in enumerate(cells) if c.cell_type == "markdown"
            for m in HISTORY.finditer(c.source)]


def figures_without_takeaway(path: Path) -> list[str]:
    """Figures whose next markdown cell has no checked "**Takeaway:**" sentence."""
    cells = nbformat.read(path, as_version=4).cells
    problems = []
    for i, cell in enumerate(cells):
        if cell.cell_type != "code" or not any("image/png" in o.get("data", {}) for o in cell.get("outputs", [])):
            continue
        j = next((j for j in range(i + 1, len(cells)) if cells[j].cell_type == "markdown"), None)
        if j is None or "**Takeaway:**" not in cells[j].source:
            problems.append(f"cell {i}: the figure has no takeaway in the markdown after it")
        elif not CHECK.search(next(c.source for c in reversed(cells[:j]) if c.cell_type == "code")):
            problems.append(f"cell {j}: the takeaway is not right after a cell that checks it")
    return problems


def missing_pointers(path: Path) -> list[str]:
    """Functions/terms used before the lecture that teaches them, with no pointer to it."""
    number = path.name[:2]
    cells = [c for c in nbformat.read(path, as_version=4).cells
             if not c.metadata.get("jupyter", {}).get("source_hidden")]
    text = "\n".join(c.source for c in cells).lower()
    markdown = "\n".join(c.source for c in cells if c.cell_type == "markdown")
    return [f"{term!r} is taught in lecture {where}; say so where it is first used"
            for term, where in TAUGHT_IN.items()
            if number < where and term.lower() in text
            and not re.search(rf"\b(?:lecture|notebook)s?\s+{where}\b", markdown, re.I)]


def test_the_detectors_find_what_they_are_for():
    assert HISTORY.search("Earlier versions of this lecture showed a `.pt2` many times the size")
    assert HISTORY.search("An earlier version of this notebook concluded that L1 wins")
    assert not HISTORY.search("the first version of the mask keeps every row; a later cut removes it")
    assert not HISTORY.search("Remember the previous section of this notebook")


@pytest.mark.parametrize("path", STUDENT_FACING, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_prose_describes_the_course_as_it_is(path):
    assert history_sentences(path) == []


@pytest.mark.parametrize("path", [p for p in LECTURES if p.name[:2] != TOUR], ids=lambda p: p.name)
def test_nothing_is_used_before_it_is_taught_without_a_pointer(path):
    assert missing_pointers(path) == []


@pytest.mark.parametrize("path", LECTURES, ids=lambda p: p.name)
def test_every_figure_has_a_checked_takeaway(path):
    assert figures_without_takeaway(path) == []


def test_the_takeaway_check_fails_without_one(tmp_path):
    figure = nbformat.v4.new_code_cell("plt.show()", outputs=[nbformat.v4.new_output(
        "display_data", data={"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"})])
    claim = nbformat.v4.new_code_cell('check.above("x", x, 1.0)')
    nb = nbformat.v4.new_notebook(cells=[figure, nbformat.v4.new_markdown_cell("Nice, isn't it?")])
    path = tmp_path / "01_example.ipynb"
    nbformat.write(nb, path)
    assert figures_without_takeaway(path) == ["cell 0: the figure has no takeaway in the markdown after it"]
    nb.cells[1].source = "**Takeaway:** x is above 1."
    nbformat.write(nb, path)
    assert figures_without_takeaway(path) == ["cell 1: the takeaway is not right after a cell that checks it"]
    nb.cells.insert(1, claim)
    nbformat.write(nb, path)
    assert figures_without_takeaway(path) == []


def test_the_pointer_check_fails_without_a_pointer(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("We repair it."),
                                         nbformat.v4.new_code_cell("recalibrate_bn(model, calib)")])
    path = tmp_path / "01_example.ipynb"
    nbformat.write(nb, path)
    assert missing_pointers(path) == ["'recalibrate_bn' is taught in lecture 06; say so where it is first used"]
    nb.cells[0].source = "We repair it (`recalibrate_bn`, lecture 06)."
    nbformat.write(nb, path)
    assert missing_pointers(path) == []
