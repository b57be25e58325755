"""Static-ratio token compressors: spec parsing and token arithmetic (pure Python), functions and modules (torch).

Import `spec` cheaply; `functional` and `module` import torch.
"""

from .spec import METHODS, CompressionPlan, CompressionSpec, parse_spec, plan_compression  # noqa: F401
