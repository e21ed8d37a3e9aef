"""The EinsumNetworks-style reference of ``benchmarks/engine.py`` equals the engine, so the
benchmark compares two evaluators of the same function."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from circuits import Circuit
from circuits.structures import random_tensorized

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from einsum_reference import EinsumReference  # noqa: E402


@pytest.mark.parametrize("depth, reps, sums, inputs", [(1, 1, 2, 3), (2, 2, 3, 2), (3, 3, 4, 4)])
def test_reference_equals_the_engine(depth, reps, sums, inputs):
    circuit = random_tensorized(8, 3, depth=depth, num_repetitions=reps, num_sums=sums,
                                num_input_distributions=inputs, seed=depth)
    x = torch.randint(0, 3, (50, 8), generator=torch.Generator().manual_seed(0))
    want = Circuit(circuit.root, dtype=torch.float64).log_prob(x).detach()
    got = EinsumReference(circuit.root, torch.float64)(x)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_reference_rejects_unequal_leaf_regions():
    circuit = random_tensorized(5, 3, depth=1, num_repetitions=1, num_sums=2,
                                num_input_distributions=2)
    with pytest.raises(ValueError, match="equal numbers of variables"):
        EinsumReference(circuit.root)
