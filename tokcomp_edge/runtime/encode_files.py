"""`tokcomp encode`: images → DIR/embeddings.npz + DIR/layout.json, through VisionRuntime.

    from tokcomp_edge.runtime.encode_files import EncodeConfig, encode_files
    result = encode_files(EncodeConfig(bundle=Path("export/internvl_pool2"), images=(Path("shelf.jpg"),),
                                       out=Path("encoded")))

The folder is staged beside DIR and renamed into place when both files are complete (atomic.py), so a bad
image, an engine of another bundle or a full disk leaves nothing behind (and an older DIR intact).
`embeddings.npz` holds `image_0`, `image_1`, … in argument order ([tokens_i, llm_hidden] float32), and the
bundle's other outputs per image as `image_<i>.<output>` (Qwen3-VL's `deepstack_<k>`, a pruner's `indices`:
[tiles, …]); `layout.json` holds one ImageLayout per image, the timings and what ran.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError

EMBEDDINGS = "embeddings.npz"
LAYOUT = "layout.json"
SCHEMA = "tokcomp-edge/encode"


@dataclass(frozen=True)
class EncodeConfig:
    """What to encode and where.

    Attributes:
        bundle: the bundle folder.
        images: image files, in the order their embeddings are keyed (image_0, image_1, …).
        out: the folder to write (must not exist unless `force`).
        engine: a TensorRT .plan built from the bundle; None runs `backend`.
        backend: `onnxruntime` or `tensorrt`.
        variant: the bundle variant ONNX Runtime runs (None: fp32; with an engine: the engine's).
        force: replace an existing `out`.
        pad_static: pad a static-batch engine's last call instead of refusing it.
    """

    bundle: Path
    images: tuple[Path, ...]
    out: Path
    engine: Path | None = None
    backend: str = "onnxruntime"
    variant: str | None = None
    force: bool = False
    pad_static: bool = False


@dataclass
class EncodeFilesResult:
    """What was written. `document` is layout.json's content."""

    path: Path
    shapes: list[tuple[int, int]]
    document: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"out": str(self.path), "embeddings": str(self.path / EMBEDDINGS), "layout": str(self.path / LAYOUT),
                **self.document}


def encode_files(cfg: EncodeConfig) -> EncodeFilesResult:
    """Encode `cfg.images` with the bundle and write the two files atomically.

    Raises:
        InputError (exit 2): no images, an unreadable / non-image / zero-size file, a variant the bundle lacks,
            an engine of another bundle, a batch a static engine cannot take; OutputError: `out` exists.
        RuntimeMissing (exit 3): ONNX Runtime / TensorRT absent.
    """
    from ..atomic import ensure_writable_parent, staged_dir
    from ..errors import OutputError
    from .runtime import VisionRuntime

    if not cfg.images:
        raise InputError("no images given", "name image files, e.g. `tokcomp encode BUNDLE shelf.jpg --out DIR`")
    out = Path(cfg.out)
    if out.exists() and not cfg.force:
        raise OutputError(f"{out} already exists", "pass --force to replace it, or choose another --out")
    for p in cfg.images:
        if not Path(p).is_file():
            raise InputError(f"image {p} does not exist or is not a file", "pass image files (JPEG, PNG, …)")
    ensure_writable_parent(out, probe_only=True)
    with VisionRuntime.open(cfg.bundle, engine=cfg.engine, backend=cfg.backend, variant=cfg.variant,
                            pad_static=cfg.pad_static) as rt:
        result = rt.encode([Path(p) for p in cfg.images])
        ran = rt.backend.label
    arrays = {f"image_{i}": emb for i, emb in enumerate(result.embeddings)}
    for i, extra in enumerate(result.outputs):
        arrays.update({f"image_{i}.{name}": value for name, value in extra.items()})
    document = {"schema": SCHEMA, "schema_version": 1, "bundle": str(cfg.bundle), "backend": ran,
                "engine": str(cfg.engine) if cfg.engine else None,
                "images": [{"key": f"image_{i}", "file": str(p), "shape": list(arrays[f"image_{i}"].shape),
                            "outputs": {f"image_{i}.{k}": list(v.shape) for k, v in result.outputs[i].items()},
                            "layout": lay.to_dict()} for i, (p, lay) in enumerate(zip(cfg.images, result.layout))],
                "timings": result.timings.to_dict()}
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    with staged_dir(out, replace=cfg.force) as tmp:
        (tmp / EMBEDDINGS).write_bytes(buf.getvalue())
        (tmp / LAYOUT).write_text(json.dumps(document, indent=2) + "\n")
    return EncodeFilesResult(path=out, shapes=[tuple(a.shape) for a in result.embeddings], document=document)
