"""Node construction and Circuit validation: CircuitError naming the node and variables."""

import math
import re

import pytest
import torch
from hypothesis import given

from circuits import Categorical, Circuit, CircuitError, Product, Sum
from tests.circuits import oracle
from tests.circuits.helpers import PROPERTY
from tests.circuits.strategies import random_circuits


def raises(*fragments):
    """CircuitError (a ValueError) whose message contains every fragment."""
    pattern = "(?s)" + "".join(rf"(?=.*{re.escape(f)})" for f in fragments)
    return pytest.raises(CircuitError, match=pattern)


def test_circuit_error_is_a_value_error():
    assert issubclass(CircuitError, ValueError)


@pytest.mark.parametrize("kwargs, fragments", [
    (dict(var=-1, num_states=2), ["var", "-1"]),
    (dict(var=True, num_states=2), ["var", "True"]),
    (dict(var=1.0, num_states=2), ["var", "1.0"]),
    (dict(var=0, num_states=0), ["var=0", "num_states", "0"]),
    (dict(var=2, num_states=3, probs=[.5, .5]), ["var=2", "probs", "3", "2"]),
    (dict(var=2, num_states=2, probs=[1.5, -.5]), ["var=2", "probs", "-0.5"]),
    (dict(var=2, num_states=2, probs=[math.nan, 1.0]), ["var=2", "probs", "NaN"]),
    (dict(var=2, num_states=2, probs=[.3, .3]), ["var=2", "probs", "sum"]),
    (dict(var=2, num_states=2, probs=[0.0, 0.0]), ["var=2", "probs"]),
    (dict(var=2, num_states=2, logits=[0.0, math.nan]), ["var=2", "logits", "NaN"]),
    (dict(var=2, num_states=2, logits=[0.0, math.inf]), ["var=2", "logits", "inf"]),
    (dict(var=2, num_states=2, logits=[-math.inf, -math.inf]), ["var=2", "zero probability"]),
    (dict(var=2, num_states=2, logits=[0.0, 1.0], probs=[.5, .5]), ["var=2", "probs", "logits"]),
    (dict(var=2, num_states=2, probs="ab"), ["var=2", "probs"]),
    (dict(var=2, num_states=3, support=[]), ["var=2", "support"]),
    (dict(var=2, num_states=3, support=[3]), ["var=2", "support", "3"]),
    (dict(var=2, num_states=3, support=[0], probs=[.5, .5, 0]), ["var=2", "support"]),
])
def test_bad_categoricals(kwargs, fragments):
    with raises(*fragments):
        Categorical(**kwargs)


def test_bad_indicator():
    with raises("var=1", "value", "3"):
        Categorical.indicator(var=1, value=3, num_states=3)


def test_bad_sums_and_products():
    a, b = Categorical(0, 2), Categorical(0, 2)
    with raises("Sum", "empty"):
        Sum([])
    with raises("Product", "empty"):
        Product([])
    with raises("Sum", "child 1"):
        Sum([a, "b"])
    with raises("Sum", "[0]", "3 weights", "2 children"):
        Sum([a, b], weights=[.2, .3, .5])
    with raises("Sum", "[0]", "weights", "NaN"):
        Sum([a, b], weights=[math.nan, 1.0])
    with raises("Sum", "[0]", "weights", "-0.5"):
        Sum([a, b], weights=[1.5, -.5])
    with raises("Sum", "[0]", "weights", "sum"):
        Sum([a, b], weights=[.6, .6])
    with raises("Sum", "[0]", "logits"):
        Sum([a, b], logits=[0.0, math.inf])
    with raises("Sum", "[0]", "logits"):
        Sum([a, b], logits=[math.nan, 0.0])


def test_nodes_are_immutable_and_compare_by_identity():
    a = Categorical(0, 2, probs=[.5, .5])
    with pytest.raises(AttributeError):
        a.var = 1
    assert a != Categorical(0, 2, probs=[.5, .5])
    assert len({a, a}) == 1


