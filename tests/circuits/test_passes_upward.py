"""The per-layer upward pass (``circuits.upward``) against independent references.

The reference evaluates the node DAG node by node in float64 log space (plain Python, no
engine code), from arbitrary leaf log-values: values spread over thousands of nats make
the dense steps' shared shift underflow, so these tests exercise the exact fallback.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from circuits import Categorical, Circuit, Product, Sum, passes, upward
from circuits.structures import random_tensorized, selective
from tests.circuits import oracle


def _logsumexp(values: list[float]) -> float:
    top = max(values)
    if top == -math.inf:
        return -math.inf
    return top + math.log(math.fsum(math.exp(v - top) for v in values))


def reference(root, leaf_values: dict) -> dict:
    """Log-value of every node given ``leaf node -> log-value`` (float64, node by node)."""
    out = {}
    for node in oracle.topological(root):
        if isinstance(node, Categorical):
            out[node] = leaf_values[node]
        elif isinstance(node, Product):
            out[node] = math.fsum(out[c] for c in node.children)
            if any(out[c] == -math.inf for c in node.children):
                out[node] = -math.inf
        else:
            out[node] = _logsumexp([w + out[c] for w, c in zip(node.log_weights, node.children)])
    return out


def _setup(circuit: Circuit, dtype):
    plan = circuit._plan_on(torch.device("cpu"))
    logp = plan.init_logits.to(dtype).unsqueeze(0)                   # node weights: normalised
    return plan, passes.extend(logp)


def _leaves(plan) -> list:
    by_id = {i: n for n, i in plan.node_of.items()}
    return [by_id[i] for i in range(1, plan.num_leaves + 1)]


def _step_kinds(plan) -> set:
    return {step.kind for layer in plan.schedule.layers for step in layer}


def _upward(plan, ext, leaf_vals, all_nodes=False):
    """``upward.run`` from leaf log-values ``leaf_vals [B, L]`` (any values): the root's
    ``[B]``, or with ``all_nodes`` every node's ``[B, N]`` (column = node id)."""
    outs = upward.run(plan, ext, leaf_vals.T.index_select(0, plan.schedule.row_leaf))
    return upward.node_values(plan, outs).T if all_nodes else upward.root(plan, outs)


def _check_against_reference(circuit: Circuit, leaf_vals: torch.Tensor, rel: float):
    plan, ext = _setup(circuit, leaf_vals.dtype)
    leaves = _leaves(plan)
    got_root = _upward(plan, ext, leaf_vals)
    got_all = _upward(plan, ext, leaf_vals, all_nodes=True)
    for row in range(leaf_vals.shape[0]):
        ref = reference(circuit.root, {leaf: float(v) for leaf, v in zip(leaves, leaf_vals[row])})
        for node, node_id in plan.node_of.items():
            _assert_log_equal(float(got_all[row, node_id]), ref[node], rel)
        _assert_log_equal(float(got_root[row]), ref[circuit.root], rel)


def _assert_log_equal(got: float, want: float, rel: float):
    if want == -math.inf:
        assert got == -math.inf
    else:
        assert got == pytest.approx(want, rel=rel, abs=rel)


RAT = dict(num_vars=4, num_states=3, depth=2, num_repetitions=2, num_sums=3,
           num_input_distributions=2, seed=1)


def test_rat_circuits_use_fused_outer_steps():
    assert "outer" in _step_kinds(random_tensorized(**RAT)._plan_on(torch.device("cpu")))


def test_shared_children_that_are_not_a_product_grid_use_dense_steps():
    leaves = [Categorical(0, 3, probs=[.2, .3, .5]), Categorical(0, 3, probs=[.6, .2, .2])]
    sums = [Sum(leaves, weights=[.3, .7]), Sum(leaves, weights=[.9, .1])]
    circuit = Circuit(Product([Sum(sums), Categorical(1, 2)]))
    assert "dense" in _step_kinds(circuit._plan_on(torch.device("cpu")))


def test_selective_circuits_stay_sparse_and_exact():
    circuit = selective(3, 3, 4)
    kinds = _step_kinds(circuit._plan_on(torch.device("cpu")))
    assert kinds <= {"product", "sum"}
    x = torch.tensor([[0, 1, 2], [2, -1, 0], [-1, -1, -1]])
    joint = oracle.joint_table(circuit.root)
    for row, values in zip(x.tolist(), circuit.log_prob(x).tolist()):
        mask = oracle.consistent_mask(joint.shape, row)
        assert values == pytest.approx(math.log(joint[mask].sum()), abs=1e-5)


@pytest.mark.parametrize("dtype, spread, rel", [(torch.float64, 3000.0, 1e-9),
                                                (torch.float32, 300.0, 2e-5)])
def test_outer_and_dense_steps_survive_leaf_values_far_apart(dtype, spread, rel):
    """Leaf values spread over many nats: the shared shift underflows and the exact
    fallback must take over, for every node."""
    gen = torch.Generator().manual_seed(0)
    for circuit in (random_tensorized(**RAT), _dense_circuit(), _extreme_grid(spread, 0),
                    _extreme_grid(spread, 1)):
        plan, _ = _setup(circuit, dtype)
        leaf_vals = -spread * torch.rand(6, plan.num_leaves, generator=gen, dtype=torch.float64)
        leaf_vals[0] = 0.0
        leaf_vals[1, ::3] = -math.inf
        _check_against_reference(circuit, leaf_vals.to(dtype), rel)


