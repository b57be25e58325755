"""The device side a deploying application imports: images in, the embeddings and prompt layout the LLM needs.

Core install only (numpy, PIL, and ONNX Runtime or TensorRT as the backend): nothing here imports torch or
transformers. `VisionRuntime` (runtime.py) is the entry point; backends.py runs the bundle, packing.py holds
LLaVA-OneVision's feature packing, and the processor side (processor.py, tiling.py, layout.py) cuts images
into the engine's tiles exactly as the VLM's transformers processor does and builds the prompt layout.
"""

from __future__ import annotations

from .runtime import EncodeResult, Timings, VisionRuntime

__all__ = ["EncodeResult", "Timings", "VisionRuntime"]
