"""The golden reference (reference.npz) judged against what the manifest says it holds.

The file's sha256 proves it is the file export wrote; this proves it holds what the manifest promises, so
a re-signed reference that lost a batch, changed a shape or dtype, or carries NaN / inf can never be
"validated against" — every consumer of `Bundle.reference()` gets either the whole, finite reference or
one BundleError (exit 2).
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BundleError
from .bundle import reference_key
from .target_checks import TargetLayout, check_target
from .tolerance import Tolerance

HINT = "re-export the bundle; the golden reference must hold what the manifest declares"


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """All arrays of an .npz, refusing pickled object arrays; BundleError when it is not a readable npz."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except FileNotFoundError as exc:
        raise BundleError(f"the golden reference {path} is missing", HINT) from exc
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise BundleError(f"the golden reference {path} cannot be read as .npz ({type(exc).__name__}: "
                          f"{str(exc)[:80]})", HINT) from exc


def _expected_shape(shape: list[Any], batch: int) -> tuple[int, ...] | None:
    dims = []
    for i, d in enumerate(shape):
        if isinstance(d, int):
            dims.append(d)
        elif i == 0:
            dims.append(batch)  # the named batch axis
        else:
            return None  # another named axis: its size is not fixed by the manifest
    return tuple(dims)


def check_reference(ref: dict[str, np.ndarray], manifest: dict[str, Any]) -> None:
    """Every declared batch × every fp32 input and output present, with the manifest's shape and dtype;
    every array finite (golden inputs are normalised pixels and the outputs PyTorch's, never NaN / inf).

    Raises:
        BundleError naming the key, what was found and what the manifest says.
    """
    onnx = manifest["onnx"]
    tensors = [*onnx["inputs"], *onnx["outputs"]]
    layout = TargetLayout.from_manifest(manifest)
    for b in manifest["reference"]["batch_sizes"]:
        for t in tensors:
            key = reference_key(t["name"], b)
            if key not in ref:
                raise BundleError(f"the golden reference has no {key} (the manifest declares batch {b} of "
                                  f"{t['name']})", HINT)
            arr = ref[key]
            want = _expected_shape(t["shape"], b)
            if want is not None and tuple(arr.shape) != want:
                raise BundleError(f"the golden reference's {key} has shape {list(arr.shape)}, the manifest "
                                  f"says {list(want)}", HINT)
            try:
                dtype = np.dtype(t["dtype"])
            except TypeError as exc:
                raise BundleError(f"manifest key onnx tensor {t['name']} has dtype {t['dtype']!r}, expected a "
                                  "numpy dtype name", HINT) from exc
            if arr.dtype != dtype:
                raise BundleError(f"the golden reference's {key} has dtype {arr.dtype}, the manifest says "
                                  f"{dtype}", HINT)
            if arr.size == 0:
                raise BundleError(f"the golden reference's {key} is empty", HINT)
            if arr.dtype.kind in "fc" and not np.isfinite(arr).all():
                bad = int(arr.size - np.isfinite(arr).sum())
                raise BundleError(f"the golden reference's {key} holds {bad} non-finite value(s) (NaN / inf)",
                                  HINT)
        # What must hold of any output of this graph holds of PyTorch's too (core/target_checks.py: indices
        # on the grid and unique, merge map into the patch rows, ToMe sizes = its bincount, exactly): a
        # reference index off the grid would otherwise only lower a Jaccard that may stay within tolerance.
        outputs = {t["name"]: ref[reference_key(t["name"], b)] for t in onnx["outputs"]}
        verdicts = check_target(outputs, layout, {name: Tolerance(count_atol=0.0) for name in outputs})
        # The index outputs first: a broken merge map also makes `sizes` uncheckable, and is the cause.
        first = [n for n in (layout.indices, layout.merge_map) if n in verdicts]
        for name in [*first, *(n for n in verdicts if n not in first)]:
            verdict = verdicts[name]
            if verdict.failures:
                raise BundleError(f"the golden reference's {reference_key(name, b)} is not a possible output of "
                                  f"this graph: {verdict.failures[0]}", HINT)
