"""Static-ratio token compressors: spec parsing and token arithmetic (pure Python), functions and modules (torch).

Import `spec` and `plan` cheaply; `functional` and `module` import torch.
"""

from .plan import CompressionPlan, plan_compression  # noqa: F401
from .spec import METHODS, CompressionSpec, parse_spec  # noqa: F401
