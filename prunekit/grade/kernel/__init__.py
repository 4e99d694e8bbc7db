"""What runs inside the student's kernel: ``record``, ``hand_in`` and the reseed before each test.

Everything in this package is imported by the notebook being graded, next to the student's
code, so the student's code can replace any of it. The grader therefore trusts nothing that
comes out of here: it reads the *outputs* these functions emit (recorded values, handed-in
files) and judges them in its own process. Only the standard library is imported at module
level (IPython and NumPy lazily, where the kernel already has them).
"""

from .handin import hand_in
from .records import GRADING_ENV, RECORD_MIME, encode, record
from .seeding import reseed, seed_for

__all__ = ["GRADING_ENV", "RECORD_MIME", "encode", "hand_in", "record", "reseed", "seed_for"]
