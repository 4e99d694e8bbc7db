"""Shipping a pruned model: ONNX export, ONNX Runtime, and what ``torch.compile`` changes.

A pruned model is a plain ``nn.Module`` with smaller layers, so every deployment path works
on it unchanged -- and each one changes *how much* of the MAC reduction becomes speed:

* **eager PyTorch** runs one operator at a time from Python: every layer pays a fixed cost
  (dispatch, allocation, a kernel launch on a GPU) whatever its width. Pruning removes MACs,
  not layers, so this fixed cost stays and the speed-up falls short of the MAC ratio,
  most at batch 1.
* **``torch.compile``** (TorchInductor) traces the model once, fuses element-wise work
  (BatchNorm, ReLU, adds) into the kernels around it and generates C++ (CPU) or Triton (GPU)
  code. Less per-layer overhead, fewer memory passes -- the first call compiles (seconds
  to a minute on a CPU, cached afterwards).
* **ONNX + ONNX Runtime**: :func:`export_onnx` writes the model as an ONNX graph (the
  ``torch.export``-based exporter, ``dynamo=True``); ONNX Runtime (a separate C++ engine,
  :class:`OnnxRuntimeModel`) optimises that graph (folds BatchNorm into the conv, fuses
  activations) and runs it with no Python in the loop. It is what many servers and phones run.

Lecture 08 measures all three on the dense and the pruned model. The ONNX dependencies are
an extra: ``pip install prunekit[deploy]`` (``onnx``, ``onnxscript``, ``onnxruntime``).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from .device import device_of
from .graph import eval_mode

__all__ = ["export_onnx", "OnnxRuntimeModel", "max_abs_error"]

# The exporter reports progress and harmless notes (optional torchvision ops it skips, constant
# folding it skips) through these loggers; in a notebook they would land in stderr.
_CHATTY_LOGGERS = ("torch.onnx", "torch.export", "torch._export", "onnxscript", "onnx_ir")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in _CHATTY_LOGGERS]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def export_onnx(model: nn.Module, example_input: Tensor, path: str | Path,
                dynamic_batch: bool = True, opset: int | None = None) -> Path:
    """Write ``model`` (in eval mode, on the CPU) as an ONNX file; returns its path.

    With ``dynamic_batch`` the batch dimension stays symbolic, so the file runs at any batch
    size; the example should then have a batch of at least 2 (a batch of 1 is specialised
    away by ``torch.export``). The input is named ``"x"``, the output ``"logits"``. The
    weights are stored inside the one file (small models), not as external data.
    The model is not changed (it is exported from a CPU copy if it lives on a GPU)."""
    from torch.export import Dim

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    source = model if device_of(model).type == "cpu" else copy.deepcopy(model).cpu()
    x = example_input.detach().cpu().contiguous()
    shapes = ({0: Dim("batch", min=1, max=4096)},) if dynamic_batch else None
    with eval_mode(source), _quiet(), torch.no_grad():
        program = torch.onnx.export(source, (x,), dynamo=True, dynamic_shapes=shapes,
                                    input_names=["x"], output_names=["logits"],
                                    opset_version=opset, verbose=False)
        program.save(str(path), external_data=False)
    return path


class OnnxRuntimeModel(nn.Module):
    """An ONNX file run by ONNX Runtime, callable like the model it came from.

    ``forward`` takes a torch tensor and returns one (NumPy in between: no copy for a
    contiguous CPU tensor). ``threads`` fixes ONNX Runtime's own thread pool (its
    ``intra_op_num_threads``) -- set it like ``measure_latency``'s ``threads``, which only
    governs PyTorch's pool. ``providers`` defaults to the CPU; with the ``onnxruntime-gpu``
    package, ``["CUDAExecutionProvider"]`` runs it on a GPU (inputs and outputs still pass
    through host memory here, which the latency then includes). The session applies all
    of ONNX Runtime's graph optimisations (``ORT_ENABLE_ALL``: BN folding, fusions)."""

    def __init__(self, path: str | Path, threads: int = 1,
                 providers: Sequence[str] = ("CPUExecutionProvider",)) -> None:
        super().__init__()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3          # errors only
        self.path, self.threads = Path(path), threads
        self.session = ort.InferenceSession(str(path), options, providers=list(providers))
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, x: Tensor) -> Tensor:
        array = np.ascontiguousarray(x.detach().cpu().numpy())
        return torch.from_numpy(self.session.run(None, {self.input_name: array})[0])

    def extra_repr(self) -> str:
        return f"{self.path.name}, threads={self.threads}, providers={self.session.get_providers()}"


@torch.no_grad()
def max_abs_error(reference: nn.Module, candidate: nn.Module, inputs: Tensor) -> float:
    """Largest absolute difference between two models' outputs on ``inputs`` (both in eval
    mode; each model gets the inputs on its own device)."""
    with eval_mode(reference), eval_mode(candidate):
        want = reference(inputs.to(device_of(reference))).float().cpu()
        got = candidate(inputs.to(device_of(candidate))).float().cpu()
    return float((got - want).abs().max())
