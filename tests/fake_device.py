"""A second device for machines without a GPU: ``fakegpu``, which computes on the CPU.

Why: "runs on any device" is easy to claim and hard to check on a CPU-only machine -- a stray
``torch.zeros(n)`` (a CPU tensor) next to a CUDA weight only fails on a GPU. This module
registers a real PyTorch device type, ``fakegpu``, through PyTorch's Python backend hooks
(``torch.utils.backend_registration``, the ``PrivateUse1`` dispatch key). Its tensors are
wrapper subclasses whose data is an ordinary CPU tensor; every operation runs on that data
with the CPU kernels, so results are *bit-identical* to the CPU's, and:

* ``tensor.device`` is ``fakegpu:0``, ``model.to("fakegpu")`` moves parameters and buffers,
  ``torch.zeros(3, device="fakegpu")`` makes a fake-device tensor;
* an operation that mixes a fake-device tensor with a CPU tensor of one or more dimensions
  fails exactly as CUDA does ("Expected all tensors to be on the same device"); CPU
  zero-dimensional tensors (scalars) are allowed, as CUDA allows them. It is stricter than
  CUDA in one way: CPU *index* tensors are refused too, so code that relies on CUDA moving
  them implicitly is flagged.

Only for tests; ``register()`` is idempotent and affects no CPU tensor.
"""

from __future__ import annotations

import torch
from torch.utils._pytree import tree_flatten, tree_map

NAME = "fakegpu"
#: ops whose job is to move data between devices: a CPU tensor argument is expected
_TRANSFERS = {"copy_", "_to_copy", "_copy_from", "_copy_from_and_resize",
              "_has_compatible_shallow_copy_type", "set_"}
_library: list[torch.library.Library] = []


class FakeDeviceTensor(torch.Tensor):
    """A tensor on ``fakegpu`` whose data lives in ``self.elem`` (a CPU tensor)."""

    elem: torch.Tensor

    @staticmethod
    def __new__(cls, elem: torch.Tensor) -> FakeDeviceTensor:
        return torch.Tensor._make_wrapper_subclass(
            cls, elem.size(), strides=elem.stride(), storage_offset=elem.storage_offset(),
            dtype=elem.dtype, layout=elem.layout, device=f"{NAME}:0",
            requires_grad=elem.requires_grad)

    def __init__(self, elem: torch.Tensor) -> None:
        self.elem = elem

    def __repr__(self) -> str:
        return f"FakeDeviceTensor({self.elem!r})"

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        return _run_on_cpu(func, args, kwargs or {})


def _is_fake_device(value: object) -> bool:
    return isinstance(value, (torch.device, str)) and torch.device(value).type == NAME


def _run_on_cpu(func, args, kwargs):
    name = func.__name__.split(".")[0]
    flat, _ = tree_flatten((args, kwargs))
    fakes = [a for a in flat if isinstance(a, FakeDeviceTensor)]
    if fakes and name not in _TRANSFERS:
        for a in flat:
            if isinstance(a, torch.Tensor) and not isinstance(a, FakeDeviceTensor) and a.dim():
                raise RuntimeError(f"Expected all tensors to be on the same device, but found at "
                                   f"least two devices, {NAME}:0 and {a.device}! (in {func})")
    target = kwargs.get("device")
    to_fake = _is_fake_device(target) if target is not None else bool(fakes)

    def unwrap(a):
        if isinstance(a, FakeDeviceTensor):
            return a.elem
        return torch.device("cpu") if isinstance(a, torch.device) and a.type == NAME else a

    out = func(*tree_map(unwrap, args), **tree_map(unwrap, kwargs))
    owner = {id(a.elem): a for a in fakes}      # in-place ops return their own argument

    def wrap(o):
        if isinstance(o, torch.Tensor) and not isinstance(o, FakeDeviceTensor):
            if id(o) in owner:
                return owner[id(o)]
            return FakeDeviceTensor(o) if to_fake else o
        return o

    return tree_map(wrap, out)


def _backend_fallback(op, *args, **kwargs):
    # reached by factory functions (torch.zeros(..., device="fakegpu")) and CPU -> fakegpu
    # copies, which have no fake-device tensor argument to dispatch on
    return _run_on_cpu(op, args, kwargs)


def register() -> torch.device:
    """Make ``fakegpu`` a device of this process (once); returns it."""
    if not _library:
        from torch.utils.backend_registration import _setup_privateuseone_for_python_backend

        if torch._C._get_privateuse1_backend_name() != "privateuseone":
            raise RuntimeError("another PrivateUse1 backend is registered in this process")
        _setup_privateuseone_for_python_backend(NAME)
        lib = torch.library.Library("_", "IMPL")
        lib.fallback(_backend_fallback, "PrivateUse1")
        _library.append(lib)
    return torch.device(NAME, 0)
