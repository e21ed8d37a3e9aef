"""The scope tables' hand-written contraction: values and first and second derivatives."""

import torch

from circuits.tables import _weighted_sum


def test_weighted_sum_matches_the_broadcast_reduction_and_its_gradients():
    g = torch.Generator().manual_seed(0)
    w = torch.rand(3, 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    x = torch.rand(3, 4, 5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(_weighted_sum(w, x), (w.unsqueeze(-1) * x).sum(-2))
    assert torch.autograd.gradcheck(_weighted_sum, (w, x))
    assert torch.autograd.gradgradcheck(_weighted_sum, (w, x))
