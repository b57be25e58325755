"""The one tolerance model: pass/fail thresholds per output, with one meaning in every stage.

A token (or any float) output passes when *every* set threshold holds:
    elementwise   |actual − expected| ≤ atol + rtol·scale for every element, scale = max |expected| of
                  that output (when atol is set). rtol is relative to the output's scale, not to each
                  element: an element near zero in a large-scale output carries the same absolute
                  rounding as the large ones, so an element-relative bound fails exact-enough runs.
    rel_l2        ‖actual − expected‖₂ / ‖expected‖₂ ≤ max_rel_l2
    cosine        min over tokens of cos(actual_t, expected_t) ≥ min_cosine
An `indices` output (prune, VisionZip) or a `merge_map` passes when the mean Jaccard index of the kept
sets (of the (patch, row) pairs) ≥ min_jaccard, and every image's own Jaccard ≥ min_image_jaccard.
Where the comparison knows the scores the target ranked (the variant checks read them from the graph),
a swap of two tokens whose scores differ by less than the measured score error counts as agreeing for
min_jaccard, never for min_image_jaccard.
ToMe's `sizes` are patch counts: each row's size must equal the patches its merge map puts there (+1 for a
protected prefix row), and rows with the same patches must count alike, both within count_atol (0: exact).
score_atol judges a ToMe merge-map difference by the match scores, as prune swaps are judged (issue 15
part 2b): where the PyTorch module runs (export parity, export/tome_parity.py; `validate --torch`, every
comparison it makes with PyTorch or the golden reference, validation/tome_judge.py), a target whose merge map
differs is explained when it equals PyTorch's own run with one near-tie decision flipped — a rank-boundary
pair or a best-vs-second-best match whose gap in PyTorch's scores is ≤ score_atol (compression/tome_replay.py,
at most MAX_REPLAYS per image) — and its outputs are then judged against that replay's with these same
thresholds; the check names the block and the gap. The golden reference keeps PyTorch's own outputs.
Where one flip cannot explain it (fp16 sits within its noise of many decisions at realistic grids), the fp16
variant check and `validate --torch` on an ONNX target force PyTorch to the target's own decisions, read
from its per-block maps (compression/tome_forced.py): every decision that differs from PyTorch's on the
same tokens must be within score_atol in PyTorch's scores, and the outputs must equal the forced run's
within these thresholds. Without a PyTorch module (validate --torch off, a bundle whose PyTorch module
cannot be rebuilt, the nhwc and int8 checks) a merge map must agree within min_jaccard as it is (fp32 and
export parity: exactly), and the failure says where it would be judged.
Every bound is judged as `not (err <= bound)`, so NaN fails; zero compared elements fail.
A threshold set to None is reported but not judged. The defaults and why: docs/validate-and-report.md, "Default tolerances, and why".

Used by: export parity (PARITY), the nhwc variant check (NHWC), the fp16 and int8 variant checks and
`validate` (DEFAULTS per precision: a variant the export or calibrate accepts passes `validate` on the
same inputs).
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
        rtol: relative part of the elementwise bound, a fraction of the output's scale (max |expected|).
        max_rel_l2: largest accepted relative L2 error of the whole tensor (None: not judged).
        min_cosine: smallest accepted per-token cosine similarity (None: not judged).
        min_jaccard: smallest accepted mean Jaccard index of kept-token sets / merge maps.
        min_image_jaccard: smallest accepted Jaccard of any single image, swaps explained or not.
        count_atol: largest accepted |error| of a count output (ToMe's `sizes`): against the count its own
            merge map implies, and between runs on rows holding the same patches. Counts are integers: 0.
        score_atol: largest gap between two of PyTorch's ToMe match scores (cosines, scale-free) that counts
            as the precision's noise: a merge decision that close may flip, and a target that took the
            other side is explained by PyTorch's replay of it (export parity; see the module docstring).
            None: no decision is a near-tie.
    """

    atol: float | None = None
    rtol: float = 0.0
    max_rel_l2: float | None = None
    min_cosine: float | None = None
    min_jaccard: float | None = None
    min_image_jaccard: float | None = None
    count_atol: float = 0.0
    score_atol: float | None = None

    def bound(self, scale: float) -> float | None:
        """The elementwise bound for an output of this scale (None: no elementwise check)."""
        return None if self.atol is None else self.atol + self.rtol * scale

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Why these numbers: docs/validate-and-report.md, "Default tolerances, and why" (tests/docs pins the table).
DEFAULTS: dict[str, Tolerance] = {
    # fp32 runtimes differ only by summation order, fused kernels and (TensorRT on Ampere+/Orin) TF32
    # matmuls; a wrong layer, normalisation or compressor is off by far more than these.
    # ToMe's match scores are cosines in [-1, 1]: fp32 runtimes agree on them to ~1e-7.
    "fp32": Tolerance(atol=1e-3, rtol=1e-3, max_rel_l2=1e-3, min_cosine=0.9999, min_jaccard=1.0,
                      score_atol=1e-5),
    # fp16 stores 11 significant bits (2^-11 ≈ 4.9e-4 relative per value); through a ViT's blocks the
    # errors add up to ~1e-3 of the output scale and token directions barely move (cosine ≈ 0.99999).
    # A broken conversion (overflow, a wrongly cast constant, LayerNorm sums in fp16) moves tokens by
    # O(1) of the scale. Near-ties in kept sets / merge maps may flip; an image that swapped more than a
    # quarter of its kept set (Jaccard < 0.6) is broken, not rounded.
    # ToMe's match scores: cosines of fp16 keys, ~1e-3 apart from fp32's after a few blocks.
    "fp16": Tolerance(atol=0.0, rtol=2e-2, max_rel_l2=1e-2, min_cosine=0.999, min_jaccard=0.9,
                      min_image_jaccard=0.6, score_atol=5e-3),
    # INT8 error is a fraction of each tensor's quantisation step and so scales with the data: no
    # elementwise bound, only scale-free ones.
    "int8": Tolerance(atol=None, rtol=0.0, max_rel_l2=0.1, min_cosine=0.95, min_jaccard=0.7),
}

