"""Sibling pairs (``sibling_pairs=True``): which agents the circuit holds as siblings, the
greedy matching that fills the sibling places per state, the reordered distribution's
queries against enumeration, the pair scores that can part two agents that see alike, and
spn-ac training, saving and reloading with them."""

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import spnpolicy
from circuits.structures import mean_field, selective
from spnpolicy.algos.policies import JointPolicy, _fixed_actions
from spnpolicy.algos.sibling_pairs import Reordered, pair_order, sibling_slots
from spnpolicy.algos.spn_ac import SpnAcConfig
from spnpolicy.inference import load_agent
from tests.circuits.helpers import PROPERTY
from tests.factor_q.test_nearest_graph import brute_force_q, nearest_values
from tests.run_helpers import load_script


def _slots(circuit):
    plan = circuit._plan_on(torch.device("cpu"))
    return sibling_slots([_fixed_actions(plan, p) for p in range(plan.num_params)],
                         circuit.num_vars)


def test_the_selective_circuit_holds_its_two_agent_regions_as_siblings():
    pairs, singles = _slots(selective(4, 3, width=4))
    assert pairs.tolist() == [[0, 1], [2, 3]] and singles.tolist() == []
    pairs, singles = _slots(selective(6, 3, width=4))       # regions [0 | 1 2] and [3 | 4 5]
    assert pairs.tolist() == [[1, 2], [4, 5]] and singles.tolist() == [0, 3]
    with pytest.raises(ValueError, match="width below k\\*\\*2"):
        _slots(mean_field(4, 3))
    with pytest.raises(ValueError, match="width below k\\*\\*2"):
        _slots(selective(4, 2, width=4))                    # k**2 = 4 products, no sums


def _greedy_reference(x: np.ndarray, pairs, singles) -> list[int]:
    """One state's order by a plain loop: the closest free pair first, ties to the lower
    indices."""
    n = len(x)
    candidates = sorted((float(((x[i] - x[j]) ** 2).sum()), i, j)
                        for i in range(n) for j in range(i + 1, n))
    order, used = [None] * n, set()
    q = 0
    for _, i, j in candidates:
        if q == len(pairs):
            break
        if i in used or j in used:
            continue
        order[pairs[q][0]], order[pairs[q][1]] = i, j
        used |= {i, j}
        q += 1
    for slot, agent in zip(singles, sorted(set(range(n)) - used)):
        order[slot] = agent
    return order


@pytest.mark.parametrize("n", [4, 6, 7, 16])
def test_pair_order_is_the_greedy_matching(n):
    # integer inputs make equal distances exact, so the ties are tested too
    rng = np.random.default_rng(n)
    pairs, singles = _slots(selective(n, 3, width=4))
    x = rng.integers(0, 3, size=(20, n, 2)).astype(np.float32)
    x[:, 1] = x[:, n - 1]                                   # twins at every state
    order = pair_order(torch.from_numpy(x), pairs, singles)
    for b in range(20):
        assert sorted(order[b].tolist()) == list(range(n))
        assert order[b].tolist() == _greedy_reference(x[b], pairs.tolist(), singles.tolist())
    assert torch.equal(order, _pair_order_reference(torch.from_numpy(x), pairs, singles))


def test_twins_become_siblings():
    pairs, singles = _slots(selective(8, 3, width=4))
    x = torch.randn(5, 8, 3) * 10
    x[:, 2] = x[:, 6]
    order = pair_order(x, pairs, singles)
    assert (order[:, pairs[0]].sort(-1).values == torch.tensor([2, 6])).all()


def _pair_order_reference(inputs, pairs, singles):
    """``pair_order`` one pick at a time: the argmin over every state's flat upper triangle
    of distances ``[B, n n]`` (ties to the lowest ``i n + j``), then the picked agents'
    rows and columns set to inf."""
    batch, n = inputs.shape[:2]
    x = inputs.flatten(2).to(torch.float64)
    distance = torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist")   # [B, n, n]
    upper = torch.ones(n, n, dtype=torch.bool).triu(1)
    distance = distance.masked_fill(~upper, math.inf).flatten(1)
    order = torch.empty(batch, n, dtype=torch.long)
    rows, agents = torch.arange(batch), torch.arange(n)
    for q in range(pairs.shape[0]):
        flat = distance.argmin(1)
        first, second = flat // n, flat % n
        order[:, pairs[q, 0]], order[:, pairs[q, 1]] = first, second
        taken = torch.stack([first, second], 1)[..., None]                  # [B, 2, 1]
        distance[rows[:, None, None], taken * n + agents] = math.inf
        distance[rows[:, None, None], agents * n + taken] = math.inf
    if singles.numel():
        used = torch.zeros(batch, n, dtype=torch.bool).scatter_(1, order[:, pairs.flatten()],
                                                                True)
        left = torch.sort(used.to(torch.int8), dim=1, stable=True).indices[:, :singles.numel()]
        order[:, singles] = left
    return order


