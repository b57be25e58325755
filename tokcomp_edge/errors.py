"""One exception hierarchy for the whole toolkit; the CLI formats it once, at the edge.

Every error carries the offending value, what was expected and the next step, so the CLI can print a
single line. The class decides the exit code:

- 1: a check failed (parity, tolerance, lint) — the input was fine, the artifact is not.
- 2: bad input or usage (unknown model, malformed spec, missing file, changed bundle).
- 3: a required runtime is missing (TensorRT, a GPU).
"""

from __future__ import annotations


class TokcompError(Exception):
    """Base class. `message` says what is wrong; `hint` says what to do next."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        text = self.message.rstrip(".")
        if not self.hint:
            return text
        return f"{text}. {self.hint[:1].upper()}{self.hint[1:]}"


# --- exit 2: bad input -------------------------------------------------------------------------


class InputError(TokcompError):
    """The user gave something we cannot use."""

    exit_code = 2


class UnknownModelError(InputError):
    """A model id that names no preset and no timm:/hf:/py: source."""


class UnsupportedModelType(InputError):
    """An hf: folder whose config.json model_type tokcomp does not adapt (the VLM layer names its families
    in the hint; the tower layer knows only the tower types)."""


class SpecError(InputError):
    """A compression spec string that does not parse, or cannot apply to this encoder."""


class WeightsError(InputError):
    """Weights missing, corrupt, mismatched, or a pickle that would need arbitrary code to load."""


class BundleError(InputError):
    """A bundle folder that is missing, malformed, or whose files changed since export."""


class OutputError(InputError):
    """The destination cannot be written, or exists and --force was not given."""


class ProfileError(InputError):
    """A build profile with an unknown field or an impossible combination."""


# --- exit 1: a check failed --------------------------------------------------------------------


class CheckFailed(TokcompError):
    """The artifact was produced but does not meet its contract (parity, lint, tolerance)."""

    exit_code = 1


class ExportFailed(CheckFailed):
    """The exporter or the ONNX checker rejected the model."""


class ParityError(CheckFailed):
    """Outputs of two runtimes differ by more than the stated tolerance."""


class LintError(CheckFailed):
    """The graph uses something TensorRT's ONNX parser will not build."""


# --- exit 3: runtime missing -------------------------------------------------------------------


class RuntimeMissing(TokcompError):
    """TensorRT, CUDA or a GPU is required and not present."""

    exit_code = 3


class ExtraMissing(RuntimeMissing):
    """A command needs an optional part of tokcomp-edge (an extra) that this environment lacks.

    The core install runs on a Jetson without PyTorch or ONNX Runtime; the message names the extra whose
    `pip install 'tokcomp-edge[<extra>]'` brings what is missing (see tokcomp_edge/extras.py).
    """
