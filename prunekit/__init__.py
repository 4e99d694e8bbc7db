"""prunekit -- structured (channel) pruning you can read in a lecture.

The path of one pruning call, one module each::

    model --graph--> coupled channel groups --importance--> scores --planning--> channels to cut
          --surgery--> a smaller model, checked against zero-masking of the same channels (verify)

``prunekit.prune`` and ``prunekit.plan`` are functions (from :mod:`prunekit.planning`);
``prunekit.prune_iteratively`` comes from :mod:`prunekit.iterative`, the settings they all
take from :mod:`prunekit.settings`. ``prunekit.prune_depth`` / ``plan_depth`` remove whole
residual blocks instead (:mod:`prunekit.depth`); Hugging Face models' head counts and config
follow a cut (:mod:`prunekit.hf`).
"""

import sys
import types

from . import iterative, planning
from .depth import plan_depth, prune_depth
from .errors import PruningError
from .iterative import prune_iteratively
from .planning import Plan, PruneResult, plan, prune
from .settings import Settings

__version__ = "0.1.0"
__all__ = ["PruningError", "Plan", "PruneResult", "Settings", "plan", "prune",
           "prune_iteratively", "plan_depth", "prune_depth", "__version__"]



def _alias(name: str, source: types.ModuleType, *more: types.ModuleType) -> None:
    """Keep an old import path working: ``from prunekit.<name> import X`` for every public X
    of the modules given. There is no module of that name any more -- ``prunekit.plan`` and
    ``prunekit.prune`` are the functions -- only this entry in ``sys.modules``."""
    alias = types.ModuleType(f"{__name__}.{name}", f"Deprecated alias of {source.__name__}.")
    for module in (source, *more):
        alias.__dict__.update({k: getattr(module, k) for k in module.__all__})
    sys.modules[alias.__name__] = alias


_alias("plan", planning)                  # from prunekit.plan import Plan, PruneResult
_alias("prune", planning, iterative)      # from prunekit.prune import prune, schedule_keep
