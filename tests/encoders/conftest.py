"""Shared fixtures for the encoder tests: tiny towers are built in code, nothing is downloaded."""

from __future__ import annotations

import pytest
import torch

TINY = ["tiny-clip", "tiny-siglip", "tiny-dinov2", "tiny-vit"]


@pytest.fixture(autouse=True)
def _few_threads(one_torch_thread):
    """Every test here on one PyTorch thread (tests/conftest.py says why)."""


@pytest.fixture
def pixels():
    """pixels(batch=2, size=224, seed=0) -> a seeded [B, 3, size, size] float32 batch."""

    def make(batch: int = 2, size: int = 224, seed: int = 0) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return torch.randn(batch, 3, size, size, generator=g)

    return make
