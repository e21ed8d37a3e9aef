"""Queries first run under ``torch.inference_mode()`` (how policies act) leave no inference
tensor in the circuit's kept structure: every query then runs with its backward, and
gives the same numbers in both modes."""

import pytest
import torch

from circuits import Circuit
from circuits.structures import random_tensorized, selective
from tests.circuits.helpers import engine


def _rat() -> Circuit:
    return random_tensorized(num_vars=6, num_states=3, depth=2, num_repetitions=2, num_sums=3,
                             num_input_distributions=3, seed=0)


def _evidence(x: torch.Tensor) -> torch.Tensor:
    evidence = torch.full_like(x, -1)
    evidence[..., 0] = x[..., 0]
    return evidence


QUERIES = {
    "log_prob": lambda d, x: d.log_prob(x),
    "marginals": lambda d, x: d.marginals(),
    "scope_marginals": lambda d, x: d.scope_marginals([(0, 1), (3, 2)]),
    "triples": lambda d, x: d.scope_marginals([(0, 4, 5)]),
    "leave_one_out": lambda d, x: d.leave_one_out_log_prob(x),
    "condition": lambda d, x: d.condition(_evidence(x if d.batch_shape else x[0])).marginals(),
    "sample": lambda d, x: d.sample(),
    "mode": lambda d, x: d.mode,
}
DETERMINISTIC = {"entropy": lambda d, x: d.entropy()}

CASES = {  # name -> (fresh circuit, parameter shape, its distribution, queries)
    "rat": (_rat, lambda c: (c.num_params,), lambda c, p: c.distribution(p), QUERIES),
    "selective": (lambda: selective(6, 3, 4), lambda c: (4, c.num_params),
                  lambda c, p: engine(c, p), QUERIES | DETERMINISTIC),
    "region tree": (lambda: selective(6, 3, 4), lambda c: (4, c.num_params),
                    lambda c, p: c.distribution(p),
                    {k: QUERIES[k] for k in ("log_prob", "marginals", "sample", "mode")}
                    | DETERMINISTIC | {"pairs": lambda d, x: d.scope_marginals([(0, 1), (5, 2)])}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_queries_after_inference_mode_have_gradients(case):
    build, shape, distribution, queries = CASES[case]
    for first_name, first in queries.items():
        circuit = build()
        torch.manual_seed(0)
        params = torch.randn(*shape(circuit), requires_grad=True)
        x = distribution(circuit, params.detach()).sample(
            (5,) if len(shape(circuit)) == 1 else ())
        with torch.inference_mode():
            first(distribution(circuit, params), x)
        for name, query in queries.items():
            if name in ("sample", "mode"):
                continue
            torch.manual_seed(1)
            out = query(distribution(circuit, params), x)
            grad, = torch.autograd.grad(out.sum(), params)      # raised before the fix
            assert torch.isfinite(grad).all(), (first_name, name)
            with torch.inference_mode():
                torch.manual_seed(1)
                again = query(distribution(circuit, params), x)
            torch.testing.assert_close(again, out.detach(), msg=f"{first_name} then {name}")


def test_a_circuit_built_in_inference_mode_trains():
    with torch.inference_mode():
        circuit = selective(4, 3, 4)
        x = circuit.sample(8, generator=torch.Generator().manual_seed(0))
    assert not circuit.logits.is_inference()
    optimizer = torch.optim.SGD(circuit.parameters(), lr=0.1)
    loss = -circuit.distribution().log_prob(x).mean()
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        assert float(-circuit.distribution().log_prob(x).mean()) < float(loss)
