"""PyTorch runner: the reference module rebuilt from the bundle manifest (seeded or file weights).

Polygraphy's PytRunner does not fit: it moves every input to CUDA unconditionally and zips the output
names with whatever forward() returns, which splits a single tensor along its batch axis.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...errors import InputError, RuntimeMissing
from .base import Runner


def torch_available() -> tuple[bool, str | None]:
    """Whether PyTorch (and the rebuild code) can be imported; (False, reason) otherwise."""
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        return False, f"PyTorch is not installed ({exc.name})"
    try:
        from ...export.rebuild import model_from_manifest  # noqa: F401
    except ImportError as exc:
        return False, f"tokcomp_edge.export.rebuild is unavailable ({exc})"
    return True, None


class TorchRunner(Runner):
    """Runs the PyTorch reference module on float32 NCHW `pixel_values`.

    Args:
        manifest: the bundle manifest (encoder, compression, weights origin).
        device: `cpu` or `cuda`.
        threads: torch intra-op threads (None: leave torch's default).
    """

    label = "pytorch"

    def __init__(self, manifest: dict[str, Any], device: str = "cpu", threads: int | None = None):
        super().__init__()
        if device not in ("cpu", "cuda"):
            raise InputError(f"unknown PyTorch device {device!r}", "use cpu or cuda")
        self.manifest = manifest
        self.device = device
        self.threads = threads
        self.output_names = [o["name"] for o in manifest["onnx"]["outputs"]]
        self.input_name = manifest["onnx"]["inputs"][0]["name"]

    def _activate(self) -> None:
        ok, reason = torch_available()
        if not ok:
            raise RuntimeMissing(reason, "pip install 'tokcomp-edge[export]', or pass --torch off to validate "
                                         "against the bundle's golden reference only")
        import torch

        from ...export.rebuild import model_from_manifest

        if self.device == "cuda" and not torch.cuda.is_available():
            raise RuntimeMissing("PyTorch cannot see a CUDA device", "use --torch-device cpu")
        if self.threads:
            torch.set_num_threads(int(self.threads))
        self._torch = torch
        self.model = model_from_manifest(self.manifest).eval().to(self.device)
        if self.device == "cuda":
            # A reference must be true fp32: cuDNN convolutions (the patch embedding) default to TF32.
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.cuda.reset_peak_memory_stats()
        self.info = {
            "runtime": "pytorch",
            "version": torch.__version__,
            "device": self.device,
            "ran_on": torch.cuda.get_device_name() if self.device == "cuda" else "cpu",
            "threads": torch.get_num_threads(),
            "weights": self.manifest["encoder"].get("weights"),
        }

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        x = torch.from_numpy(np.ascontiguousarray(feed[self.input_name], dtype=np.float32)).to(self.device)
        with torch.inference_mode():
            out = self.model(x)
        outs = out if isinstance(out, (tuple, list)) else (out,)
        if len(outs) != len(self.output_names):
            raise InputError(f"the rebuilt PyTorch module returned {len(outs)} outputs, the manifest lists "
                             f"{len(self.output_names)} ({', '.join(self.output_names)})",
                             "re-export the bundle with this version of tokcomp")
        # .cpu() synchronises a CUDA stream, so timings include the work.
        return {name: t.detach().cpu().numpy() for name, t in zip(self.output_names, outs, strict=True)}

    def _deactivate(self) -> None:
        del self.model
        if self.device == "cuda":
            self._torch.cuda.empty_cache()

    def gpu_memory(self) -> dict[str, Any] | None:
        if self.device != "cuda" or not self.active:
            return None
        return {"peak_allocated_bytes": int(self._torch.cuda.max_memory_allocated())}