# Export parity: ONNX Runtime CPU vs PyTorch on the same machine, in fp32. ONNX Runtime fuses
# MatMul/Add/LayerNorm and reorders reductions, so over 12–27 blocks outputs drift by ~1e-6–1e-5 of
# their scale (measured: docs/validate-and-report.md); 1e-4 of the scale leaves a 10× margin while a real export bug (a wrong
# op, order or constant) moves outputs by O(1). Indices and merge maps must match exactly.
# ToMe match scores agree to ~1e-7; a merge decision within 1e-5 of flipping is a tie, not a bug.
PARITY = Tolerance(atol=1e-4, rtol=1e-4, min_jaccard=1.0, score_atol=1e-5)

# The nhwc wrapper vs the NCHW model it wraps, on the same uint8 frames: the wrapper computes exactly what
# the NCHW path is fed ((x/255 − mean)/std in float32), so the two differ at most by float32
# reassociation: 1e-5 of the scale is ~100× float32 epsilon; a wrong channel order, transpose or
# mean/std moves outputs by O(1). Reassociation can flip a kept token or a merged patch only on a
# near-exact tie, which the score evidence explains.
NHWC = Tolerance(atol=1e-5, rtol=1e-5, min_jaccard=0.98, score_atol=1e-5)

# CLI flag name → Tolerance field. `--atol tokens=1e-3`, `--min-cosine 0.999` (no name: every output).
OVERRIDE_FIELDS = {
    "atol": "atol",
    "rtol": "rtol",
    "max-rel-l2": "max_rel_l2",
    "min-cosine": "min_cosine",
    "min-jaccard": "min_jaccard",
    "min-image-jaccard": "min_image_jaccard",
    "count-atol": "count_atol",
    "score-atol": "score_atol",
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
    if flag in ("min-cosine", "min-jaccard", "min-image-jaccard") and number > 1:
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
            value = ov.value if ov.value is not None or ov.field not in ("rtol", "count_atol") else 0.0
            result[name] = replace(result[name], **{ov.field: value})
    return result


def tolerance_from_dict(d: dict[str, Any]) -> Tolerance:
    """Inverse of Tolerance.to_dict (ignores unknown keys so newer reports still load)."""
    names = {f.name for f in fields(Tolerance)}
    return Tolerance(**{k: v for k, v in d.items() if k in names})
