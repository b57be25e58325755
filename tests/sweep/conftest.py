"""A tiny LLaVA folder (LLM and tokenizer included), a few photos and a prompts file, once per session."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sweep_helpers import save_llava_folder  # noqa: E402

PHOTOS = Path(__file__).resolve().parents[1] / "calibration" / "photos"


@pytest.fixture(autouse=True)
def _few_threads(one_torch_thread):
    """Every test here on one PyTorch thread (tests/conftest.py says why)."""


@pytest.fixture(scope="session")
def llava(tmp_path_factory):
    """(folder, transformers model) of a saved tiny random LLaVA with tokenizer, processor and chat template."""
    return save_llava_folder(tmp_path_factory.mktemp("sweep_vlm") / "tiny-llava")


@pytest.fixture(scope="session")
def photos(tmp_path_factory):
    """A folder of two real photos of different sizes."""
    folder = tmp_path_factory.mktemp("sweep_photos")
    for name in ("chelsea-cat-300x200.jpg", "rocket-200x300.jpg"):
        shutil.copy(PHOTOS / name, folder / name)
    return folder


@pytest.fixture(scope="session")
def prompts(tmp_path_factory):
    path = tmp_path_factory.mktemp("sweep_prompts") / "questions.txt"
    path.write_text("what colour is the shape ?\n\nhow many shapes are there ?\n")
    return path
