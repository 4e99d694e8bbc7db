"""Every quantitative sentence of a lecture stands next to a check.

A notebook's prose must not drift from its outputs: a number in the markdown ("falls to 10%",
"x2.6 faster", "0.93") is either printed by a neighbouring cell whose output nbval compares
(``# NBVAL_CHECK_OUTPUT``) or asserted by a neighbouring cell, so the notebook fails when the
claim stops holding. This test makes that habit mechanical: it finds the numbers in each
markdown cell and requires the nearest code cell before or after it to be such a check.

Numbers that are not claims of the run are not counted: maths (``$...$``), code spans,
citations and years, references to notebooks, sections and exercises, headings, the
References section. A cell whose numbers are facts from the literature or structure (a
glossary, the shape of an image) says so in its metadata -- ``{"prunekit": {"claims":
"cited"}}`` or ``"structural"`` -- which a reviewer can see and question.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb")) + sorted((ROOT / "solutions").glob("*.ipynb"))

NUMBER = re.compile(r"(?<![\w.])(\d+(?:[.,]\d+)*\s?%|\d+\.\d+|[×x]\s?\d+(?:\.\d+)?|\d+(?:\.\d+)?\s?[×x](?![a-z])"
                    r"|\b\d{2,}(?:,\d{3})*\b)")
NOT_CLAIMS = [
    re.compile(r"\$\$.*?\$\$", re.S),                                     # display maths
    re.compile(r"\$[^$]*\$"),                                             # inline maths
    re.compile(r"`[^`]*`"),                                               # code
    re.compile(r"\[[^\]]*\]\([^)]*\)"),                                   # links
    re.compile(r"\b(19|20)\d{2}[a-z]?\b"),                                # years (citations)
    re.compile(r"\b(notebooks?|lectures?|sections?|exercises?|ex|tasks?|tables?|fig\.?|sec\.|arxiv:|iclr|"
               r"iccv|cvpr|neurips|icml)\s?[\d.,–\- ]+", re.I),
    re.compile(r"\b\d+\.\d+\.\d+\b"),                                     # versions (Torch-Pruning 1.6.1)
    re.compile(r"\b[A-Za-z]+-\d+\b"),                                      # model names (VGG-16, ResNet-56)
    re.compile(r"\*\*\d+\w?\*\*"),                                        # bold notebook numbers
]


def claims(markdown: str) -> list[str]:
    """The numbers in a markdown cell that could be claims about the run."""
    text = markdown.split("## References")[0]
    text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    for pattern in NOT_CLAIMS:
        text = pattern.sub(" ", text)
    return NUMBER.findall(text)


def is_check(cell) -> bool:
    return cell.cell_type == "code" and ("NBVAL_CHECK_OUTPUT" in cell.source or "assert " in cell.source)


def unchecked(path: Path) -> list[str]:
    cells = nbformat.read(path, as_version=4).cells
    problems = []
    for i, cell in enumerate(cells):
        if cell.cell_type != "markdown" or cell.metadata.get("prunekit", {}).get("claims"):
            continue
        found = claims(cell.source)
        before = next((c for c in reversed(cells[:i]) if c.cell_type == "code"), None)
        after = next((c for c in cells[i + 1:] if c.cell_type == "code"), None)
        if found and not any(c is not None and is_check(c) for c in (before, after)):
            problems.append(f"cell {i} ({cell.get('id')}): {found[:6]} -- {cell.source[:80]!r}")
    return problems


def test_the_detector_finds_claims_and_skips_citations():
    assert claims("accuracy falls to 10% and latency is x2.6 lower") == ["10%", "x2.6"]
    assert claims("Li et al. (2017) in notebook 02, Section 3, $0.5 x$ and `ratio=0.5`") == []
    assert claims("# 03 · heading\n## References\n* arXiv:1708.06519") == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_quantitative_sentence_is_next_to_a_check(path):
    assert unchecked(path) == []
