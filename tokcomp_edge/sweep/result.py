"""SweepConfig in, SweepResult out; the result's JSON is sweep.json (schema `tokcomp.sweep`, version 1)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA, SCHEMA_VERSION = "tokcomp.sweep", 1

# Used when --prompts is not given: short, generic questions whose answers depend on the image.
DEFAULT_PROMPTS = (
    "Describe the image in one sentence.",
    "What is the main object in the image?",
    "What colour is the main object?",
    "How many objects are there?",
    "Is there any text in the image? What does it say?",
)


@dataclass(frozen=True)
class SweepConfig:
    """Everything `tokcomp sweep` needs.

    Attributes:
        model: `hf:<folder>` of a whole VLM checkpoint (LLM weights and tokenizer included).
        images: a folder of JPEG/PNG/BMP/WebP images.
        prompts: a text file, one prompt a line (blank lines skipped); None → DEFAULT_PROMPTS.
        pairs: instead of images × prompts, a file of `IMAGE<TAB>PROMPT` lines (questions about one photo each;
            IMAGE relative to `images`).
        candidates: comma-separated specs (`none` is always added); None → the family's default grid.
        tokens, max_ms, min_agreement: the pick's constraint (at most one; none → fronts only).
        answer_tokens: K, the reference answer's length (greedy; an eos ends it earlier).
        max_pairs: use at most this many (image, prompt) pairs, image-major order; None → all.
        out: the folder for sweep.json + sweep.html (+ bundle/ with `export`); None → export/<model>_sweep.
        force: replace an existing `out`.
        llm_dtype: the LLM's dtype: float32 | bfloat16 | float16 (the vision path stays float32).
        latency: the latency backend (`--backend`, also `--latency`): `onnxruntime` | `tensorrt` | `pytorch` |
            `none` (cost.py; tensorrt builds an engine per candidate, trt_latency.py).
        profile: the build profile of the TensorRT engines (a `tokcomp build --profile` preset or TOML file);
            None → fp16. Only with latency `tensorrt`.
        latency_runs: timed calls per candidate.
        seed: the bootstrap's seed.
        export: export the pick with the normal pipeline into out/bundle and validate it (with latency
            `tensorrt`: its engine, built into out/engines, is what is validated).
        variants: extra variants of the exported pick (`fp16`, `nhwc`, `fp16-nhwc`, as `tokcomp export
            --variants`); only with `export`.
        answers: also decode every candidate's own greedy answer on every pair (per_pair `answer`, token ids):
            what a task-accuracy benchmark scores against ground truth; costs up to K more LLM steps per
            candidate × pair.
        quiet: no progress output.
    """

    model: str
    images: Path
    prompts: Path | None = None
    pairs: Path | None = None
    candidates: str | None = None
    tokens: int | None = None
    max_ms: float | None = None
    min_agreement: float | None = None
    answer_tokens: int = 24
    max_pairs: int | None = None
    out: Path | None = None
    force: bool = False
    llm_dtype: str = "float32"
    latency: str = "onnxruntime"
    profile: str | Path | None = None
    latency_runs: int = 15
    seed: int = 0
    export: bool = False
    variants: tuple[str, ...] = ()
    answers: bool = False
    quiet: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
                for k, v in self.__dict__.items()}


@dataclass
class SweepResult:
    """What the sweep measured and decided.

    Attributes:
        config: the SweepConfig as a dict.
        model: facts of the VLM (family, native tokens per tile, LLM shape, template used).
        candidates: one row per measured candidate (spec, tokens, top1/kl/match with intervals, latency,
            economics, per-prompt breakdown, per-pair scores).
        refused: candidates the family refuses, with the reason.
        pairs: the pairs, each with its `reference` answer as token ids (and text).
        fronts: {"tokens": [...], "latency_ms": [...]} Pareto fronts (spec texts).
        constraint: the constraint and its rule.
        pick: the chosen spec, or None (no constraint, or none feasible).
        infeasible: the one-line reason when no candidate met the constraint.
        examples: reference vs the pick's own greedy answer on a few pairs.
        latency: how latency was measured.
        timing: wall seconds (fidelity, latency, total) and seconds per candidate × pair.
        bundle: the exported bundle's path (with `export`).
        engine: the pick's TensorRT engine (with `export` and latency `tensorrt`), built from that bundle.
        validation: `tokcomp validate` of that bundle: passed, failures, its report files (relative to out).
        out: the folder written.
    """

    config: dict[str, Any]
    model: dict[str, Any]
    candidates: list[dict[str, Any]]
    refused: list[dict[str, Any]]
    pairs: list[dict[str, Any]]
    fronts: dict[str, list[str]]
    constraint: dict[str, Any]
    pick: str | None
    infeasible: str | None
    examples: list[dict[str, Any]]
    latency: dict[str, Any]
    timing: dict[str, float]
    warnings: list[str] = field(default_factory=list)
    bundle: str | None = None
    engine: str | None = None
    validation: dict[str, Any] | None = None
    out: str | None = None

    def __bool__(self) -> bool:
        return self.pick is not None

    def row(self, spec: str) -> dict[str, Any]:
        return next(c for c in self.candidates if c["spec"] == spec)

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, **{k: v for k, v in self.__dict__.items()}}
