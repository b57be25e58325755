"""Calibration and real-image inputs: loading and preprocessing images exactly as the manifest says.

`images` turns a folder of JPEG/PNG files into the two input forms a bundle's variants take (normalised
float32 NCHW, and raw uint8 NHWC for variants that normalise inside the graph). INT8 calibration builds on it.
"""
