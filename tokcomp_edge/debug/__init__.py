"""`tokcomp debug`: per-block precision debugging of bundle variants and engines (see run.py)."""

from .config import DebugConfig
from .result import BlockFigures, DebugResult, NodeFigures

__all__ = ["BlockFigures", "DebugConfig", "DebugResult", "NodeFigures", "debug"]


def debug(cfg, times=None):
    """See tokcomp_edge.debug.run.debug (imported lazily: it pulls ONNX and ONNX Runtime)."""
    from .run import debug as _debug

    return _debug(cfg, times)
