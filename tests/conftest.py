"""Shared fixtures of the test suite."""

import pytest
import torch


@pytest.fixture
def one_torch_thread():
    """Run a test with one torch intra-op thread (deterministic reductions, and fast on a
    busy 2-core machine), restoring the previous count afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