def _random_slots(n: int, num_pairs: int, generator: torch.Generator):
    """``num_pairs`` slot pairs ``[Q, 2]`` and the other slots as singles ``[n - 2 Q]``, in a
    random order."""
    slots = torch.randperm(n, generator=generator)
    return slots[:2 * num_pairs].view(num_pairs, 2), slots[2 * num_pairs:]


def _random_inputs(kind: str, batch: int, n: int, dim: int, generator: torch.Generator):
    """``[B, n, D]`` inputs: ``ties``, values in {0, 1, 2} (many equal distances);
    ``twins``, copies of three rows (many agents at distance 0); ``continuous``, normal."""
    if kind == "ties":
        return torch.randint(0, 3, (batch, n, dim), generator=generator).float()
    if kind == "twins":
        rows = torch.randint(0, 3, (batch, 3, dim), generator=generator).float()
        return rows[:, torch.randint(0, 3, (n,), generator=generator)]
    return torch.randn(batch, n, dim, generator=generator)


@settings(max_examples=300, deadline=None)
@given(n=st.integers(2, 40), data=st.data(), batch=st.integers(1, 6), dim=st.integers(1, 4),
       kind=st.sampled_from(["ties", "twins", "continuous"]), seed=st.integers(0, 2**16))
def test_pair_order_equals_the_greedy_one_pick_at_a_time(n, data, batch, dim, kind, seed):
    # fewer slot pairs than n // 2 too: greedy then stops after the Q nearest pairs
    num_pairs = data.draw(st.integers(0, n // 2), label="num_pairs")
    generator = torch.Generator().manual_seed(seed)
    pairs, singles = _random_slots(n, num_pairs, generator)
    x = _random_inputs(kind, batch, n, dim, generator)
    assert torch.equal(pair_order(x, pairs, singles), _pair_order_reference(x, pairs, singles))


@pytest.mark.parametrize("value", [math.nan, math.inf, 1e300])
def test_pair_order_names_inputs_whose_distances_are_not_finite(value):
    pairs, singles = _slots(selective(4, 3, width=4))
    x = torch.zeros(2, 4, 3, dtype=torch.float64)
    x[1, 2, 0] = value
    with pytest.raises(ValueError, match=r"inputs \[2, 4, 3\] must be finite"):
        pair_order(x, pairs, singles)


def test_pair_order_on_many_agents_in_few_places():
    # 64 agents on few cells: long runs of equal distances, as in coverage at many agents
    generator = torch.Generator().manual_seed(1)
    for num_pairs in (32, 20, 1):
        pairs, singles = _random_slots(64, num_pairs, generator)
        x = _random_inputs("twins", 16, 64, 5, generator) / 3
        x[:, ::3, 0] += torch.arange(22) / 7
        assert torch.equal(pair_order(x, pairs, singles),
                           _pair_order_reference(x, pairs, singles))


def test_pair_order_checks_its_slots():
    pairs, singles = _slots(selective(4, 3, width=4))
    with pytest.raises(ValueError, match="cover the 5 agents"):
        pair_order(torch.zeros(2, 5, 3), pairs, singles)


def _agents_table(base, order: torch.Tensor, n: int, k: int) -> torch.Tensor:
    """Enumerated ``p(u)`` over the agents ``[B, k**n]`` (u in lexicographic order): the
    slots' probability of the state's slot assignment, by plain indexing."""
    joint = list(itertools.product(range(k), repeat=n))
    rows = []
    for b in range(order.shape[0]):
        slot_values = torch.tensor([[u[order[b, s]] for s in range(n)] for u in joint])
        logp = base.log_prob(slot_values[:, None].expand(-1, order.shape[0], -1))[:, b]
        rows.append(logp.exp())
    return torch.stack(rows)


@PROPERTY
@given(n=st.integers(3, 5), k=st.integers(2, 3), seed=st.integers(0, 10_000))
def test_reordered_queries_are_exact(n, k, seed):
    torch.manual_seed(seed)
    circuit = selective(n, k, width=k * k - 1).double()
    batch = 3
    base = circuit.distribution(torch.randn(batch, circuit.num_params, dtype=torch.float64) * 2)
    order = torch.stack([torch.randperm(n) for _ in range(batch)])
    dist = Reordered(base, order)
    table = _agents_table(base, order, n, k)                                # [B, k**n]
    joint = torch.tensor(list(itertools.product(range(k), repeat=n)))      # [k**n, n]
    assert torch.allclose(table.sum(-1), torch.ones(batch, dtype=torch.float64))
    # log_prob, complete and with agents marginalised out
    lp = dist.log_prob(joint[:, None].expand(-1, batch, -1)).exp().T
    torch.testing.assert_close(lp, table)
    partial = joint[:, None].expand(-1, batch, -1).clone()
    partial[..., 0] = -1
    summed = table.view(batch, k, -1).sum(1)                                 # agent 0 out
    torch.testing.assert_close(dist.log_prob(partial[:k ** (n - 1)]).exp().T, summed)
    # marginals, pair and triple tables in the scopes' own order
    t = table.view(batch, *(k,) * n)

    def kept(scope):                          # the table summed over the other agents
        others = tuple(1 + a for a in range(n) if a not in scope)
        return t.sum(others) if others else t

    for i in range(n):
        torch.testing.assert_close(dist.marginals()[:, i], kept((i,)))
    scopes = list(itertools.permutations(range(n), 2))
    pairs = dist.scope_marginals(scopes)
    for f, (i, j) in enumerate(scopes):
        want = kept((i, j))
        torch.testing.assert_close(pairs[:, f], want if i < j else want.transpose(1, 2))
    # each state's own pairs (random, either order), as the nearest-pair critics ask them
    own = torch.stack([torch.stack([torch.randperm(n)[:2] for _ in range(4)])
                       for _ in range(batch)])                              # [B, 4, 2]
    got = dist.state_pair_marginals(own)
    for b in range(batch):
        for f, (i, j) in enumerate(own[b].tolist()):
            want = kept((i, j))[b]
            torch.testing.assert_close(got[b, f], want if i < j else want.T)
    triple = (2, 0, 1)
    want = kept(triple).permute(0, 3, 1, 2)
    torch.testing.assert_close(dist.scope_marginals([triple])[:, 0], want)
    # entropy and mode
    entropy = -(table * table.clamp_min(1e-300).log()).sum(-1)
    torch.testing.assert_close(dist.entropy(), entropy)
    assert torch.equal(dist.mode, joint[table.argmax(-1)])
    # conditioning on agent 1's action
    evidence = torch.full((batch, n), -1)
    evidence[:, 1] = 1
    keep = joint[:, 1] == 1
    posterior = table[:, keep] / table[:, keep].sum(-1, keepdim=True)
    got = dist.condition(evidence).log_prob(joint[keep][:, None].expand(-1, batch, -1)).exp().T
    torch.testing.assert_close(got, posterior)
    # leave one out: log p(u_i | u_-i) at every joint action
    loo = dist.leave_one_out_log_prob(joint[:, None].expand(-1, batch, -1))  # [k**n, B, n]
    for i in range(n):
        moved = t.movedim(1 + i, -1)                                         # [B, .., k]
        conditional = moved / moved.sum(-1, keepdim=True)
        index = joint[:, [a for a in range(n) if a != i] + [i]]
        want = conditional[(slice(None),) + tuple(index.T)].log().T
        torch.testing.assert_close(loo[..., i], want)


def test_reordered_samples_follow_the_table():
    torch.manual_seed(3)
    n, k = 4, 3
    circuit = selective(n, k, width=5)
    base = circuit.distribution(torch.randn(2, circuit.num_params) * 2)
    order = torch.tensor([[2, 0, 3, 1], [1, 3, 0, 2]])
    dist = Reordered(base, order)
    table = _agents_table(base, order, n, k)
    draws = 20_000
    samples = dist.sample((draws,), generator=torch.Generator().manual_seed(0))  # [M, 2, n]
    digits = k ** torch.arange(n - 1, -1, -1)
    for b in range(2):
        counts = torch.bincount((samples[:, b] * digits).sum(-1), minlength=k ** n).double()
        expected = table[b].double() * draws
        chi2 = ((counts - expected) ** 2 / expected.clamp_min(1e-9)).sum().item()
        # chi-square with k**n - 1 = 80 degrees of freedom: p = 0.001 at about 124.8
        assert chi2 < 124.8, chi2


def _parting_policy(n=4, k=3, penalty=5.0):
    """A sibling-pairs policy whose only scores are its pairs' ``-penalty`` on equal
    actions (corrections and the agents' own scores at zero)."""
    policy = JointPolicy(1, n, k, "selective", width=4, param_head="agents", obs_dim=3,
                         sibling_pairs=True)
    head = policy.encoder
    with torch.no_grad():
        for module in (head.scores, *head.heads.values()):
            for p in module.parameters():
                p.zero_()
        last = head.pair_scores[-1]
        last.weight.zero_()
        last.bias.copy_(-penalty * torch.eye(k).flatten())
    return policy


def test_pair_scores_part_agents_that_see_alike():
    # agents 1 and 3 see the same thing; a mean-field policy would give them equal
    # marginals and, greedily, equal actions
    n, k = 4, 3
    policy = _parting_policy(n, k)
    x = torch.tensor([[[0., 0., 0.], [5., 5., 5.], [-7., 1., 3.], [5., 5., 5.]]])
    dist = policy.distribution(x)
    same = dist.scope_marginals([(1, 3)])[0, 0].diagonal().sum()
    product = (dist.marginals()[0, 1] * dist.marginals()[0, 3]).sum()
    joint = torch.tensor(list(itertools.product(range(k), repeat=n)))
    table = dist.log_prob(joint[:, None]).exp()[:, 0]
    torch.testing.assert_close(table.sum(), torch.tensor(1.0))
    enumerated = table[joint[:, 1] == joint[:, 3]].sum()
    torch.testing.assert_close(same, enumerated)
    assert same < 0.05 and abs(product - 1 / k) < 1e-4     # uniform marginals, parted pair
    mode = dist.mode[0]
    assert mode[1] != mode[3]


def test_without_pair_scores_the_order_changes_nothing():
    # pair scores at zero and no corrections: the product of the agents' own softmax,
    # whichever agents share a place
    torch.manual_seed(5)
    n, k = 6, 3
    policy = _parting_policy(n, k, penalty=0.0)
    head = policy.encoder
    with torch.no_grad():
        for p in head.scores.parameters():
            p.normal_(0, 3.0)
    x = torch.randn(4, n, 3)
    dist = policy.distribution(x)
    own = torch.softmax(head.action_scores(torch.relu(head.encoder(x))), -1)
    torch.testing.assert_close(dist.marginals(), own)
    joint = torch.tensor(list(itertools.product(range(k), repeat=n)))
    product = own[:, torch.arange(n), joint].prod(-1).T                      # [k**n, 4]
    torch.testing.assert_close(dist.log_prob(joint[:, None].expand(-1, 4, -1)).exp(), product)


def test_gradients_reach_the_pair_scores():
    torch.manual_seed(2)
    policy = JointPolicy(1, 4, 3, "selective", width=4, param_head="agents", obs_dim=6,
                         sibling_pairs=True)
    policy.distribution(torch.randn(8, 4, 6)).entropy().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0
               for p in policy.encoder.pair_scores.parameters())


def test_sibling_pairs_need_the_agents_head_and_two_agent_regions():
    with pytest.raises(ValueError, match="sibling_pairs needs param_head='agents'"):
        JointPolicy(6, 3, 3, "selective", sibling_pairs=True)
    with pytest.raises(ValueError, match="width below k"):
        JointPolicy(1, 4, 3, "mean_field", param_head="agents", obs_dim=2, sibling_pairs=True)
    with pytest.raises(ValueError, match="sibling_pairs=True needs param_head='agents'"):
        SpnAcConfig(sibling_pairs=True)
    with pytest.raises(ValueError, match="order"):
        _parting_policy().encoder(torch.zeros(1, 4, 3))          # the head needs the order


def test_spn_ac_trains_saves_and_reloads_with_sibling_pairs(tmp_path):
    result = spnpolicy.train("spn-ac", "coverage", seed=0, total_steps=160, out_dir=tmp_path,
                             env_kwargs=dict(num_agents=4, grid_size=4, max_steps=8,
                                             observation="nearest"),
                             learning_starts=64, batch_size=16, eval_interval=160,
                             eval_episodes=2, param_head="agents", critic_input="agents",
                             factor_graph="nearest", neighbours=1, sibling_pairs=True,
                             progress=False, verbose=False)
    agent = load_agent(tmp_path)
    assert agent.sibling_pairs and result.agent.sibling_pairs
    x = np.random.default_rng(0).random((5, *agent.input_shape)).astype(np.float32)
    x[:, 3] = x[:, 0]
    assert np.array_equal(agent.act(x), result.agent.act(x))
    dist = agent.distribution(x)
    assert isinstance(dist, Reordered)
    torch.testing.assert_close(dist.entropy(), result.agent.distribution(x).entropy())
    assert math.isclose(float(dist.marginals().detach().sum(-1).mean()), 1.0, rel_tol=1e-5)


def test_the_example_parts_the_agents_that_see_alike():
    demo = load_script("examples/sibling_pairs.py")
    result = demo.run(seed=0)
    product = result["policies"]["product of the agents' policies"]
    siblings = result["policies"]["selective circuit, sibling pairs"]
    boltzmann = 3 * math.exp(-3) / (6 + 3 * math.exp(-3))         # P(one action) at log Z
    assert siblings["gap"] < 0.01 and product["gap"] > 0.5
    assert siblings["p_same"] == pytest.approx(boltzmann, abs=0.01)
    assert product["p_same"] == pytest.approx(1 / 3, abs=0.01)   # the product's best
    assert siblings["mode"][1] != siblings["mode"][3]
    assert "sibling pairs: log Z - ELBO = 0.00" in demo.report(result)


def test_a_sibling_pairs_table_is_its_joint_scores_in_the_agents_order():
    # agents' own scores and corrections at zero: each sibling pair's table is
    # softmax(g_ab) over its k x k joint actions, axis 0 the agent in the pair's first slot
    torch.manual_seed(7)
    n, k = 4, 3
    policy = _parting_policy(n, k, penalty=0.0)
    head = policy.encoder
    with torch.no_grad():
        head.pair_scores[-1].weight.normal_(0, 2.0)
    x = torch.randn(3, n, 3)
    dist = policy.distribution(x)
    h = torch.relu(head.encoder(x.gather(1, dist.order[..., None].expand_as(x))))
    g = head.joint_scores(h)                                                # [B, Q, k, k]
    for b in range(3):
        for q, (first, second) in enumerate(head.siblings.tolist()):
            a, c = dist.order[b, first].item(), dist.order[b, second].item()
            want = torch.softmax(g[b, q].flatten(), 0).view(k, k)
            torch.testing.assert_close(dist.scope_marginals([(a, c)])[b, 0], want)
            assert (g[b, q] - g[b, q].T).abs().max() > 1e-3            # not symmetric itself
    swapped = h[:, [1, 0, 3, 2]]                                            # siblings swapped
    torch.testing.assert_close(head.joint_scores(swapped), g.transpose(-1, -2))


@settings(max_examples=25, deadline=None)
@given(values=nearest_values(ensemble=True), seed=st.integers(0, 2**16))
def test_nearest_pair_critics_expectation_under_reordered_is_exact(values, seed):
    n, k = values.graph.num_agents, values.num_actions
    generator = torch.Generator().manual_seed(seed)
    circuit = selective(n, k, width=k * k - 1).double()
    batch = values.batch_size
    base = circuit.distribution(2 * torch.randn(batch, circuit.num_params, dtype=torch.float64,
                                                generator=generator))
    order = torch.stack([torch.randperm(n, generator=generator) for _ in range(batch)])
    dist = Reordered(base, order)
    probs = _agents_table(base, order, n, k)                                 # [B, k**n]
    q = brute_force_q(values)
    torch.testing.assert_close(values.expectation(dist), (probs * q).sum(-1))
