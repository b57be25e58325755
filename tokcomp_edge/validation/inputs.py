"""Feeds for each runtime: the same images in the layout and dtype each model input declares.

A bundle variant takes either normalised float NCHW (`pixel_values`, as exported) or raw uint8 NHWC
with the normalisation inside the graph (`nhwc` variants). The PyTorch reference always takes float
NCHW. Everything here derives both forms from one ImageBatch, so every runtime sees the same pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..calibration.images import ImageBatch, Preprocess
from ..core.bundle import Bundle, reference_key
from ..errors import BundleError

_NP_DTYPES = {"float32": np.float32, "float16": np.float16, "uint8": np.uint8, "int64": np.int64,
              "int32": np.int32, "bfloat16": np.float32}


@dataclass(frozen=True)
class InputSpec:
    """One model input as the manifest declares it."""

    name: str
    dtype: str
    layout: str  # "NCHW" | "NHWC"

    @property
    def is_uint8_nhwc(self) -> bool:
        return self.dtype == "uint8" or self.layout.upper() == "NHWC"

    @property
    def np_dtype(self):
        return _NP_DTYPES.get(self.dtype, np.float32)


def input_specs(bundle: Bundle, variant: str) -> list[InputSpec]:
    """The inputs of `variant` (its own list when the manifest has one, else the bundle's)."""
    v = bundle.variant(variant) if variant in bundle.variants() else {}
    specs = v.get("inputs") or bundle.onnx["inputs"]
    out = []
    for s in specs:
        layout = s.get("layout")
        if not layout:
            shape = s.get("shape", [])
            layout = "NHWC" if len(shape) == 4 and shape[-1] == 3 else "NCHW"
        out.append(InputSpec(name=s["name"], dtype=s.get("dtype", "float32"), layout=layout))
    return out


def output_names(bundle: Bundle, variant: str) -> list[str]:
    v = bundle.variant(variant) if variant in bundle.variants() else {}
    return [o["name"] for o in (v.get("outputs") or bundle.onnx["outputs"])]


def feed_for(specs: list[InputSpec], images: ImageBatch) -> dict[str, np.ndarray]:
    """Build a feed from images: uint8 NHWC for such inputs, else normalised NCHW in the input's dtype."""
    feed = {}
    for s in specs:
        if s.is_uint8_nhwc:
            feed[s.name] = images.uint8_nhwc
        else:
            feed[s.name] = np.ascontiguousarray(images.pixel_values.astype(s.np_dtype, copy=False))
    return feed


def recover_uint8(pixel_values: np.ndarray, pre: Preprocess) -> np.ndarray | None:
    """uint8 NHWC pixels whose normalisation is exactly `pixel_values`, or None if there are none.

    Golden inputs exported from uint8 images normalise back to integers within float rounding; random
    float inputs do not, and then a uint8 variant cannot be fed the golden inputs.
    """
    x = pixel_values.astype(np.float64).transpose(0, 2, 3, 1)
    x = (x * np.asarray(pre.std) + np.asarray(pre.mean)) * 255.0
    r = np.rint(x)
    if r.min() < 0 or r.max() > 255 or np.abs(x - r).max() > 1e-2:
        return None
    return r.astype(np.uint8)


def golden_images(bundle: Bundle, ref: dict[str, np.ndarray], batch: int, pre: Preprocess,
                  specs: list[InputSpec]) -> ImageBatch:
    """The golden inputs of one reference batch as an ImageBatch.

    The float form is the reference's own `pixel_values.b<B>`. The uint8 form is the reference's array
    for a uint8 input when the bundle stored one, else recovered exactly from the float form.

    Raises:
        BundleError: the reference lacks the batch, or a uint8 input cannot be fed from it.
    """
    base = bundle.input_names[0]
    key = reference_key(base, batch)
    if key not in ref:
        raise BundleError(f"reference.npz has no {key}", "re-export the bundle")
    pv = np.ascontiguousarray(ref[key].astype(np.float32, copy=False))
    u8 = None
    for s in specs:
        if s.is_uint8_nhwc:
            own = ref.get(reference_key(s.name, batch))
            u8 = own if own is not None and own.dtype == np.uint8 else recover_uint8(pv, pre)
            if u8 is None:
                raise BundleError(f"the golden inputs of batch {batch} are not 8-bit images, so the uint8 input "
                                  f"{s.name} cannot be fed them", "validate this variant with --images or "
                                  "against PyTorch (extra seeded inputs), or re-export the bundle")
    if u8 is None:
        u8 = np.zeros((pv.shape[0], 0, 0, 3), np.uint8)  # no uint8 input: never fed
    return ImageBatch(uint8_nhwc=u8, pixel_values=pv, paths=[])


def infer_batched(runner, specs: list[InputSpec], images: ImageBatch, lo: int, hi: int) -> dict[str, np.ndarray]:
    """Run `images` through `runner` in chunks the target accepts, and concatenate the outputs.

    Chunks hold at most `hi` images; a chunk smaller than `lo` (a static-batch engine) is padded by
    repeating its last image, and the padding's outputs are dropped.
    """
    n = len(images)
    outs: dict[str, list[np.ndarray]] = {}
    for start in range(0, n, hi):
        chunk = images.slice(start, min(n, start + hi))
        real = len(chunk)
        if real < lo:
            reps = np.r_[np.arange(real), np.full(lo - real, real - 1)]
            chunk = ImageBatch(chunk.uint8_nhwc[reps] if chunk.uint8_nhwc.size else chunk.uint8_nhwc,
                               chunk.pixel_values[reps], chunk.paths)
        res = runner.infer(feed_for(specs, chunk))
        for k, v in res.items():
            outs.setdefault(k, []).append(np.asarray(v)[:real])
    return {k: np.concatenate(v, axis=0) for k, v in outs.items()}


def describe_specs(specs: list[InputSpec]) -> list[dict[str, Any]]:
    return [{"name": s.name, "dtype": s.dtype, "layout": s.layout} for s in specs]
