"""What `tokcomp debug` found: per-block figures, the culprit, and (with --fix) the fp32 islands."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

SCHEMA = "tokcomp-edge/debug"
SCHEMA_VERSION = 1


def _num(x: float | None) -> float | str | None:
    """JSON has no inf/NaN: write them as strings ("inf", "nan"), keep numbers as they are."""
    if x is None or not isinstance(x, float) or math.isfinite(x):
        return x
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


@dataclass
class NodeFigures:
    """One node's output inside the failing block (same figures as a block)."""

    name: str
    op_type: str
    tensor: str
    dtype: str  # how the variant stores the tensor: float16 | float32 | …
    max_abs: float
    rel_l2: float
    min_cosine: float
    max_activation: float
    nonfinite: int
    breaks: bool

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "op_type": self.op_type, "tensor": self.tensor, "dtype": self.dtype,
                "max_abs": _num(self.max_abs), "rel_l2": _num(self.rel_l2), "min_cosine": _num(self.min_cosine),
                "max_activation": _num(self.max_activation), "nonfinite": self.nonfinite, "breaks": self.breaks}


@dataclass
class BlockFigures:
    """One transformer block: its output against fp32, and the ranges of every tensor inside it.

    Attributes:
        index, name: 0-based position in execution order and the module path.
        output: the block's output tensor (fp32 graph name).
        max_abs, rel_l2, min_cosine: the block output, variant vs fp32, over every input.
        max_activation: the largest fp32 |value| of any tensor of the block the variant stores in fp16
            (None: the variant stores none in fp16); `max_activation_node` produced it.
        overflow_margin: 65504 / max_activation; below 1 that tensor overflows fp16.
        first_nonfinite: the first node of the block whose variant output holds inf/NaN (name, tensor,
            count), or None.
        breaks: the block fails its tolerance (max_rel_l2, min_cosine), overflows, or holds a non-finite value.
        reasons: why it breaks, in words.
        nodes: per-node figures (only for the first breaking block).
        membership: ToMe blocks only: {patches, moved, agreement} — rows are compared by the set of
            patches merged into them (debug/membership.py); `moved` patches sit in rows whose set the
            other run has nowhere (a merge decision that went the other way), left out of the figures.
    """

    index: int
    name: str
    output: str
    max_abs: float
    rel_l2: float
    min_cosine: float
    max_activation: float | None
    max_activation_node: str | None
    overflow_margin: float | None
    first_nonfinite: dict[str, Any] | None
    breaks: bool
    reasons: list[str] = field(default_factory=list)
    nodes: list[NodeFigures] = field(default_factory=list)
    membership: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {"index": self.index, "name": self.name, "output": self.output, "max_abs": _num(self.max_abs),
             "rel_l2": _num(self.rel_l2), "min_cosine": _num(self.min_cosine),
             "max_activation": _num(self.max_activation), "max_activation_node": self.max_activation_node,
             "overflow_margin": _num(self.overflow_margin), "first_nonfinite": self.first_nonfinite,
             "breaks": self.breaks, "reasons": list(self.reasons)}
        if self.membership is not None:
            d["membership"] = {k: _num(v) if isinstance(v, float) else v for k, v in self.membership.items()}
        if self.nodes:
            d["nodes"] = [n.to_dict() for n in self.nodes]
        return d


@dataclass
class DebugResult:
    """The outcome of one `tokcomp debug` run; truthy when no block breaks (after --fix: the fixed variant).

    Attributes:
        variant: the variant examined; file: its ONNX file (or the engine); made: how it was made when the
            bundle did not hold it (a temporary conversion with the default options), else None.
        inputs: what was fed (golden reference batches or photos), in words.
        runtime: how both graphs ran.
        blocks: per-block figures in execution order.
        culprit: None, or {index, name, node} of the first breaking block and its first breaking node.
        tolerance: the core.tolerance.Tolerance used (max_rel_l2 and min_cosine judge each block).
        fix: None, or what --fix did: islands, rounds, the registered file, before/after figures.
        passed: no block breaks (with --fix: in the registered variant).
    """

    bundle: str
    variant: str
    file: str
    variant_sha256: str | None
    inputs: str
    runtime: str
    blocks: list[BlockFigures]
    culprit: dict[str, Any] | None
    tolerance: dict[str, float]
    made: str | None = None
    fix: dict[str, Any] | None = None
    seconds: float = 0.0
    passed: bool = field(init=False)

    def __post_init__(self) -> None:
        self.passed = self.culprit is None

    def __bool__(self) -> bool:
        return self.passed

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "bundle": self.bundle, "variant": self.variant,
                "file": self.file, "variant_sha256": self.variant_sha256, "made": self.made, "inputs": self.inputs,
                "runtime": self.runtime, "tolerance": self.tolerance, "passed": self.passed,
                "culprit": self.culprit, "blocks": [b.to_dict() for b in self.blocks], "fix": self.fix,
                "seconds": round(self.seconds, 3)}
