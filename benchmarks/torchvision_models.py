"""Import torchvision's classification models beside a torch build its compiled ops do not fit.

Why this exists: ``import torchvision`` runs ``torchvision/_meta_registrations.py``, which
registers "meta" (shape-only) kernels for torchvision's compiled C++ operators
(``torchvision::nms``, ``roi_align``, ...). When torchvision's compiled extension does not load
beside the installed torch -- here the CPU build of torch 2.13 next to PyPI's torchvision
0.28.0 wheel -- those operators were never registered, and the import fails with::

    RuntimeError: operator torchvision::nms does not exist

The classification models (``torchvision.models.resnet18`` and friends) are plain Python and
use none of those operators (they are for detection: NMS, RoI pooling, deformable conv). So
we put an empty module in place of ``torchvision._meta_registrations`` *before* the import:
everything else imports as usual, and only the detection ops stay unusable (they would fail
when called, as they already do without the compiled extension).

Used by ``bench_archs.py``; not part of prunekit.
"""

from __future__ import annotations

import sys
import types

_META = "torchvision._meta_registrations"


def import_torchvision() -> types.ModuleType:
    """Return ``torchvision.models``, importing torchvision with the shim described above.

    Raises:
        ImportError: torchvision is not installed (with the command that installs it
        without touching the installed torch).
    """
    sys.modules.setdefault(_META, types.ModuleType(_META))
    try:
        import torchvision
    except ModuleNotFoundError as err:
        if err.name != "torchvision":
            raise
        raise ImportError(
            "torchvision is not installed; install the release that matches your torch "
            "without letting pip replace torch, e.g. `pip install --no-deps torchvision==0.28.0` "
            "for torch 2.13") from err
    return torchvision.models


def torchvision_version() -> str:
    """torchvision's version string, or ``"not installed"``."""
    try:
        import_torchvision()
    except ImportError:
        return "not installed"
    import torchvision

    return torchvision.__version__
