"""Calibration and real-image inputs: loading and preprocessing images exactly as the manifest says,
and INT8 calibration of a bundle.

    images       folder of JPEG/PNG → normalised float32 NCHW and raw uint8 NHWC, framed by the bundle's
                 preprocessing policy (tokcomp_edge/image_policy.py, shared with export, which records it)
    preprocess   `tokcomp preprocess`: images → the .npy the bundle expects
    int8         CalibrateConfig → calibrate() → the bundle's checked `int8` variant (`tokcomp calibrate`)
    qdq          ModelOpt INT8 quantization (explicit Q/DQ ONNX) on CPU
    int8_check   the int8 variant vs the golden reference, with validation's int8 tolerances

    from tokcomp_edge.calibration import CalibrateConfig, calibrate
    result = calibrate(CalibrateConfig(bundle=Path("export/siglip_pool2"), images=Path("calib_photos/")))
"""

from .int8 import CalibrateConfig, CalibrationResult, calibrate  # noqa: F401  (light: ModelOpt loads on use)
