import os

import pytest
import torch

#: Devices the device-parametrised tests run on: "cpu" here; on a GPU machine
#: PARASAMPLE_TEST_DEVICES=cpu,cuda runs the same tests there with no other code.
DEVICES = [d.strip() for d in os.environ.get("PARASAMPLE_TEST_DEVICES", "cpu").split(",")
           if d.strip()]


@pytest.fixture
def gen():
    """A fresh seeded generator per test (parasample never touches the global RNG)."""
    return torch.Generator().manual_seed(1234)


@pytest.fixture(params=DEVICES)
def device(request):
    """The device under test (see DEVICES)."""
    return torch.device(request.param)
