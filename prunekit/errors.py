"""The one exception prunekit raises when it will not prune."""

from __future__ import annotations

__all__ = ["PruningError"]


class PruningError(ValueError):
    """Raised when a pruning request cannot be carried out *correctly*.

    prunekit refuses rather than guesses: an op it does not understand, a ratio that would
    empty a layer, an input of the wrong shape. The message says what was wrong and what to
    do; the model you passed in is left exactly as it was.
    (A subclass of ``ValueError``, so ``except ValueError`` also catches it.)
    """
