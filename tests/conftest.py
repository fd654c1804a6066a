import pytest
import torch


@pytest.fixture
def gen():
    """A fresh seeded generator per test (parasample never touches the global RNG)."""
    return torch.Generator().manual_seed(1234)
