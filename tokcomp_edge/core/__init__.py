"""What several stages share, kept small: the bundle (manifest, files, checksums), the ONNX Runtime
session loader, the one comparator with its metrics and tolerance model, and the TensorRT-parser lint.

Every stage imports from here and from the stages below it, never upwards:
    core → encoders, compression → export → calibration → engines → validation → debug → cli
Import-free on purpose: onnx and onnxruntime are imported inside the functions that need them, so the
device-side (torch-free) install can use the bundle and the lint.
"""
