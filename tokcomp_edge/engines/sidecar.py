"""An engine's sidecar (`<engine stem>.engine.json`, written by `tokcomp build`): reading it, checking that the
engine file is the one it describes, and the facts later stages take from it (the source ONNX's sha256, the
profile's batch range). Shared by validation (an engine under test) and the device runtime (an engine to run).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..core.bundle import sha256_file
from ..errors import BundleError

SIDECAR_SUFFIX = ".engine.json"


def sidecar_path(engine: Path) -> Path:
    """`engines/x/foo.plan` → `engines/x/foo.engine.json`."""
    return engine.with_name(engine.stem + SIDECAR_SUFFIX)


def read_sidecar(engine: Path) -> dict[str, Any]:
    """Load an engine's sidecar (schema `tokcomp-edge/engine`) via the engines stage's reader.

    Raises:
        BundleError: missing, not JSON, or not a tokcomp engine.json.
    """
    from .engine_info import read_engine_info

    if engine.suffix != ".plan":  # the reader derives the sidecar name from a .plan path
        engine = sidecar_path(engine)
    return read_engine_info(engine)


def sidecar_onnx_sha(sc: dict[str, Any]) -> str | None:
    """The sha256 of the ONNX file an engine was parsed from (`bundle.onnx_sha256`).

    This, not the manifest's own digest, identifies the engine's source: the manifest is rewritten each
    time a variant is added to the bundle, while the ONNX file an engine came from never changes.
    """
    b = sc.get("bundle")
    if isinstance(b, dict) and b.get("onnx_sha256"):
        return str(b["onnx_sha256"])
    return None


def sidecar_batch_range(sc: dict[str, Any], input_name: str) -> tuple[int, int] | None:
    """Batch (min, max) of the engine's optimization profile for `input_name`, if recorded.

    Reads `profile.shapes[<input>].{min,max}` (full shapes, batch first) or `profile.batch.{min,max}`.
    """
    prof = sc.get("profile")
    if not isinstance(prof, dict):
        return None
    shapes = prof.get("shapes", {})
    if isinstance(shapes, dict) and input_name in shapes:
        s = shapes[input_name]
        try:
            lo, hi = s["min"][0], s["max"][0]
        except (TypeError, KeyError, IndexError):
            lo = hi = None
        return _batch_pair(lo, hi, f"profile.shapes.{input_name}", s)
    b = prof.get("batch")
    if isinstance(b, dict) and "min" in b and "max" in b:
        return _batch_pair(b["min"], b["max"], "profile.batch", b)
    return None


def _batch_pair(lo: Any, hi: Any, key: str, found: Any) -> tuple[int, int]:
    """(min, max) batch of a sidecar entry; BundleError (exit 2), not a TypeError, for an edited record."""
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in (lo, hi)) or lo > hi:
        shown = repr(found)[:60]
        raise BundleError(f"engine sidecar key {key} is {shown}, expected batch sizes 1 ≤ min ≤ max",
                          "rebuild the engine with `tokcomp build` (engine.json is not edited by hand)")
    return lo, hi


def check_engine_file(engine: Path, sc: dict[str, Any]) -> None:
    """The .plan must be the file its sidecar describes: the sha256 `tokcomp build` recorded in engine.json.

    Without this a replaced .plan (another build, another GPU's engine copied over it) or a sidecar copied
    from another build would be validated against a bundle it was never built from.

    Raises:
        BundleError (exit 2) naming the file.
    """
    rec = sc.get("engine") if isinstance(sc.get("engine"), dict) else {}
    want = rec.get("sha256")
    if not want:
        raise BundleError(f"engine sidecar {sidecar_path(engine).name} records no sha256 of {engine.name}",
                          "rebuild the engine with `tokcomp build` (its engine.json records the engine's sha256)")
    have = sha256_file(engine)
    if have != want:
        raise BundleError(f"engine {engine.name} is not the file its sidecar describes (sha256 {have[:12]}…, "
                          f"{sidecar_path(engine).name} records {str(want)[:12]}…)",
                          "keep each .plan with the engine.json its build wrote, or rebuild the engine")
