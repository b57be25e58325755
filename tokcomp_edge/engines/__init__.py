"""Engines stage: build profiles, the BuildPlan, the TensorRT adapter and the CPU-side TensorRT lint.

Import-free on purpose: `tensorrt`, `onnx` and friends are imported inside the functions that need them.
"""
