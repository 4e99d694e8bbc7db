"""Fresh random generators for every test, whatever the student's code drew before.

A hidden test that builds ``nn.Conv2d(4, 6, 3)`` *after* calling the student's function gets
different weights when the student built their modules with ``copy.deepcopy`` (no random
numbers drawn) instead of ``nn.Conv2d(...)`` (random initialisation): the recorded values then
differ from the reference, and a correct answer loses points. Test cells should use explicit
``torch.Generator`` objects; as a safety net the grader also calls :func:`reseed` in the kernel
just before every test cell and at every hidden block (the code that does so is written by
:mod:`prunekit.grade.assemble`). The reference run gets exactly the same treatment, so
expected values are computed under the same seeds. The seed is derived from the test's
grade_id: stable across runs and machines.
"""

from __future__ import annotations

import hashlib
import random
import sys


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
