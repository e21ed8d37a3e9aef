"""The region-tree layout's routes (``circuit.distribution(params)`` of a region-tree
circuit, a ``TreeDistribution``) give the engine's values (its routes on any circuit, which
tests/circuits checks against brute force) on selective circuits and on hand-built region
trees with shuffled node orders."""

import itertools
import math
import random

import pytest
import torch

from circuits import Categorical, Circuit, CircuitDistribution, Product, Sum, tree_distribution
from circuits.structures import mean_field, mixture, random_tensorized, selective
from circuits.region_tree import RegionTree
from circuits.tree_distribution import BatchLast, TreeDistribution
from tests.circuits.helpers import (ZERO_WEIGHT_CASES, check_entropy_by_enumeration, engine,
                                    zero_weight_params)

SHAPES = [(1, 3, 4), (2, 3, 4), (3, 4, 5), (4, 3, 5), (5, 2, 3), (3, 2, 100), (6, 3, 4)]


def shuffled_tree(num_vars: int, k: int, width: int, seed: int) -> Circuit:
    """A deterministic region tree like ``selective`` but with every node list shuffled,
    products dealt into sums at random, and some regions left unsummed."""
    rng = random.Random(seed)

    def region(variables):
        if len(variables) == 1:
            states = list(range(k))
            rng.shuffle(states)
            return [Categorical.indicator(variables[0], s, k) for s in states]
        half = len(variables) // 2
        left, right = region(variables[:half]), region(variables[half:])
        products = [Product([a, b]) for a in left for b in right]
        rng.shuffle(products)
        if len(products) <= width or rng.random() < 0.3:
            return products
        groups = [[] for _ in range(width)]
        for i, p in enumerate(products):
            groups[i if i < width else rng.randrange(width)].append(p)
        return [Sum(g) for g in groups]

    return Circuit(Sum(region(list(range(num_vars)))))


@pytest.fixture(params=[False, True], ids=["batch-first", "batch-last"])
def batch_last(request, monkeypatch):
    """The tree's flow queries run batch-first eagerly and batch-last while torch.compile
    traces them: both layouts, eagerly (the batch-last one as if tracing)."""
    monkeypatch.setattr(tree_distribution, "compiling", lambda: request.param)
    return request.param


def chain_tree(num_vars: int, k: int, width: int, leaf_left: bool) -> Circuit:
    """An unbalanced region tree: each region splits off one leaf (on the left or the
    right) from the rest, so that few pairs split where one child is a leaf."""
    def leaf(v):
        return [Categorical.indicator(v, s, k) for s in range(k)]

    def region(variables):
        if len(variables) == 1:
            return leaf(variables[0])
        one, rest = (leaf(variables[0]), region(variables[1:]))
        left, right = (one, rest) if leaf_left else (rest, one)
        products = [Product([a, b]) for a in left for b in right]
        if len(products) <= width:
            return products
        return [Sum(products[i::width]) for i in range(width)]

    return Circuit(Sum(region(list(range(num_vars)))))


def _pair(circuit: Circuit, batch: int = 3, seed: int = 0, scale: float = 2.0):
    """``(engine, tree layout, params)``: the two routes' distributions on float64 params."""
    torch.manual_seed(seed)
    circuit = circuit.double()
    assert RegionTree.from_circuit(circuit) is not None
    params = scale * torch.randn(batch, circuit.num_params, dtype=torch.float64)
    tree = circuit.distribution(params)
    assert isinstance(tree, TreeDistribution)
    return engine(circuit, params), tree, params


def _circuits():
    for n, k, w in SHAPES:
        yield f"selective{(n, k, w)}", selective(n, k, w)
    for seed, (n, k, w) in enumerate([(3, 3, 4), (4, 2, 3), (5, 3, 6)]):
        yield f"shuffled{(n, k, w, seed)}", shuffled_tree(n, k, w, seed)


@pytest.mark.parametrize("name,circuit", list(_circuits()), ids=lambda x: x if isinstance(x, str) else "")
def test_queries_equal_the_engine(name, circuit, batch_last):
    flat, tree, _ = _pair(circuit)
    n = circuit.num_vars
    torch.testing.assert_close(tree.marginals(), flat.marginals())
    if circuit.is_deterministic:
        torch.testing.assert_close(tree.entropy(), flat.entropy())
        torch.testing.assert_close(tree.mode, flat.mode)
    if n >= 2:
        scopes = list(itertools.permutations(range(n), 2))
        torch.testing.assert_close(tree.scope_marginals(scopes), flat.scope_marginals(scopes))
    x = flat.sample((5,))
    torch.testing.assert_close(tree.log_prob(x), flat.log_prob(x))


