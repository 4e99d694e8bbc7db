"""prunekit -- structured (channel) pruning you can read in a lecture.

The path of one pruning call, one module each::

    model --graph--> coupled channel groups --importance--> scores --plan--> channels to cut
          --surgery--> a smaller model, checked against zero-masking of the same channels

Note: ``prunekit.plan`` is the *function* that makes a plan; the module behind it is imported
as ``from prunekit.plan import Plan, PruneResult``.
"""

from .errors import PruningError
from .plan import PruneResult
from .prune import plan, prune, prune_iteratively

__version__ = "0.1.0"
__all__ = ["PruningError", "PruneResult", "plan", "prune", "prune_iteratively", "__version__"]
