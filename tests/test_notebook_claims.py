"""Every quantitative sentence of a lecture stands next to a check, and every check holds anywhere.

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

The rule that makes those checks hold on every machine (README, *Checks that hold on every
machine*): **nbval compares only output that is identical on every machine** -- integer counts
(params, MACs, widths, groups), names, structure, decisions with a wide margin. Anything computed
in floating point from training, data-dependent scores or timing differs in its last digits
between CPUs and kernel sets, so it is checked with a measured band (``prunekit.claims``), never
as a string. The second half of this file enforces it: the output of every ``# NBVAL_CHECK_OUTPUT``
cell is scanned for decimals and percentages, and a cell that prints one anyway must say why it
is machine-independent in its metadata: ``{"prunekit": {"portable": "<reason>"}}``.
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


CLAIM_CALL = re.compile(r"\bcheck\.(near|above|below|between|beats|exact)\(")


def is_check(cell) -> bool:
    return cell.cell_type == "code" and ("NBVAL_CHECK_OUTPUT" in cell.source or "assert " in cell.source
                                         or bool(CLAIM_CALL.search(cell.source)))


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


# a decimal (98.0, x2.6, 1.5e-06) or a percentage (96.6%), but not a dotted name (features.1.0)
FLOAT_TEXT = re.compile(r"\d+(?:\.\d+)?\s?%|(?<![\w.])[x×]?\d+\.\d+(?:e[-+]?\d+)?(?![\w]|\.\w)|\d\.?\d*e[-+]\d+")


def output_text(cell) -> str:
    return "".join(o.get("text", "") if o.output_type == "stream" else o.get("data", {}).get("text/plain", "")
                   for o in cell.get("outputs", []))


def machine_dependent_outputs(path: Path) -> list[str]:
    """nbval-compared cells whose output holds a decimal or a percentage, with no reason given."""
    problems = []
    for i, cell in enumerate(nbformat.read(path, as_version=4).cells):
        if cell.cell_type != "code" or "NBVAL_CHECK_OUTPUT" not in cell.source:
            continue
        found = FLOAT_TEXT.findall(output_text(cell))
        if found and not cell.metadata.get("prunekit", {}).get("portable"):
            problems.append(f"cell {i} ({cell.get('id')}): prints {found[:6]} -- check these with "
                            f"prunekit.claims, or give the reason in metadata prunekit.portable")
    return problems


def test_the_scanner_finds_machine_dependent_numbers_and_skips_names():
    assert FLOAT_TEXT.findall("accuracy 96.60% (966/1000), loss 0.0682, x2.6, 1.91e-06") == \
        ["96.60%", "0.0682", "x2.6", "1.91e-06"]
    assert FLOAT_TEXT.findall("features.1.0 layer1.0.conv1 (64, 32, 3, 3) 9,216 of 18,432 True") == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_nbval_compares_only_machine_independent_output(path):
    assert machine_dependent_outputs(path) == []
