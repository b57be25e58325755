"""The encoder stage's typed input and output (no torch import, so the CLI can build configs cheaply)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .spec import EncoderSpec, WeightsOrigin

if TYPE_CHECKING:  # pragma: no cover
    from .tower import VisionTower


@dataclass(frozen=True)
class EncoderConfig:
    """Which encoder to build and how.

    Attributes:
        model: a preset name (`tokcomp models`), `timm:<name>`, `hf:<local dir>` or `py:<module>:<factory>`.
        image_size: square input size overriding the model's own; a multiple of the patch size.
        weights: a `.safetensors` file or a torch checkpoint (read with weights_only=True);
            None = the hf: folder's own weights when it has them, else random init with `seed`.
        seed: random-init seed (bit-identical parameters for the same seed).
        layer: which hidden layer the tower returns: -1 the last (with the family's final norm, as HF's
            last_hidden_state), -2 the penultimate (raw, as LLaVA reads it), k >= 1 the k-th block's output.
    """

    model: str
    image_size: int | None = None
    weights: Path | None = None
    seed: int = 0
    layer: int = -1


@dataclass
class LoadedEncoder:
    """A built encoder: its facts, the module (eval, float32, frozen) and where its parameters came from."""

    spec: EncoderSpec
    tower: VisionTower
    weights: WeightsOrigin
