"""The optional parts of tokcomp-edge (pip extras) and the check a command makes before it needs one.

The core install (numpy, typer, rich, polygraphy, onnx, pillow) is what runs on a Jetson: inspect, lint,
profiles, build, preprocess, report, and validate on an engine. Everything else is an extra:

    export    torch, transformers, timm, onnxscript, onnxslim, safetensors, ModelOpt (+ its ONNX Runtime)
    ort       onnxruntime (CPU), to validate bundle variants      ort-gpu: onnxruntime-gpu instead

A command checks for its modules with `importlib.util.find_spec` (nothing is imported, so the check costs
microseconds) and fails with one line naming the extra to install — never with an ImportError traceback
from deep inside the command.
"""

from __future__ import annotations

import importlib.util

from .errors import ExtraMissing

# What each extra provides, as import names; the pip names are in pyproject.toml.
EXTRA_MODULES = {
    "export": ("torch", "transformers", "timm", "onnxscript", "onnxslim", "safetensors", "modelopt", "onnxruntime"),
    "ort": ("onnxruntime",),
}

# Said with every missing-extra error, because the same ONNX Runtime module comes in two packages.
_ORT_NOTE = ("[ort-gpu] instead for the CUDA build; not beside [export], whose ModelOpt brings one")


def missing_modules(modules: tuple[str, ...]) -> list[str]:
    """The top-level modules of `modules` that cannot be found in this Python (none is imported)."""
    absent = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a half-installed package: its parent raises, or __spec__ is None
            found = False
        if not found:
            absent.append(name)
    return absent


def install_line(extra: str) -> str:
    """The one pip command that brings `extra` (quoted for the shell: brackets are glob characters)."""
    return f"pip install 'tokcomp-edge[{extra}]'"


def require_extra(extra: str, needed_for: str, modules: tuple[str, ...] | None = None,
                  instead: str | None = None) -> None:
    """Raise ExtraMissing (exit 3) unless the modules `needed_for` needs are all importable.

    Args:
        extra: the extra that provides them (`export`, `ort`).
        needed_for: what the user asked for, for the message (`tokcomp export`, `validating a bundle`).
        modules: the import names to check; default: everything the extra provides.
        instead: another way out, appended to the hint (`make the variant on the workstation`).
    Raises:
        ExtraMissing: naming the absent modules and the pip line that installs them.
    """
    absent = missing_modules(modules if modules is not None else EXTRA_MODULES[extra])
    if not absent:
        return
    hint = f"install the extra: {install_line(extra)}"
    if extra == "ort":
        hint += f" ({_ORT_NOTE})"
    if instead:
        hint += f", or {instead}"
    raise ExtraMissing(f"{needed_for} needs {', '.join(absent)}, which this environment lacks", hint)


def require_export(model: str, variants=()) -> None:
    """What `tokcomp export` needs: the base of [export], timm for timm: models, ModelOpt for fp16 variants."""
    modules = ["torch", "transformers", "onnxscript", "onnxslim", "safetensors", "onnxruntime"]
    if str(model).startswith("timm:"):
        modules.append("timm")
    if any("fp16" in v for v in variants):
        modules.append("modelopt")
    require_extra("export", "tokcomp export", tuple(modules))