def test_all_minus_infinity_gives_minus_infinity_and_zero_gradients():
    circuit = random_tensorized(**RAT)
    plan, ext = _setup(circuit, torch.float64)
    leaf_vals = torch.full((2, plan.num_leaves), -math.inf, dtype=torch.float64, requires_grad=True)
    ext = ext.clone().requires_grad_(True)
    root = _upward(plan, ext, leaf_vals)
    assert torch.isneginf(root).all()
    root.sum().backward()
    assert torch.equal(leaf_vals.grad, torch.zeros_like(leaf_vals))
    assert not torch.isnan(ext.grad).any()


def test_gradients_match_finite_differences():
    for circuit in (random_tensorized(**RAT), _dense_circuit(), selective(3, 3, 4)):
        plan, ext = _setup(circuit, torch.float64)
        leaf_vals = -3 * torch.rand(3, plan.num_leaves, dtype=torch.float64)
        ext = ext.clone()
        finite = torch.isfinite(ext)
        free = ext[finite].clone().requires_grad_(True)

        def f(leaf, params):
            full = torch.full_like(ext, -math.inf).masked_scatter(finite, params)
            return _upward(plan, full, leaf)
        leaf_vals.requires_grad_(True)
        assert torch.autograd.gradcheck(f, (leaf_vals, free))


def test_float32_and_float64_agree_on_log_prob():
    c64 = random_tensorized(**RAT)
    c32 = Circuit(c64.root, dtype=torch.float32)
    c64 = Circuit(c64.root, dtype=torch.float64)
    x = torch.tensor([[0, 1, 2, 0], [2, -1, 0, 1], [-1, -1, -1, -1], [1, 1, 1, 1]])
    joint = oracle.joint_table(c64.root)
    want = [math.log(joint[oracle.consistent_mask(joint.shape, row)].sum()) for row in x.tolist()]
    np.testing.assert_allclose(c64.log_prob(x).detach().numpy(), want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(c32.log_prob(x).detach().numpy(), want, rtol=1e-5, atol=1e-5)


def test_per_row_parameters_use_the_dense_path_too():
    circuit = random_tensorized(**RAT)
    params = torch.randn(5, circuit.num_params, dtype=torch.float64,
                         generator=torch.Generator().manual_seed(0))
    x = torch.tensor([[0, 1, 2, 0]]).expand(5, -1)
    got = circuit.distribution(params.float()).log_prob(x)
    for row in range(5):
        c_row = Circuit(circuit.root, dtype=torch.float64)
        with torch.no_grad():
            c_row.logits.copy_(params[row])
        assert float(got[row].detach()) == pytest.approx(float(c_row.log_prob(x[:1])[0].detach()),
                                                     abs=1e-5)


def _extreme_grid(spread: float, seed: int) -> Circuit:
    """Sums over a complete product grid (an outer step) whose log-weights spread over
    ``spread`` nats, some weights exactly 0: ``exp`` of them underflows, and the block's
    shared shift is far above some sums' values."""
    gen = torch.Generator().manual_seed(seed)
    left = [Categorical(0, 3, logits=(-3 * torch.rand(3, generator=gen)).tolist()) for _ in range(3)]
    right = [Categorical(1, 2, logits=(-3 * torch.rand(2, generator=gen)).tolist()) for _ in range(2)]
    grid = [Product([a, b]) for a in left for b in right]
    sums = []
    for i in range(4):
        logits = (-spread * torch.rand(len(grid), generator=gen, dtype=torch.float64)).tolist()
        top = max(v for j, v in enumerate(logits) if j != i)
        weights = [0.0 if j == i else math.exp(v - top) for j, v in enumerate(logits)]
        sums.append(Sum(grid, logits=logits) if i % 2 else
                    Sum(grid, weights=[w / math.fsum(weights) for w in weights]))
    c = Circuit(Sum(sums), dtype=torch.float64)
    assert "outer" in _step_kinds(c._plan_on(torch.device("cpu")))
    return c


def _dense_circuit() -> Circuit:
    """Two sums sharing a child list of leaves (dense, not fusable), under a product grid of
    two regions (fusable) that a second parent also uses (so not fused)."""
    a = [Categorical(0, 3, probs=p) for p in ([.2, .3, .5], [.6, .2, .2], [.1, .1, .8])]
    b = [Categorical(1, 2, probs=p) for p in ([.4, .6], [.9, .1])]
    shared = [Sum(a, weights=w) for w in ([.3, .3, .4], [.5, .25, .25])]
    grid = [Product([s, t]) for s in shared for t in b]
    tops = [Sum(grid, weights=w) for w in ([.1, .2, .3, .4], [.25, .25, .25, .25])]
    return Circuit(Sum(tops + [grid[0]], weights=[.5, .3, .2]), dtype=torch.float64)


def test_empty_batches_on_every_step_kind():
    for circuit in (random_tensorized(**RAT), _dense_circuit(), selective(3, 3, 4)):
        plan, ext = _setup(circuit, torch.float64)
        empty = torch.zeros(0, circuit.num_vars, dtype=torch.long)
        assert circuit.log_prob(empty).shape == (0,)
        assert passes.log_values(plan, ext, empty, 0).shape == (0, plan.num_nodes)
        assert _upward(plan, ext, torch.zeros(0, plan.num_leaves, dtype=torch.float64)).shape == (0,)