@pytest.mark.parametrize("seed", range(6))
def test_few_pairs_take_their_own_tables_and_equal_the_engine(seed, batch_last):
    """A few pairs of a larger tree (neighbours, reversed, repeated, random): regions where
    at most a quarter of their pairs are asked for compute those alone."""
    rng = random.Random(seed)
    n, k = rng.choice([(7, 2), (9, 3), (12, 2)])
    circuit = selective(n, k, rng.choice([3, 5])) if seed % 2 else shuffled_tree(n, k, 4, seed)
    flat, tree, params = _pair(circuit, seed=seed)
    scopes = [(i, i + 1) for i in range(n - 1)][rng.randrange(2)::2]
    scopes += [(j, i) for i, j in scopes[:2]] + scopes[:1]
    scopes += [tuple(rng.sample(range(n), 2)) for _ in range(3)]
    regions, _ = tree.tree.pair_plan(tuple(scopes))
    assert any(pairs is not None for _, pairs in regions)      # the restricted path runs
    torch.testing.assert_close(tree.scope_marginals(scopes), flat.scope_marginals(scopes))
    weights = torch.randn(params.shape[0], len(scopes), k, k, dtype=torch.float64)
    params.requires_grad_(True)
    circuit = circuit.double()
    expected, = torch.autograd.grad(
        (engine(circuit, params).scope_marginals(scopes) * weights).sum(), params)
    got, = torch.autograd.grad(
        (circuit.distribution(params).scope_marginals(scopes) * weights).sum(), params)
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("leaf_left", [True, False])
def test_few_pairs_beside_a_leaf_equal_the_engine(leaf_left, batch_last):
    """On an unbalanced tree a region can split one leaf from many variables, so that few
    pairs split there with a leaf on one side (the identity for that side's marginals)."""
    circuit = chain_tree(9, 3, 4, leaf_left)
    flat, tree, params = _pair(circuit, seed=3)
    scopes = [(0, 1), (5, 0), (1, 2), (3, 4), (2, 1), (7, 8)]
    regions, _ = tree.tree.pair_plan(tuple(scopes))
    assert sum(pairs is not None and len(pairs[0]) > 1 for _, pairs in regions) >= 1
    torch.testing.assert_close(tree.scope_marginals(scopes), flat.scope_marginals(scopes))


@pytest.mark.parametrize("seed", range(6))
def test_each_states_pairs_equal_the_engines_tables(seed, batch_last):
    """``state_pair_marginals``: each state's own slots (either order, repeats) gathered from
    one batch's tables, against the engine's table of each slot; values and gradients."""
    rng = random.Random(seed)
    n, k = rng.choice([(2, 3), (5, 2), (7, 3)])
    circuit = selective(n, k, 4) if seed % 2 else shuffled_tree(n, k, 4, seed)
    flat, tree, params = _pair(circuit, batch=4, seed=seed)
    scopes = torch.tensor([[rng.sample(range(n), 2) for _ in range(5)] for _ in range(4)])
    expected = torch.stack([flat.scope_marginals([tuple(s) for s in row.tolist()])[b]
                            for b, row in enumerate(scopes)])
    torch.testing.assert_close(tree.state_pair_marginals(scopes), expected)
    weights = torch.randn(*expected.shape, dtype=torch.float64)
    params.requires_grad_(True)
    circuit = circuit.double()
    want, = torch.autograd.grad((torch.stack([
        engine(circuit, params).scope_marginals([tuple(s) for s in row.tolist()])[b]
        for b, row in enumerate(scopes)]) * weights).sum(), params)
    got, = torch.autograd.grad(
        (circuit.distribution(params).state_pair_marginals(scopes) * weights).sum(), params)
    torch.testing.assert_close(got, want)
    one = circuit.distribution(params[0].detach())          # no batch: every state's rows
    torch.testing.assert_close(one.state_pair_marginals(scopes),
                               torch.stack([one.scope_marginals([tuple(s) for s in row.tolist()])
                                            for row in scopes]))
    with pytest.raises(ValueError, match=r"scopes must be a tensor \[B=4, F, 2\]"):
        tree.state_pair_marginals(scopes[:3])
    with pytest.raises(ValueError, match=r"two distinct variables in range\(%d\)" % n):
        tree.state_pair_marginals(torch.zeros(4, 1, 2, dtype=torch.long))


