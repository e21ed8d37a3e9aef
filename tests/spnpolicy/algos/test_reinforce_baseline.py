"""The reinforce actor gradient with 2 draws per state is unbiased: its mean over many seeded
draws is the exact gradient. A baseline that includes the draw itself (the mean over all
draws) halves the expected gradient at 2 draws, which this test detects."""

import itertools

import torch

from circuits.structures import selective
from factor_q import FactorGraph, FactorValues
from spnpolicy.algos.spn_ac import actor_loss

N, K, ROWS = 2, 3, 60_000


def test_reinforce_gradient_mean_is_the_exact_gradient():
    circuit = selective(N, K, width=9)
    gen = torch.Generator().manual_seed(3)
    param = (2 * torch.randn(1, circuit.num_params, generator=gen,
                             dtype=torch.float64)).requires_grad_()
    graph = FactorGraph.complete(N)
    q = [FactorValues.from_tables(graph, [2 * torch.randn(1, K, K, generator=gen,
                                                          dtype=torch.float64)],
                                  unary=torch.randn(1, N, K, generator=gen, dtype=torch.float64))
         for _ in range(2)]
    alpha = torch.tensor(0.5, dtype=torch.float64)

    # exact: d/dparam of -(E[min_j Q_j(u)] - alpha E[log pi(u)]), by enumeration
    dist = circuit.distribution(param)
    objective = torch.zeros(1, dtype=torch.float64)
    for u in itertools.product(range(K), repeat=N):
        u = torch.tensor([u])
        logp = dist.log_prob(u)
        objective = objective + logp.exp() * (torch.minimum(q[0].evaluate(u), q[1].evaluate(u))
                                              - alpha * logp)
    (exact,) = torch.autograd.grad(-objective.mean(), param)

    # reinforce over ROWS copies of the state, 2 draws each: the loss's mean over rows is
    # the mean of ROWS independent gradient estimates
    rows = FactorValues.stack([FactorValues(graph, v.unary.expand(ROWS, -1, -1),
                                            v.pairwise.expand(ROWS, -1, -1, -1)) for v in q])
    torch.manual_seed(0)
    loss, _ = actor_loss(rows, circuit.distribution(param.expand(ROWS, -1)), alpha, "reinforce",
                         samples=2)
    (estimate,) = torch.autograd.grad(loss, param)
    error = (estimate - exact).norm() / exact.norm()
    assert error < 0.15, (error, estimate, exact)