def test_non_smooth_sum_names_the_node_and_variables():
    bad = Sum([Product([Categorical(0, 2), Categorical(1, 2)]), Categorical(0, 2)])
    with raises("root.children[0]", "smooth", "[1]"):
        Circuit(Product([bad, Categorical(2, 2)]))


def test_non_decomposable_product_names_the_node_and_variables():
    good = Sum([Product([Categorical(0, 3), Categorical(1, 2)])])
    bad = Product([Categorical(0, 3), Product([Categorical(1, 2), Categorical(0, 3)])])
    with raises("root.children[1]", "decomposable", "[0]"):
        Circuit(Sum([good, bad]))


def test_inconsistent_num_states_names_the_variable_and_both_nodes():
    root = Product([Categorical(0, 2), Sum([Categorical(1, 3), Categorical(1, 4)])])
    with pytest.raises(CircuitError, match=r"(?s)variable 1.*num_states=3.*num_states=4") as info:
        Circuit(root)
    assert "root.children[1].children" in str(info.value)


def test_variables_must_be_numbered_from_zero():
    with raises("missing", "[1]"):
        Circuit(Product([Categorical(0, 2), Categorical(2, 2)]))
    with raises("missing", "[0]"):
        Circuit(Categorical(1, 2))


def test_root_must_be_a_node():
    with raises("root"):
        Circuit("not a node")


def test_cycles_are_rejected():
    leaf = Categorical(0, 2)
    loop = Sum([leaf])
    # Nodes are immutable, so a cycle can only be made by going around __setattr__.
    object.__setattr__(loop, "_children", (leaf, Product([loop])))
    with raises("cycle"):
        Circuit(loop)


def test_shared_nodes_hold_one_set_of_parameters():
    a = Categorical(0, 3, probs=[.2, .3, .5])
    root = Sum([Product([a, Categorical(1, 2, probs=[.9, .1])]),
                Product([a, Categorical(1, 2, probs=[.4, .6])])], weights=[.5, .5])
    assert Circuit(root).num_params == 3 + 2 + 2 + 2


def test_num_params_counts_support_states_and_sum_children():
    a0 = Categorical(var=0, num_states=3, probs=[.2, .3, .5])
    a1 = Categorical(var=1, num_states=3, support=[0, 2])
    ind = Categorical.indicator(var=1, value=1, num_states=3)
    root = Sum([Product([a0, a1]), Product([Categorical(0, 3), ind])], weights=[.4, .6])
    assert Circuit(root).num_params == 3 + 2 + 3 + 0 + 2
    assert Circuit(Sum([Product([Categorical.indicator(0, 1, 2)])])).num_params == 0


def test_structural_determinism():
    split = Sum([Product([Categorical(0, 2, support=[0]), Categorical(1, 2)]),
                 Product([Categorical(0, 2, support=[1]), Categorical(1, 2)])])
    assert Circuit(split).is_deterministic
    overlapping = Sum([Product([Categorical(0, 2), Categorical(1, 2)]),
                       Product([Categorical(0, 2, support=[1]), Categorical(1, 2)])])
    assert not Circuit(overlapping).is_deterministic


def test_structural_determinism_sees_through_aligned_decompositions():
    def pair(a, b):
        return Product([Categorical.indicator(0, a, 2), Categorical.indicator(1, b, 2)])

    xor = Sum([Sum([pair(0, 0), pair(1, 1)]), Sum([pair(0, 1), pair(1, 0)])])
    assert oracle.semantically_deterministic(xor)
    assert Circuit(xor).is_deterministic


def test_structural_determinism_is_only_sufficient():
    """Children decomposed differently ({0,1}|{2} vs {0}|{1,2}) with disjoint supports
    {x0 = x1, x2 = 0} and {x0 = 0, x1 != x2}, though every variable's projections overlap."""
    def ind(var, value):
        return Categorical.indicator(var, value, 2)

    equal01 = Sum([Product([ind(0, 0), ind(1, 0)]), Product([ind(0, 1), ind(1, 1)])])
    differ12 = Sum([Product([ind(1, 1), ind(2, 0)]), Product([ind(1, 0), ind(2, 1)])])
    root = Sum([Product([equal01, ind(2, 0)]), Product([ind(0, 0), differ12])])
    assert oracle.semantically_deterministic(root)
    assert not Circuit(root).is_deterministic


