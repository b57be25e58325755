"""Static-ratio token compressors: spec parsing and token arithmetic (pure Python), functions and modules (torch).

Import `spec` cheaply; `functional` and `module` import torch.
"""

from .spec import (METHODS, CompressionPlan, CompressionSpec, method_table, parse_spec,  # noqa: F401
                   plan_compression)
