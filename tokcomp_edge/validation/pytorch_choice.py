"""Whether validate runs the PyTorch reference (`--torch off|auto|require`), and on which device."""

from __future__ import annotations

from ..errors import RuntimeMissing
from .config import ValidateConfig


def torch_decision(cfg: ValidateConfig, manifest: dict) -> tuple[bool, str | None]:
    """(use PyTorch, why not): off → never; require → PyTorch must import (exit 3 otherwise); auto → when it
    imports and the bundle's module can be rebuilt here (its weights file and hf: folder are there)."""
    if cfg.torch == "off":
        return False, "disabled (--torch off)"
    from .runners.pytorch import torch_available

    ok, reason = torch_available()
    if not ok and cfg.torch == "require":
        raise RuntimeMissing(f"--torch require, but {reason}", "pip install 'tokcomp-edge[export]', or use --torch auto")
    if ok and cfg.torch == "auto":
        # --torch auto falls back to the golden reference alone when the module cannot be rebuilt here
        # (--torch require still fails, at the rebuild, with the same reason).
        from ..export.rebuild import rebuild_blocker

        blocker = rebuild_blocker(manifest)
        if blocker:
            return False, f"{blocker} (golden reference only; --torch require to insist)"
    return ok, reason


def torch_cuda() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False
