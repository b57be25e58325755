"""What one comparison takes and gives: the output layout in (from the manifest), Checks out.

Kept apart from the comparators (core.comparison_dense, core.comparison_paired) so that each imports the
types without importing the others; core.comparison re-exports them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .target_checks import TargetLayout


@dataclass(frozen=True)
class OutputLayout:
    """How the compressed token sequence maps onto the image grid (from the manifest's compression)."""

    method: str
    prefix_out: int
    grid_in: tuple[int, int]
    grid_out: tuple[int, int] | None
    tokens: str = "tokens"
    indices: str | None = None
    merged_out: int = 0  # tokens after the indexed ones (VisionZip's contextual tokens)
    merge_map: str | None = None  # output row of each patch (visionzip, tome)
    target: TargetLayout | None = None  # what the target must be alone (core.target_checks)

    @classmethod
    def plain(cls, outputs: list[str], target: TargetLayout | None = None) -> "OutputLayout":
        """Every output compared elementwise as it is (export parity: same machine, same order); the
        target is still judged alone against `target` (the manifest-to-be) first."""
        return cls(method="none", prefix_out=0, grid_in=(0, 0), grid_out=None,
                   tokens=outputs[0] if outputs else "tokens", target=target)

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> "OutputLayout":
        # A hand-made bundle (a user's own ONNX) may have no compression section: no layout to use.
        comp = manifest.get("compression", {})
        outs = [o["name"] for o in manifest["onnx"]["outputs"]]
        idx = "indices" if "indices" in outs else None
        grid_out = comp.get("grid_out")
        if manifest.get("vlm"):
            # A VLM's tokens come after its own transform (pixel shuffle, pooling): their grid is the final one.
            grid_out = manifest.get("grid_out")
        gi = comp.get("grid_in") or manifest["encoder"].get("grid") or (0, 0)
        return cls(method=str(comp.get("method", "none")), prefix_out=int(comp.get("prefix_out", 0)),
                   grid_in=(int(gi[0]), int(gi[1])),
                   grid_out=(int(grid_out[0]), int(grid_out[1])) if grid_out else None,
                   tokens=next((o for o in outs if o != idx), outs[0]), indices=idx,
                   merged_out=int(comp.get("merged_out", 0) or 0),
                   merge_map="merge_map" if "merge_map" in outs else None,
                   target=TargetLayout.from_manifest(manifest))


@dataclass
class Check:
    """One output of one comparison, judged.

    Attributes:
        source: what the target was compared with: `golden` (bundle reference), `pytorch-seeded`,
            `pytorch-images`, or `pytorch-rebuild` (the rebuilt reference against the golden outputs).
        batch: images in the comparison.
        output: output name.
        kind: `tokens`, `indices` or `tensor`.
        metrics: TensorMetrics fields (+ prune agreement for `indices`, matched-token count for prune tokens).
        tolerance: the thresholds used.
        passed: all thresholds hold.
        failures: one sentence per violated threshold.
        grid: worst per-token cosine per grid cell (output grid; input grid for prune), for the heat-map.
    """

    source: str
    batch: int
    output: str
    kind: str
    metrics: dict[str, Any]
    tolerance: dict[str, Any]
    passed: bool
    failures: list[str] = field(default_factory=list)
    grid: list[list[float | None]] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def where(self) -> str:
        return f"{self.source} (batch {self.batch}) · {self.output}"


@dataclass
class CheckResult:
    """Outcome of a whole check (a variant's, the int8 check): `to_dict()` goes into the variant's
    manifest entry under `check`.

    Attributes:
        passed: every output of every batch met its tolerance (in every run the check makes).
        metrics: worst figures per output (`outputs`), what was compared, how it ran, the tolerance.
        failures: one sentence per violated threshold, naming the run, batch and output.
    """

    passed: bool
    metrics: dict[str, Any]
    failures: list[str]

    def __bool__(self) -> bool:
        return self.passed

    def to_dict(self) -> dict[str, Any]:
        return {**self.metrics, "failures": list(self.failures), "passed": self.passed}

    def failure_text(self, limit: int = 3) -> str:
        """The first few failure sentences on one line (the ParityError message)."""
        more = len(self.failures) - limit
        return "; ".join(self.failures[:limit]) + (f" (+{more} more)" if more > 0 else "")
