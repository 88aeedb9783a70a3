"""Shared set-up for the policy tests: one torch thread per test."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """The CI machine has 2 shared cores: these small ops run faster on one thread."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
