"""Two lectures must not teach opposite things about the same measurement.

Each test here ties a fact that more than one lecture states to the model it was measured on and
to what every lecture prints about it, so a lecture that drifts (new outputs, edited prose) fails
the suite instead of contradicting another one.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
import torch

from prunekit.zoo import load_pretrained

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _lecture(pattern: str) -> Path:
    found = sorted((ROOT / "notebooks").glob(pattern))
    assert len(found) == 1, f"expected one lecture matching {pattern!r}, found {[p.name for p in found]}"
    return found[0]


def _outputs(path: Path) -> str:
    text = []
    for cell in nbformat.read(path, as_version=4).cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {}).get("text/plain", "")
            text.append(out.get("text", "") if out.output_type == "stream" else data)
    return "\n".join(text)


def _switched_on_medians() -> list[float]:
    model = load_pretrained("vgg_small_slim")
    gammas = [m.weight.detach().abs() for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    return [round(g[g >= 0.01].median().item(), 3) for g in gammas]


def test_slimmed_gammas_sit_on_different_scales_separated_by_a_gap():
    """What lectures 03 and 07 both teach: network slimming does *not* put every layer's gammas on
    one scale; a raw global threshold works because of the gap below the switched-on ones."""
    medians = _switched_on_medians()
    assert max(medians) / min(medians) > 5
    model = load_pretrained("vgg_small_slim")
    everything = torch.cat([m.weight.detach().abs() for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)])
    largest_cut = everything.sort().values[len(everything) // 2 - 1]       # a raw global 50% cut
    assert everything[everything >= 0.01].min() / largest_cut > 1e3


def test_lectures_03_and_07_print_the_same_gamma_medians():
    row = re.compile(r"^(features\.\d+\.\d+)\s+\d+\s+\d+\s+\d+\s+([0-9.]+)\s*$", re.M)
    in_03 = [float(m) for _, m in row.findall(_outputs(_lecture("03_*.ipynb")))]
    listed = re.search(r"switched-on channels \(>= 0\.01\) per layer: \[([^\]]+)\]",
                       _outputs(_lecture("*criteria*.ipynb")))
    assert listed, "lecture 07 no longer prints the medians of the switched-on gammas"
    in_07 = [float(v) for v in listed.group(1).split(",")]
    assert in_03 == in_07 == _switched_on_medians()


# "slimming trained the gammas towards one scale" / "raw gammas comparable across layers" within a
# sentence, unless negated on the way ("not ... comparable across layers")
ONE_SCALE = re.compile(r"(γ|gamma)(?:(?!\bnot\b|n't)[^.])*\b(towards?\s+(?:one|a\s+common|the\s+same)\s+scale|"
                       r"comparable\s+across\s+layers)", re.I)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_lecture_says_slimming_puts_gammas_on_one_scale(path):
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type == "markdown":
            assert not ONE_SCALE.search(cell.source), f"{path.name}: {ONE_SCALE.search(cell.source).group(0)!r}"


def test_the_phrase_check_would_have_caught_the_old_wording():
    assert ONE_SCALE.search("its L1 penalty has trained the γ's of every layer towards one scale")
    assert ONE_SCALE.search("network slimming ranks the raw |γ|, which its penalty has made comparable across layers")
    assert not ONE_SCALE.search("Its γ's are on different scales per layer")
    assert not ONE_SCALE.search("why γ's of *different* layers are not comparable across layers")
