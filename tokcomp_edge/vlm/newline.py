"""The tensors beside the vision path a device needs to finish a VLM's image features, written into the bundle.

LLaVA-OneVision's `get_image_features` ends with `pack_image_features`, which appends the learned
`image_newline` vector (model.image_newline, [llm hidden]) at the end of every feature row. It is a model
parameter, not part of the graph's per-tile work, so the bundle carries it as `image_newline.npy`, listed
with its sha256 in the manifest's `files` and described in `vlm.image_newline`; the device runtime
(runtime/packing.py) reads it from there. A checkpoint's own tensor is read (5.x name `model.image_newline`,
pre-5.0 `image_newline`); a preset exported with random weights gets a seeded random one, like its tower.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import WeightsError

NEWLINE_FILE = "image_newline.npy"
_NAMES = ("model.image_newline", "image_newline")


def image_newline(spec, model: str, weights: Path | None, seed: int) -> tuple[np.ndarray, str] | None:
    """The image_newline vector of a LLaVA-OneVision VlmSpec and where it came from; None for other families.

    Raises:
        WeightsError: the checkpoint holds no image_newline tensor, or one of the wrong size.
    """
    if spec.family.model_type != "llava_onevision":
        return None
    import torch

    from .checkpoint import find_weights, read_tensors, weight_source

    dim = int(spec.llm.hidden)
    src = None
    if weights is not None:
        src = weight_source(Path(weights))
    elif model.startswith("hf:"):
        src = find_weights(Path(model[3:]).expanduser())
    if src is None:
        gen = torch.Generator().manual_seed(seed + 7919)
        value = torch.randn(dim, generator=gen) / dim ** 0.5
        return value.numpy().astype(np.float32), f"random (seed {seed}), as transformers initialises it"
    name = next((n for n in _NAMES if n in src.files), None)
    if name is None:
        raise WeightsError(f"{src.path} holds no image_newline tensor (looked for {', '.join(_NAMES)})",
                           "point at the full LLaVA-OneVision checkpoint (the newline is a model parameter)")
    value = read_tensors(src, [name])[name].float().reshape(-1)
    if value.numel() != dim:
        raise WeightsError(f"{src.path}: {name} has {value.numel()} values, the LLM hidden size is {dim}",
                           "use the config.json that came with these weights")
    return value.numpy().astype(np.float32), f"checkpoint tensor {name}"


def write_vlm_files(folder: Path, spec, model: str, weights: Path | None, seed: int) -> dict[str, Any]:
    """Write the family's extra tensors into the staged bundle folder.

    Returns:
        the manifest's `vlm` additions ({"image_newline": {file, shape, dtype, source}}), {} for families
        without any; the caller lists the written files in `files`.
    """
    found = image_newline(spec, model, weights, seed)
    if found is None:
        return {}
    value, source = found
    buf = io.BytesIO()
    np.save(buf, value, allow_pickle=False)
    (Path(folder) / NEWLINE_FILE).write_bytes(buf.getvalue())
    return {"image_newline": {"file": NEWLINE_FILE, "shape": list(value.shape), "dtype": "float32",
                              "source": source}}
