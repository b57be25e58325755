"""Pass/fail thresholds per precision, overridable per output.

A token output passes when *every* set threshold holds:
    elementwise   |actual − expected| ≤ atol + rtol·|expected|   for all elements (when atol is set)
    rel_l2        ‖actual − expected‖₂ / ‖expected‖₂ ≤ max_rel_l2
    cosine        min over tokens of cos(actual_t, expected_t) ≥ min_cosine
An `indices` output (prune) passes when the mean Jaccard index of the kept sets ≥ min_jaccard.
A threshold set to None is reported but not judged. The defaults and why are in the README ("Validating a bundle or an engine").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from ..errors import InputError

PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class Tolerance:
    """Thresholds for one output.

    Attributes:
        atol: absolute part of the elementwise bound (None: no elementwise check).
        rtol: relative part of the elementwise bound (multiplies |expected|).
        max_rel_l2: largest accepted relative L2 error of the whole tensor (None: not judged).
        min_cosine: smallest accepted per-token cosine similarity (None: not judged).
        min_jaccard: smallest accepted mean Jaccard index of kept-token sets (prune `indices` only).
    """

    atol: float | None = None
    rtol: float = 0.0
    max_rel_l2: float | None = None
    min_cosine: float | None = None
    min_jaccard: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Why these numbers: the README, "Default tolerances, and why".
DEFAULTS: dict[str, Tolerance] = {
    # fp32 runtimes differ only by summation order, fused kernels and (TensorRT on Ampere+/Orin) TF32
    # matmuls; a wrong layer, normalisation or compressor is off by far more than these.
    "fp32": Tolerance(atol=1e-3, rtol=1e-3, max_rel_l2=1e-3, min_cosine=0.9999, min_jaccard=1.0),
    # fp16 keeps ~3 significant digits per op; errors compound over the blocks. Per-token direction is
    # what the LLM consumes, so cosine is the tight check and the elementwise bound is loose.
    "fp16": Tolerance(atol=5e-2, rtol=5e-2, max_rel_l2=1e-2, min_cosine=0.999, min_jaccard=0.9),
    # INT8 error is a fraction of each tensor's quantisation step and so scales with the data: no
    # elementwise bound, only scale-free ones.
    "int8": Tolerance(atol=None, rtol=0.0, max_rel_l2=0.1, min_cosine=0.95, min_jaccard=0.7),
}

# CLI flag name → Tolerance field. `--atol tokens=1e-3`, `--min-cosine 0.999` (no name: every output).
OVERRIDE_FIELDS = {
    "atol": "atol",
    "rtol": "rtol",
    "max-rel-l2": "max_rel_l2",
    "min-cosine": "min_cosine",
    "min-jaccard": "min_jaccard",
}


def default_tolerance(precision: str) -> Tolerance:
    """The default thresholds for a precision name (`fp32`, `fp16`, `int8`; `bf16` uses fp16's).

    Raises:
        InputError: an unknown precision.
    """
    key = {"bf16": "fp16", "fp8": "int8"}.get(precision, precision)
    if key not in DEFAULTS:
        raise InputError(f"unknown precision {precision!r} for tolerances",
                         f"use one of {', '.join(PRECISIONS)}")
    return DEFAULTS[key]


@dataclass(frozen=True)
class Override:
    """One `--<flag> [output=]value` from the command line; output None means every output."""

    field: str
    value: float | None
    output: str | None = None


def parse_override(flag: str, text: str) -> Override:
    """Parse `tokens=1e-3`, `1e-3` or `tokens=none` for the tolerance flag `flag` (e.g. `atol`).

    Args:
        flag: a key of OVERRIDE_FIELDS.
        text: `[output=]value`; value `none`/`off` disables that check.
    Returns:
        Override.
    Raises:
        InputError: unknown flag or a value that is not a number.
    """
    if flag not in OVERRIDE_FIELDS:
        raise InputError(f"unknown tolerance {flag!r}", f"use one of {', '.join(OVERRIDE_FIELDS)}")
    output, _, value = text.rpartition("=")
    output = output.strip() or None
    value = value.strip()
    if value.lower() in ("none", "off"):
        return Override(OVERRIDE_FIELDS[flag], None, output)
    try:
        number = float(value)
    except ValueError:
        raise InputError(f"--{flag} {text!r}: {value!r} is not a number",
                         f"write --{flag} OUTPUT=VALUE (e.g. --{flag} tokens=1e-3) or --{flag} VALUE") from None
    if number < 0 or number != number:
        raise InputError(f"--{flag} {text!r}: expected a non-negative number", f"e.g. --{flag} tokens=1e-3")
    if flag in ("min-cosine", "min-jaccard") and number > 1:
        raise InputError(f"--{flag} {text!r}: expected a value in 0..1", f"e.g. --{flag} 0.999")
    return Override(OVERRIDE_FIELDS[flag], number, output)


def resolve_tolerances(precision: str, outputs: list[str],
                       overrides: tuple[Override, ...] = ()) -> dict[str, Tolerance]:
    """Per-output tolerances: the precision's defaults, then overrides (unnamed first, named after).

    Args:
        precision: precision of the target (`fp32`, `fp16`, `int8`).
        outputs: output names of the target.
        overrides: parsed command-line overrides.
    Returns:
        {output name: Tolerance}.
    Raises:
        InputError: an override names an output the target does not have.
    """
    base = default_tolerance(precision)
    result = {name: base for name in outputs}
    for ov in sorted(overrides, key=lambda o: o.output is not None):
        if ov.output is not None and ov.output not in result:
            raise InputError(f"tolerance override names output {ov.output!r}, which this target does not have",
                             f"outputs are: {', '.join(outputs)}")
        for name in ([ov.output] if ov.output else outputs):
            value = ov.value if ov.value is not None or ov.field != "rtol" else 0.0
            result[name] = replace(result[name], **{ov.field: value})
    return result


def tolerance_from_dict(d: dict[str, Any]) -> Tolerance:
    """Inverse of Tolerance.to_dict (ignores unknown keys so newer reports still load)."""
    names = {f.name for f in fields(Tolerance)}
    return Tolerance(**{k: v for k, v in d.items() if k in names})
