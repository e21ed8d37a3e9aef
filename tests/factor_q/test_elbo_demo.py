"""The demonstration of examples/elbo_demo.py, run as a test."""

import torch

from circuits.structures import mean_field, selective
from factor_q import FactorGraph, FactorValues, elbo, log_partition
from tests.run_helpers import load_script


def load_demo():
    return load_script("examples/elbo_demo.py")


def test_selective_policy_reaches_log_z_and_mean_field_does_not():
    demo = load_demo()
    result = demo.run(seed=0)
    assert result["selective(3, 3, width=27)"] < 0.01
    assert result["mean_field(3, 3)"] > 0.2
    assert min(result["selective(3, 3, width=27)"], result["mean_field(3, 3)"]) > -1e-9
    printed = demo.report(result)
    assert "selective(3, 3, width=27): log Z - max ELBO = 0.00" in printed
    assert "mean_field(3, 3): log Z - max ELBO = " in printed


def test_the_boltzmann_policy_attains_log_z_exactly():
    """For Q without factors, exp(Q / alpha) / Z is the mean-field policy with logits Q / alpha."""
    unary = torch.randn(4, 3, 5, dtype=torch.float64)
    values = FactorValues(FactorGraph(3, []), unary)
    dist = mean_field(3, 5).distribution(unary.flatten(1))
    torch.testing.assert_close(elbo(values, dist), log_partition(values))
    hot = mean_field(3, 5).distribution(unary.flatten(1) / 2.0)
    torch.testing.assert_close(elbo(values, hot, alpha=2.0), log_partition(values, alpha=2.0))


def test_elbo_of_a_circuits_own_parameters_broadcasts():
    g = FactorGraph.complete(3)
    values = FactorValues.from_tables(g, [torch.randn(5, 2, 2) for _ in range(3)])
    circuit = selective(3, 2, width=8)
    own = elbo(values, circuit.distribution())
    batched = elbo(values, circuit.distribution(circuit.logits.detach()[None].expand(5, -1)))
    assert own.shape == (5,)
    torch.testing.assert_close(own, batched)
