"""The one configuration of a validation run (the CLI builds it from flags; `make demo` builds it in code)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..core.tolerance import Override
from ..errors import InputError
from .economics import LlmShape

TORCH_MODES = ("auto", "off", "require")


@dataclass(frozen=True)
class ValidateConfig:
    """What to validate and how.

    Attributes:
        target: a bundle folder (or its manifest.json, or one of its .onnx files), or an engine .plan.
        bundle: the bundle an engine was built from (required for engines, optional otherwise).
        variant: bundle variant to run (`fp32`, `fp16`, `nhwc`, …); default fp32, or the engine's.
        device: ONNX Runtime device `cpu`, `cuda` or `trt-ep` (ignored for engines).
        batches: batch sizes to time; empty = 1 and the largest reference batch.
        warmup, iterations: untimed and timed calls per batch size (iterations 0 skips latency).
        images: folder of real images to run (and compare against PyTorch when present).
        max_images: at most this many images from the folder (first by name).
        extra_inputs: seeded synthetic images compared against fresh PyTorch runs.
        seed: seed of those images.
        torch: `auto` (use PyTorch when importable), `off`, or `require` (exit 3 without it).
        torch_device: `auto` (cuda when the target runs on a GPU and PyTorch sees one), `cpu`, `cuda`.
        tolerance_overrides: per-output threshold overrides (see tolerances.parse_override).
        llms: --llm preset names for token economics; empty (with no llm_custom): a VLM bundle's own LLM
            (from its manifest's vlm.llm), else DEFAULT_LLMS.
        llm_custom: an explicit LLM shape (--llm-hidden/--llm-layers/…), added to the presets.
        text_tokens: text tokens assumed in the same prompt (economics).
        threads: CPU threads for ONNX Runtime and PyTorch (None: each runtime's default).
        native_fp16: run fp16/int8 graphs on ONNX Runtime CPU as they are, instead of with fp16 rounding
            emulated (the default, which is what an fp16/int8 TensorRT engine computes).
        allow_fallback: accept an ONNX Runtime session that lacks a requested accelerator (CUDA, TensorRT EP)
            and runs on CPU instead — a warning then; without it the validation fails.
        out_dir: where reports go (default `<bundle>/reports`).
        links: (label, href) pairs the report links to, e.g. the sweep that chose this compression; each href
            relative to the reports folder (`out_dir`), so the link survives moving the folder tree.
        quiet: no progress display.
        argv: the command line, recorded in the report (informational).
    """

    target: Path
    bundle: Path | None = None
    variant: str | None = None
    device: str = "cpu"
    batches: tuple[int, ...] = ()
    warmup: int = 3
    iterations: int = 20
    images: Path | None = None
    max_images: int = 16
    extra_inputs: int = 4
    seed: int = 0
    torch: str = "auto"
    torch_device: str = "auto"
    tolerance_overrides: tuple[Override, ...] = ()
    llms: tuple[str, ...] = ()
    llm_custom: LlmShape | None = None
    text_tokens: int = 0
    threads: int | None = None
    native_fp16: bool = False
    allow_fallback: bool = False
    out_dir: Path | None = None
    links: tuple[tuple[str, str], ...] = ()
    quiet: bool = False
    argv: tuple[str, ...] = field(default=())

    def check(self) -> None:
        """Reject impossible settings before any work (InputError naming the flag)."""
        if self.torch not in TORCH_MODES:
            raise InputError(f"--torch {self.torch!r} is not one of {', '.join(TORCH_MODES)}", "e.g. --torch auto")
        if self.torch_device not in ("auto", "cpu", "cuda"):
            raise InputError(f"--torch-device {self.torch_device!r} is not auto, cpu or cuda", "e.g. --torch-device cpu")
        for flag, v, lo in (("--warmup", self.warmup, 0), ("--iterations", self.iterations, 0),
                            ("--extra-inputs", self.extra_inputs, 0), ("--max-images", self.max_images, 1),
                            ("--llm-text-tokens", self.text_tokens, 0)):
            if v < lo:
                raise InputError(f"{flag} {v}: expected an integer ≥ {lo}", f"e.g. {flag} {max(lo, 1)}")
        if self.threads is not None and self.threads < 1:
            raise InputError(f"--threads {self.threads}: expected a positive integer", "e.g. --threads 4")
        for b in self.batches:
            if b < 1:
                raise InputError(f"--batch {b}: batch sizes are positive integers", "e.g. --batch 1,8")
        for link in self.links:
            href = str(link[1]) if len(link) == 2 else ""
            if not href or Path(href).is_absolute() or "://" in href:
                raise InputError(f"report link {link!r} is not a (label, relative path) pair",
                                 "give hrefs relative to the reports folder, e.g. ('sweep', '../../sweep.html')")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("target", "bundle", "images", "out_dir"):
            d[k] = str(d[k]) if d[k] is not None else None
        d["batches"] = list(self.batches)
        d["llms"] = list(self.llms)
        d["argv"] = list(self.argv)
        d["links"] = [list(x) for x in self.links]
        return d


def parse_batches(text: str | None) -> tuple[int, ...]:
    """`"1,8"` → (1, 8) (sorted, unique); None or "" → () meaning the defaults.

    Raises:
        InputError: a part that is not a positive integer.
    """
    if not text:
        return ()
    out = set()
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        try:
            b = int(part)
        except ValueError:
            raise InputError(f"--batch {text!r}: {part!r} is not an integer", "write e.g. --batch 1,8") from None
        if b < 1:
            raise InputError(f"--batch {text!r}: {b} is not a positive batch size", "write e.g. --batch 1,8")
        out.add(b)
    return tuple(sorted(out))
