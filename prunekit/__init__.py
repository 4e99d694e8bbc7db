"""prunekit -- structured (channel) pruning you can read in a lecture.

The path of one pruning call, one module each::

    model --graph--> coupled channel groups --importance--> scores --plan--> channels to cut
          --surgery--> a smaller model, checked against zero-masking of the same channels
"""

from .errors import PruningError

__version__ = "0.1.0"
__all__ = ["PruningError", "__version__"]
