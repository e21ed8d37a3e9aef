"""Ready-made circuit structures. Each builder returns a compiled :class:`~circuits.Circuit`.

- :func:`mean_field`: fully factorised, ``prod_i p(x_i)``; deterministic.
- :func:`selective`: Shih & Ermon (2020)'s selective SPN generalised to k states;
  deterministic, smooth, decomposable, ``O(num_vars * width**2)`` edges, and able to
  represent correlated joint distributions (any distribution when ``width >= k**num_vars``).
- :func:`mixture`: a mixture of mean-field components; not deterministic.
- :func:`random_tensorized`: a RAT-SPN (Peharz et al. 2020) region graph; not deterministic.
"""

from __future__ import annotations

import random

from circuits.circuit import Circuit
from circuits.nodes import Categorical, Node, Product, Sum

__all__ = ["mean_field", "selective", "mixture", "random_tensorized"]


def _check_ints(low: int = 1, **values) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")


def mean_field(num_vars: int, num_states: int) -> Circuit:
    """A product of ``num_vars`` independent categoricals (uniform at initialisation)."""
    _check_ints(num_vars=num_vars, num_states=num_states)
    return Circuit(Product([Categorical(v, num_states) for v in range(num_vars)]))


def selective(num_vars: int, num_states: int, width: int) -> Circuit:
    """A deterministic circuit over a balanced binary tree of variables: a leaf region
    holds its variable's indicators, an inner region the products of its two child regions'
    nodes, dealt round-robin into ``width`` sums where there are more than ``width``; the
    root is one sum over the top region's nodes."""
    _check_ints(num_vars=num_vars, num_states=num_states, width=width)

    def region(variables: list[int]) -> list[Node]:
        if len(variables) == 1:
            return [Categorical.indicator(variables[0], s, num_states) for s in range(num_states)]
        half = len(variables) // 2
        left, right = region(variables[:half]), region(variables[half:])
        products = [Product([a, b]) for a in left for b in right]
        if len(products) <= width:
            return products
        groups = [products[g::width] for g in range(width)]
        return [Sum(group) for group in groups]

    top = region(list(range(num_vars)))
    return Circuit(top[0] if len(top) == 1 else Sum(top))


def mixture(num_vars: int, num_states: int, components: int, seed: int = 0) -> Circuit:
    """A mixture of ``components`` mean-field components with random initial leaves."""
    _check_ints(num_vars=num_vars, num_states=num_states, components=components)
    rng = random.Random(seed)
    comps = [Product([Categorical(v, num_states, logits=[rng.gauss(0, 1) for _ in range(num_states)])
                      for v in range(num_vars)]) for _ in range(components)]
    return Circuit(Sum(comps))


def random_tensorized(num_vars: int, num_states: int, depth: int = 2, num_repetitions: int = 2,
                      num_sums: int = 4, num_input_distributions: int = 4, seed: int = 0) -> Circuit:
    """A RAT-SPN (Peharz et al. 2020): per repetition the variables permuted and halved
    ``depth`` times; a leaf region has ``num_input_distributions`` products of one
    categorical per variable, an inner region ``num_sums`` sums over all products of its
    child regions' nodes; the root sums over every repetition. Random weights (``seed``)."""
    _check_ints(num_vars=num_vars, num_states=num_states)
    _check_ints(0, depth=depth)
    _check_ints(num_repetitions=num_repetitions, num_sums=num_sums,
                num_input_distributions=num_input_distributions)
    if 2 ** depth > num_vars:
        raise ValueError(f"depth={depth} splits the variables into {2 ** depth} regions but "
                         f"num_vars={num_vars}; use depth <= {num_vars.bit_length() - 1}")
    rng = random.Random(seed)

    def leaf_inputs(variables: list[int]) -> list[Node]:
        def categorical(v: int) -> Categorical:
            return Categorical(v, num_states, logits=[rng.gauss(0, 1) for _ in range(num_states)])
        return [Product([categorical(v) for v in variables]) if len(variables) > 1
                else categorical(variables[0]) for _ in range(num_input_distributions)]

    def region(variables: list[int], level: int) -> list[Node]:
        if level == depth:
            return leaf_inputs(variables)
        half = len(variables) // 2
        left, right = region(variables[:half], level + 1), region(variables[half:], level + 1)
        products = [Product([a, b]) for a in left for b in right]
        return [Sum(products, logits=[rng.gauss(0, 1) for _ in products]) for _ in range(num_sums)]

    tops = []
    for _ in range(num_repetitions):
        order = list(range(num_vars))
        rng.shuffle(order)
        tops.extend(region(order, 0))
    return Circuit(Sum(tops, logits=[rng.gauss(0, 1) for _ in tops]))
