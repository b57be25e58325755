"""Validation: run a bundle variant or a TensorRT engine against the golden reference and PyTorch,
judge accuracy against per-precision tolerances, time it, and write the report (JSON, Markdown, HTML).

    from tokcomp_edge.validation import ValidateConfig, validate
    result = validate(ValidateConfig(target=Path("export/tiny-clip_pool2")))
    if not result: print(result.failures)
    print(result.report_paths["html"])

Modules: config (ValidateConfig), target (bundle/engine resolution), runners/ (ONNX Runtime, PyTorch,
TensorRT), inputs, metrics, accuracy, tolerances, latency, memory, economics, environment, pipeline
(validate), report_json / report_md / report_html / report_tables / plots.
"""

from .config import ValidateConfig, parse_batches
from .pipeline import ValidationResult, validate
from .report_json import load_report, render_report
from .tolerances import DEFAULTS, Override, Tolerance, parse_override

__all__ = ["DEFAULTS", "Override", "Tolerance", "ValidateConfig", "ValidationResult", "load_report",
           "parse_batches", "parse_override", "render_report", "validate"]
