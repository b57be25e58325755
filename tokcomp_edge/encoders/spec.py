"""What an encoder is, as far as export and every later stage need to know."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class EncoderSpec:
    """The export facts of one vision encoder, declared once per family/preset.

    Attributes:
        name: the model id the user gave (`siglip-b16-224`, `timm:vit_small_patch14_dinov2`, `hf:/path`, `py:m:f`).
        family: `clip` | `siglip` | `dinov2` | `vit` | `timm` | `user`.
        source: where the architecture comes from: `transformers` | `timm` | `hf-local` | `python`.
        image_size: (H, W) the encoder is exported at (static).
        patch_size: pixels per patch side; the grid is image_size // patch_size.
        prefix_tokens: non-patch tokens at the front of the sequence (CLS + registers).
        has_cls: whether the first prefix token is a CLS token (needed by `prune:…:cls-attn`).
        hidden_size: channels of each output token.
        num_layers: transformer blocks in the full model.
        num_heads: attention heads per block.
        mean, std: per-channel pixel normalisation the encoder was trained with (RGB, 0–1 scale).
        default_prefix: `keep` or `drop` — what happens to prefix tokens unless `--prefix` says otherwise.
        config: the architecture hyperparameters needed to rebuild the module (family-specific, JSON-able).
    """

    name: str
    family: str
    source: str
    image_size: tuple[int, int]
    patch_size: int
    prefix_tokens: int
    has_cls: bool
    hidden_size: int
    num_layers: int
    num_heads: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    default_prefix: str = "drop"
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def grid(self) -> tuple[int, int]:
        return (self.image_size[0] // self.patch_size, self.image_size[1] // self.patch_size)

    @property
    def patch_tokens(self) -> int:
        h, w = self.grid
        return h * w

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["image_size"] = list(self.image_size)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        d["grid"] = list(self.grid)
        return d


@dataclass(frozen=True)
class WeightsOrigin:
    """Where the parameters came from: a file (with its sha256) or a seeded random init.

    `covers` says what the sha256 is of: the whole file, or — for a VLM checkpoint, of which only the
    vision path is read — the tensors that were read (names, dtypes, shapes and bytes, in name order).
    """

    kind: str  # "file" | "random"
    seed: int | None = None
    path: str | None = None
    sha256: str | None = None
    covers: str = "file"  # "file" | "vision-path tensors"

    def describe(self) -> str:
        if self.kind == "random":
            return f"random(seed={self.seed}) — NOT trained weights"
        return f"{self.path} (sha256 {self.sha256[:12]}…)" if self.sha256 else str(self.path)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
