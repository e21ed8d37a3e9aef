"""Suite-wide settings: one torch thread per test process, and every test leaves the env
registry as it found it.

The suite runs under pytest-xdist on 2 cores; several multi-threaded torch processes on
2 cores oversubscribe the CPU and slow every tensor op by orders of magnitude. Training on
a callable env registers a name for it ("custom:..."): without the reset, tests that
count the registered names depended on which tests ran before them in the same worker.
"""

import pytest
import torch

from spnpolicy.envs import registry

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def clean_registry():
    before = dict(registry._REGISTERED)
    yield
    registry._REGISTERED.clear()
    registry._REGISTERED.update(before)
