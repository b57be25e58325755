"""Reading weight files safely and loading them strictly into a tower.

Formats: `.safetensors` (read with safetensors, no code runs) or anything `torch.load` reads with
`weights_only=True` (a pickle that needs arbitrary code — a `__reduce__` payload — is refused by
torch's restricted unpickler and never executed). A checkpoint may wrap its tensors in a
"state_dict" or "model" key. Loading is strict: every parameter of the tower's model must be filled
with the right shape, and every tensor in the file must be used (known head keys aside, see the
towers' `adapt_state_dict`), so a wrong file fails loudly instead of leaving random parameters.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.bundle import sha256_file
from ..errors import WeightsError
from .spec import WeightsOrigin

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

WRAPPER_KEYS = ("state_dict", "model", "module")
_SHOW = 5  # how many offending keys an error message names


def _names(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOW])
    return shown + (f" (+{len(keys) - _SHOW} more)" if len(keys) > _SHOW else "")


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a weights file into a flat {name: tensor} dict without executing any code from it.

    Args:
        path: a `.safetensors` file, or a torch checkpoint (`.pt`, `.pth`, `.bin`, …).
    Returns:
        The tensors, unwrapped from a "state_dict" / "model" / "module" key when the file has one.
    Raises:
        WeightsError: missing, unreadable, corrupt, not a tensor dict, or a pickle needing code.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist",
                           "check the path given to --weights (nothing is downloaded)")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            obj: Any = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise WeightsError(f"weights file {path} is not a readable safetensors file ({exc})",
                               "re-save it with safetensors.torch.save_file") from exc
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            if "weights only" not in str(exc).lower():
                raise WeightsError(f"weights file {path} is corrupt ({_first_line(exc)})",
                                   "check the file is complete, or convert it to .safetensors") from exc
            msg = str(exc).strip().splitlines()
            detail = next((m for m in msg if "GLOBAL" in m or "Unsupported" in m), msg[0] if msg else "")
            # torch's restricted (weights_only) unpickler raises this for any non-allowlisted global,
            # before calling it: the payload never runs.
            raise WeightsError(
                f"weights file {path} is not a plain tensor checkpoint: loading it would run code from "
                f"the file, which tokcomp refuses ({detail.strip()[:200]})",
                "re-save only the tensors: torch.save(model.state_dict(), path) or safetensors") from exc
        except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError, EOFError, zipfile/pickle errors
            raise WeightsError(f"weights file {path} cannot be read by torch.load ({_first_line(exc)})",
                               "check the file is complete, or convert it to .safetensors") from exc
    return unwrap_tensors(obj, path)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:200]}" if text else type(exc).__name__


def unwrap_tensors(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """The flat {name: tensor} dict inside a loaded checkpoint object (wrapper keys and `module.` removed)."""
    import torch

    for _ in range(2):  # e.g. {"model": {"state_dict": …}} is not worth deeper guessing
        if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, dict) or not obj:
        raise WeightsError(f"weights file {path} holds {type(obj).__name__}, not a dict of tensors",
                           "save model.state_dict(), optionally under a 'state_dict' or 'model' key")
    bad = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise WeightsError(f"weights file {path} has no tensors (keys: {_names(bad)})",
                           "save model.state_dict(), optionally under a 'state_dict' or 'model' key")
    # Non-tensor extras next to the tensors (an epoch counter, a config) are ignored, not loaded.
    return {str(k).removeprefix("module."): v for k, v in tensors.items()}


def strict_load(module: nn.Module, sd: dict[str, torch.Tensor], path: Path, model_name: str) -> None:
    """Copy `sd` into `module`, raising WeightsError on any missing, unexpected or mis-shaped key."""
    target = module.state_dict()
    missing = [k for k in target if k not in sd]
    unexpected = [k for k in sd if k not in target]
    shapes = [f"{k} {tuple(sd[k].shape)} vs {tuple(v.shape)}" for k, v in target.items()
              if k in sd and tuple(sd[k].shape) != tuple(v.shape)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing: {_names(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected: {_names(unexpected)}")
    if shapes:
        problems.append(f"{len(shapes)} with the wrong shape (file vs model): {_names(shapes)}")
    if problems:
        raise WeightsError(f"weights file {path} does not fit {model_name}: " + "; ".join(problems),
                           "pass weights saved from this exact architecture (same preset / config)")
    module.load_state_dict({k: v.to(target[k].dtype) for k, v in sd.items()}, strict=True)


def resample_pos_table(table: torch.Tensor, shape: Any, prefix: int, antialias: bool) -> torch.Tensor | None:
    """Bicubically resample a square grid of position embeddings to the grid `shape` asks for.

    Args:
        table: [N0 + prefix, C] or [1, N0 + prefix, C] from the file.
        shape: the model's parameter shape (same layout, N1 + prefix rows).
        prefix: leading rows (CLS) that are not part of the grid and are copied unchanged.
        antialias: as the family's HF interpolate_pos_encoding does it.
    Returns:
        The table at the model's grid, in the file's dtype; None when the file's table is not a
        square grid of the same width (then it is left as is and the strict load reports it).
    """
    import torch
    import torch.nn.functional as F

    squeeze = table.dim() == 2
    t = table.unsqueeze(0) if squeeze else table
    n_old, n_new = t.shape[1] - prefix, int(shape[-2]) - prefix
    g_old, g_new = round(n_old ** 0.5), round(n_new ** 0.5)
    if n_old <= 0 or g_old * g_old != n_old or g_new * g_new != n_new or t.shape[-1] != shape[-1]:
        return None  # not the same architecture at another size: strict_load names the mismatch
    c = t.shape[-1]
    grid = t[:, prefix:].reshape(1, g_old, g_old, c).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=(g_new, g_new), mode="bicubic", align_corners=False, antialias=antialias)
    grid = grid.permute(0, 2, 3, 1).reshape(1, n_new, c).to(t.dtype)
    out = torch.cat((t[:, :prefix], grid), dim=1)
    return out.squeeze(0) if squeeze else out


def apply_weights(tower: Any, path: Path) -> WeightsOrigin:
    """Load a weights file into a tower (its `core` module, after its `adapt_state_dict`).

    Args:
        tower: a VisionTower with `core` and `adapt_state_dict`.
        path: the weights file.
    Returns:
        WeightsOrigin(kind="file", path, sha256).
    """
    path = Path(path)
    sd = load_state_dict(path)
    sd = tower.adapt_state_dict(sd)
    strict_load(tower.core, sd, path, tower.spec.name)
    return WeightsOrigin(kind="file", path=str(path), sha256=sha256_file(path))