def test_gradients_equal_the_engine(batch_last):
    circuit = selective(4, 3, 5).double()
    params = torch.randn(2, circuit.num_params, dtype=torch.float64, requires_grad=True)
    scopes = [(0, 3), (2, 1), (1, 3)]
    weights = torch.randn(2, 3, 3, 3, dtype=torch.float64)

    def objective(dist):
        dist.sample(), dist.mode                 # without autograd first: nothing kept from them
        return (dist.entropy().sum() + (dist.scope_marginals(scopes) * weights).sum()
                + dist.marginals()[:, 1, 2].sum() + dist.log_prob(torch.tensor([[0, 2, 1, 1]] * 2)).sum())

    expected, = torch.autograd.grad(objective(engine(circuit, params)), params)
    got, = torch.autograd.grad(objective(circuit.distribution(params)), params)
    torch.testing.assert_close(got, expected)


def test_compiled_queries_run_batch_last_and_equal_the_eager_ones():
    """Inside torch.compile the training queries take the batch-last layout; values and
    gradients equal the eager batch-first ones."""
    circuit = shuffled_tree(5, 3, 4, seed=1)
    scopes = [(0, 4), (3, 1), (2, 3), (1, 2)]
    weights = torch.randn(6, len(scopes), 3, 3)

    def objective(params):
        dist = circuit.distribution(params)
        value = (dist.entropy().sum() + (dist.scope_marginals(scopes) * weights).sum()
                 + dist.marginals()[:, 1, 2].sum())
        return value, isinstance(dist._layout(), BatchLast)

    params = torch.randn(6, circuit.num_params, requires_grad=True)
    value, batch_last = objective(params)
    grad, = torch.autograd.grad(value, params)
    assert not batch_last
    got, batch_last = torch.compile(objective, dynamic=False)(params)
    assert batch_last
    torch.testing.assert_close(got, value)
    torch.testing.assert_close(torch.autograd.grad(got, params)[0], grad)


@pytest.mark.parametrize("circuit, states, masked", [
    (shuffled_tree(3, 2, 3, seed=4), 2, 0), (selective(3, 3, 4), 3, 0),
    (selective(3, 3, 4), 3, 6)], ids=["shuffled", "selective", "selective-zero-weights"])
def test_samples_follow_the_probabilities(circuit, states, masked):
    """Seeded draws against the engine's probabilities; ``masked`` logits set to -inf (zero
    weights) must never be drawn through."""
    flat, tree, params = _pair(circuit, batch=2, seed=1)
    if masked:
        params[:, torch.randperm(params.shape[1], generator=torch.Generator().manual_seed(2))
               [:masked]] = -math.inf
        circuit = circuit.double()
        flat, tree = engine(circuit, params), circuit.distribution(params)
    draws = tree.sample((40_000,), generator=torch.Generator().manual_seed(0))  # [S, 2, 3]
    assert draws.shape == (40_000, 2, 3)
    every = torch.tensor(list(itertools.product(range(states), repeat=3)))
    probs = flat.log_prob(every[:, None].expand(-1, 2, -1)).exp()                # [k^3, 2]
    for row in range(2):
        index = (draws[:, row] * torch.tensor([states**2, states, 1])).sum(-1)
        freq = torch.bincount(index, minlength=states**3).double() / 40_000
        # 5 standard errors of a frequency
        tol = 5 * (probs[:, row] * (1 - probs[:, row]) / 40_000).sqrt() + 1e-3
        assert bool(((freq - probs[:, row]).abs() <= tol).all()), (freq, probs[:, row])
        assert bool((freq[probs[:, row] == 0] == 0).all())


@pytest.mark.parametrize("circuit", [selective(4, 3, 4), shuffled_tree(5, 3, 4, seed=2),
                                     chain_tree(5, 2, 3, leaf_left=False)],
                         ids=["selective", "shuffled", "chain"])
