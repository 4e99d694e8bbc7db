"""Lectures 01 and 01b measure the same masking setting twice; their numbers must agree and each must
name the other's, so a reader who meets "30.3%" in one and "95.8%" in the other sees why they differ.

Lecture 01 masks half of every convolution (30.3% with no repair), then the same half of every layer
but the first (95.8%); lecture 01b's unstructured pattern leaves the first convolution dense, since 2:4
cannot apply to a one-channel input (95.8%). Both numbers are read from the committed claim lines
(``prunekit.claims`` prints ``ok  <claim>: <value> on this machine``).
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
L01 = NOTEBOOKS / "01_why_structured_pruning.ipynb"
L01B = NOTEBOOKS / "01b_nm_sparsity.ipynb"


def measured(path: Path, claim: str) -> str:
    """The value a committed claim line of ``path`` reports for the claim that starts with ``claim``."""
    for cell in nbformat.read(path, as_version=4).cells:
        for output in cell.get("outputs", []):
            for line in output.get("text", "").splitlines():
                found = re.match(rf"\s*ok\s+{re.escape(claim)}.*?: (\S+) on this machine", line)
                if found:
                    return found.group(1)
    raise AssertionError(f"{path.name}: no passing claim line starts with {claim!r}")


def markdown(path: Path) -> str:
    return "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown")


def test_01_and_01b_measure_the_same_setting_alike():
    first_dense_01 = measured(L01, "every layer but the first masked 50%, no repair")
    first_dense_01b = measured(L01B, "unstructured 50%, first convolution dense, no repair")
    assert first_dense_01 == first_dense_01b


def test_each_names_the_other_number():
    every_conv = measured(L01, "zeroing half of every convolution's weights, no repair")
    first_dense = measured(L01B, "unstructured 50%, first convolution dense, no repair")
    assert every_conv in markdown(L01B) and "notebook 01" in markdown(L01B)
    assert first_dense in markdown(L01) and "01b" in markdown(L01)
