"""Fixtures shared by more than one test folder."""

from __future__ import annotations

import pytest


@pytest.fixture
def one_torch_thread():
    """PyTorch on one thread for the test, restored after: the test machines are shared, tiny models gain
    nothing from more threads, and one thread makes PyTorch's reductions the same run to run. Folders that
    want it for every test request it from an autouse fixture (tests/encoders, tests/vlm) or `pytestmark`."""
    import torch

    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)