@pytest.mark.parametrize("sample_shape", [(), (3,), (2, 2)])
def test_sampling_from_drawn_noise_is_sampling(circuit, sample_shape):
    """``sample`` = ``draw_noise`` (the same generator calls) then ``sample_with``: the same
    draws for the same seed, which a compiled ``sample_with`` reproduces from the noise."""
    _, tree, params = _pair(circuit, batch=4, seed=5)
    rows = math.prod(sample_shape) * 4
    expected = tree.sample(sample_shape, generator=torch.Generator().manual_seed(9))
    noise = tree.tree.draw_noise(rows, torch.Generator().manual_seed(9), params.dtype)
    assert [u.shape[1] for u in noise] == \
        [len(tree.tree.root_pos)] + [r.width for r in tree.tree.draw_order]
    assert torch.equal(tree.sample_with(noise, sample_shape), expected)
    if sample_shape == (3,):                                # one compile per structure
        circuit = circuit.double()
        compiled = torch.compile(lambda p, u: circuit.distribution(p).sample_with(u, (3,)),
                                 dynamic=False)
        assert torch.equal(compiled(params, noise), expected)


def test_other_queries_are_the_engines():
    """Partial values, leave-one-out, conditioning (and the conditioned mode) and triples
    take the engine's routes."""
    circuit = shuffled_tree(5, 3, 4, seed=2)
    flat, tree, _ = _pair(circuit)
    partial = torch.tensor([[0, -1, 2, 1, -1]] * 3)
    torch.testing.assert_close(tree.log_prob(partial), flat.log_prob(partial))
    full = flat.sample()
    torch.testing.assert_close(tree.leave_one_out_log_prob(full),
                               flat.leave_one_out_log_prob(full))
    evidence = torch.tensor([0, -1, 2, -1, -1])
    conditioned = tree.condition(evidence)
    assert isinstance(conditioned, TreeDistribution)
    torch.testing.assert_close(conditioned.marginals(), flat.condition(evidence).marginals())
    torch.testing.assert_close(conditioned.mode, flat.condition(evidence).mode)
    torch.testing.assert_close(tree.scope_marginals([(0, 1, 2)]),
                               flat.scope_marginals([(0, 1, 2)]))


def test_large_logits_stay_normalised(batch_last):
    circuit = selective(3, 3, 4)
    dist = circuit.distribution(1e4 * torch.randn(2, circuit.num_params))
    torch.testing.assert_close(dist.marginals().sum(-1), torch.ones(2, 3))
    assert torch.isfinite(dist.entropy()).all()


def test_other_layouts_are_not_trees():
    for circuit in (mean_field(3, 2), mixture(3, 2, 2), random_tensorized(4, 2, depth=1),
                    random_tensorized(num_vars=4, num_states=2, depth=1, num_repetitions=1,
                                      num_sums=2, num_input_distributions=2, seed=0)):
        assert RegionTree.from_circuit(circuit) is None
        assert type(circuit.distribution()) is CircuitDistribution


def test_the_layout_is_the_circuits_own():
    """``RegionTree.from_circuit`` is the layout the circuit's distribution reads; the
    circuit's own queries take the layout's routes."""
    circuit = selective(2, 3, 4)
    tree = RegionTree.from_circuit(circuit)
    assert tree is circuit._tree_on("cpu") is circuit.distribution().tree
    dist = circuit.distribution(torch.zeros(2, tree.num_params))
    assert isinstance(dist, TreeDistribution) and dist.batch_shape == (2,)
    with pytest.raises(ValueError, match=r"value 3 for variable 1 is out of range"):
        dist.log_prob(torch.tensor([[0, 3], [1, 1]]))
    x = torch.tensor([[0, 2], [1, 1]])
    assert torch.equal(circuit.log_prob(x), circuit.distribution().log_prob(x))


@pytest.mark.parametrize("case", ZERO_WEIGHT_CASES)
def test_entropy_with_zero_weights_matches_enumeration(case, batch_last):
    """Zero weights add nothing to the entropy or its gradient, whether their log-weight is
    -inf (clamped) or finite (underflowed: left as it is)."""
    circuit = selective(3, 3, 4).double()
    gen = torch.Generator().manual_seed(7)
    check_entropy_by_enumeration(circuit.distribution,
                                 zero_weight_params(case, circuit.num_params, gen), 3, 3, gen)
