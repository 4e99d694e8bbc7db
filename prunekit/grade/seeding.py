"""Fresh random generators for every test, whatever the student's code drew before.

A hidden test that builds ``nn.Conv2d(4, 6, 3)`` *after* calling the student's function gets
different weights when the student built their modules with ``copy.deepcopy`` (no random
numbers drawn) instead of ``nn.Conv2d(...)`` (random initialisation): the recorded values then
differ from the reference, and a correct answer loses points. Test cells should use explicit
``torch.Generator`` objects; as a safety net the grader also reseeds Python's, NumPy's and
torch's global generators

* just before every test cell (a silent prelude, see :class:`prunekit.grade.runner.RunOptions`), and
* at every ``### BEGIN HIDDEN TESTS`` line: the marker comment becomes a call to :func:`reseed`
  on the same line, so line numbers in error messages do not move.

The reference run gets exactly the same treatment, so expected values are computed under the
same seeds. The seed is derived from the test's grade_id: stable across runs and machines.
"""

from __future__ import annotations

import hashlib
import random
import sys

from .cells import BEGIN_HIDDEN


def seed_for(label: str) -> int:
    """A 32-bit seed from a label (sha256, so it does not depend on PYTHONHASHSEED)."""
    return int.from_bytes(hashlib.sha256(label.encode()).digest()[:4], "little")


def reseed(label: str) -> int:
    """Seed ``random``, and NumPy's and torch's global generators if they are imported."""
    seed = seed_for(label)
    random.seed(seed)
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed(seed)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.manual_seed(seed)
    return seed


def reseed_code(label: str) -> str:
    """One line of Python that calls :func:`reseed` in the kernel (no names left behind)."""
    return f"__import__('prunekit.grade.seeding', fromlist=['reseed']).reseed({label!r})"


def reseed_hidden_blocks(source: str, label: str) -> str:
    """``source`` with each hidden-test marker line turned into a reseed (same number of lines)."""
    lines = source.split("\n")
    block = 0
    for i, line in enumerate(lines):
        if line.strip() == BEGIN_HIDDEN:
            indent = line[: len(line) - len(line.lstrip())]
            lines[i] = f"{indent}{reseed_code(f'{label}#hidden{block}')}  # {BEGIN_HIDDEN}"
            block += 1
    return "\n".join(lines)
