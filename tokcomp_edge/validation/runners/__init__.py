"""Runtimes behind one interface: activate() / infer(feed) -> outputs / deactivate(), a context manager.

Constructing a runner does no work; everything heavy (imports, sessions, engines, GPU memory) happens
in activate(). Implementations: OnnxRuntimeRunner (onnxrt), TorchRunner (pytorch), TensorRTRunner
(tensorrt). Import them from their modules so that the heavy runtime of one is never imported for another.
"""

from .base import Runner

__all__ = ["Runner"]