def test_compilation_and_training_never_write_back_into_nodes():
    a = Categorical(0, 3, probs=[.2, .3, .5])
    root = Sum([Product([a, Categorical(1, 2)]), Product([Categorical(0, 3), Categorical(1, 2)])],
               weights=[.3, .7])
    before = (a.logits, root.log_weights)
    c = Circuit(root)
    with torch.no_grad():
        c.logits.add_(1.0)
    c.log_prob(torch.tensor([[0, 1]]))
    assert (a.logits, root.log_weights) == before


@PROPERTY
@given(random_circuits())
def test_random_circuits_validate_and_report_their_shape(rc):
    c = Circuit(rc.root)
    assert c.num_vars == len(rc.num_states) and c.num_states == rc.num_states
    assert c.is_smooth and c.is_decomposable
    nodes = oracle.topological(rc.root)
    expected = sum(len(n.support) for n in nodes if isinstance(n, Categorical) and len(n.support) > 1)
    expected += sum(len(n.children) for n in nodes if isinstance(n, Sum) and len(n.children) > 1)
    assert c.num_params == expected


def test_whole_circuits_and_policies_round_trip_through_torch_save(tmp_path):
    """``torch.save`` of a whole module (not its state_dict) pickles the nodes; loading it
    back gives the same distribution, trainable, with shared nodes still shared."""
    from circuits.structures import random_tensorized, selective
    from spnpolicy.algos.policies import JointPolicy
    torch.manual_seed(0)
    shared = Categorical(1, 3)
    root = Sum([Product([Categorical(0, 2), shared]), Product([Categorical(0, 2), shared])])
    for circuit in (Circuit(root), selective(4, 3, 4),
                    random_tensorized(num_vars=5, num_states=3, depth=2, num_repetitions=2,
                                      num_sums=3, num_input_distributions=3, seed=0)):
        x = circuit.sample(6, generator=torch.Generator().manual_seed(0))
        circuit.distribution().marginals()          # caches built before saving
        torch.save(circuit, tmp_path / "circuit.pt")
        loaded = torch.load(tmp_path / "circuit.pt", weights_only=False)
        torch.testing.assert_close(loaded.log_prob(x), circuit.log_prob(x))
        loaded.distribution().marginals().sum().backward()
        assert loaded.logits.grad is not None
    torch.save(root, tmp_path / "root.pt")
    loaded_root = torch.load(tmp_path / "root.pt", weights_only=False)
    first, second = (p.children[1] for p in loaded_root.children)
    assert first is second                            # still one node, one parameter set
    with pytest.raises(AttributeError, match="immutable"):
        first.var = 2
    policy = JointPolicy(6, 3, 4, "selective", 4, (8,))
    states = torch.randn(5, 6)
    torch.save(policy, tmp_path / "policy.pt")
    again = torch.load(tmp_path / "policy.pt", weights_only=False)
    torch.testing.assert_close(again.distribution(states).marginals(),
                               policy.distribution(states).marginals())
    assert torch.equal(again.act(states), policy.act(states))


def test_deep_copy_shares_the_immutable_nodes_and_copies_the_parameters():
    import copy
    root = Sum([Product([Categorical(0, 2), Categorical(1, 2)]),
                Product([Categorical(0, 2, probs=[.9, .1]), Categorical(1, 2)])], weights=[.3, .7])
    c = Circuit(root)
    twin = copy.deepcopy(c)
    assert copy.deepcopy(root) is root and copy.copy(root) is root
    x = torch.tensor([[0, 1], [1, -1]])
    assert torch.equal(twin.log_prob(x), c.log_prob(x))
    with torch.no_grad():  # a shift of all logits would leave the distribution unchanged
        for p in twin.parameters():
            p.add_(torch.arange(p.numel(), dtype=p.dtype).reshape(p.shape))
    assert not torch.equal(twin.log_prob(x), c.log_prob(x))
