"""Validation: run a bundle variant or a TensorRT engine against the golden reference and PyTorch,
judge accuracy against per-precision tolerances, time it, and write the report (JSON, Markdown, HTML).

    from tokcomp_edge.validation import ValidateConfig, validate
    result = validate(ValidateConfig(target=Path("export/tiny-clip_pool2")))
    if not result: print(result.failures)
    print(result.report_paths["html"])

Modules: config (ValidateConfig), target (bundle/engine resolution), runners/ (ONNX Runtime, PyTorch,
TensorRT), inputs, latency, memory, economics, environment, pipeline (validate), report_json /
report_md / report_html / report_tables / plots. The comparison and the tolerances are the ones every
stage uses (tokcomp_edge.core.comparison, core.tolerance); they are re-exported here for callers of
`validate`.
"""

from ..core.tolerance import DEFAULTS, Override, Tolerance, parse_override
from .config import ValidateConfig, parse_batches
from .pipeline import ValidationResult, validate
from .report_json import load_report, render_report

__all__ = ["DEFAULTS", "Override", "Tolerance", "ValidateConfig", "ValidationResult", "load_report",
           "parse_batches", "parse_override", "render_report", "validate"]
