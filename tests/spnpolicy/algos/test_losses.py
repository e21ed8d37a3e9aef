"""spn-ac's losses against brute-force enumeration, and the reinforce estimator's mean."""

import itertools
import math

import pytest
import torch

from circuits.structures import mean_field, selective
from factor_q import FactorGraph, FactorValues
from spnpolicy.algos.critics import build_factor_graph
from spnpolicy.algos.policies import JointCategorical
from spnpolicy.algos.spn_ac import Temperature, actor_loss, critic_loss, soft_value

N, K, B = 3, 3, 4


def _values(seed, graph, batch=B, agents=N):
    gen = torch.Generator().manual_seed(seed)
    tables = [torch.randn(batch, K, K, generator=gen, dtype=torch.float64)
              for _ in graph.factors]
    unary = torch.randn(batch, agents, K, generator=gen, dtype=torch.float64)
    return FactorValues.from_tables(graph, tables, unary=unary)


def _brute(values, dist):
    """E_pi[Q] [B] and H [B] by enumerating the joint actions."""
    actions = torch.tensor(list(itertools.product(range(K), repeat=N)))
    expected = torch.zeros(B, dtype=torch.float64)
    entropy = torch.zeros(B, dtype=torch.float64)
    for u in actions:
        u_b = u.expand(B, N)
        p = dist.log_prob(u_b).exp()
        expected = expected + p * values.evaluate(u_b)
        entropy = entropy - p * torch.log(p.clamp_min(1e-300))
    return expected, entropy


@pytest.fixture(params=["selective", "mean_field"])
def dist_and_params(request):
    circuit = selective(N, K, width=27) if request.param == "selective" else mean_field(N, K)
    params = torch.randn(B, circuit.num_params, dtype=torch.float64,
                         generator=torch.Generator().manual_seed(1), requires_grad=True)
    return circuit, params


def test_soft_value_and_exact_actor_loss_equal_enumeration(dist_and_params):
    circuit, params = dist_and_params
    graph = FactorGraph.complete(N)
    q1, q2 = _values(0, graph), _values(1, graph)
    dist = circuit.distribution(params)
    e1, h = _brute(q1, dist)
    e2, _ = _brute(q2, dist)
    alpha = torch.tensor(0.3, dtype=torch.float64)
    twins = FactorValues.stack([q1, q2])
    torch.testing.assert_close(soft_value(twins, dist, alpha), torch.minimum(e1, e2) + 0.3 * h)
    # regulariser="kl_uniform": -alpha KL(pi || uniform), the KL by enumeration too
    kl = N * math.log(K) - h
    torch.testing.assert_close(soft_value(twins, dist, alpha, N * math.log(K)),
                               torch.minimum(e1, e2) - 0.3 * kl)
    loss, entropy = actor_loss(twins, dist, alpha)
    torch.testing.assert_close(loss, -(torch.minimum(e1, e2) + 0.3 * h).mean())
    torch.testing.assert_close(entropy, h)


def test_reinforce_gradient_is_unbiased():
    """Averaged over many draws, the score-function gradient equals the exact one."""
    circuit = selective(N, K, width=9)
    graph = build_factor_graph("complete", N)
    q = [_values(0, graph), _values(1, graph)]
    params = torch.randn(B, circuit.num_params, dtype=torch.float64,
                         generator=torch.Generator().manual_seed(2), requires_grad=True)
    alpha = torch.tensor(0.5, dtype=torch.float64)
    # the reinforce estimator takes the min per sample, so compare against that objective
    actions = torch.tensor(list(itertools.product(range(K), repeat=N)))
    dist = circuit.distribution(params)
    objective = torch.zeros(B, dtype=torch.float64)
    for u in actions:
        u_b = u.expand(B, N)
        logp = dist.log_prob(u_b)
        objective = objective + logp.exp() * (torch.minimum(q[0].evaluate(u_b), q[1].evaluate(u_b))
                                              - alpha * logp)
    (exact,) = torch.autograd.grad(-objective.mean(), params)
    torch.manual_seed(0)
    loss, _ = actor_loss(FactorValues.stack(q), circuit.distribution(params), alpha,
                         "reinforce", samples=20_000)
    (estimate,) = torch.autograd.grad(loss, params)
    assert torch.allclose(estimate, exact, atol=0.05 * exact.abs().max())


def test_critic_loss_and_temperature():
    graph = FactorGraph.complete(N)
    q1, q2 = _values(0, graph), _values(1, graph)
    actions = torch.zeros(B, N, dtype=torch.long)
    target = torch.ones(B, dtype=torch.float64)
    expected = ((q1.evaluate(actions) - 1) ** 2).mean() + ((q2.evaluate(actions) - 1) ** 2).mean()
    q = FactorValues.stack([q1, q2]).evaluate(actions)
    torch.testing.assert_close(critic_loss(q, target), expected)
    temperature = Temperature(0.2, tune=True)
    assert math.isclose(float(temperature.value), 0.2, rel_tol=1e-6)
    temperature.loss(torch.full((B,), 2.0), target=1.0).backward()
    assert temperature.log_alpha.grad > 0  # entropy above target: a step lowers alpha


@pytest.mark.parametrize("gradient", ["exact", "reinforce"])
def test_mode_guidance_adds_the_cross_entropy_of_the_critics_best_action(dist_and_params,
                                                                       gradient):
    """With ``mode``, the loss is the plain loss minus ``w mean log pi(mode)``, the
    probability by enumeration of the normalised joint table."""
    circuit, params = dist_and_params
    graph = FactorGraph.complete(N)
    q = FactorValues.stack([_values(0, graph), _values(1, graph)])
    alpha = torch.tensor(0.3, dtype=torch.float64)
    mode = torch.tensor([[0, 1, 2], [2, 2, 2], [1, 0, 0], [0, 0, 0]])
    torch.manual_seed(5)
    plain, _ = actor_loss(q, circuit.distribution(params), alpha, gradient)
    torch.manual_seed(5)
    guided, _ = actor_loss(q, circuit.distribution(params), alpha, gradient, mode=mode,
                           mode_weight=0.25)
    dist = circuit.distribution(params)
    table = torch.stack([dist.log_prob(u.expand(B, N)).exp()
                         for u in torch.tensor(list(itertools.product(range(K), repeat=N)))])
    torch.testing.assert_close(table.sum(0), torch.ones(B, dtype=torch.float64))
    index = (mode * torch.tensor([K * K, K, 1])).sum(1)
    picked = table[index, torch.arange(B)]
    torch.testing.assert_close(guided, plain - 0.25 * picked.log().mean())


def test_mode_guidance_gradient_does_not_vanish_with_the_actions_probability():
    """A joint action with probability ~1e-6 and the best value: the ELBO's gradient on its
    logit is ~its probability, the guidance term's ~1 (a softmax policy over 3^3 actions)."""
    graph = FactorGraph.complete(N)
    q = _values(0, graph)
    actions = torch.tensor(list(itertools.product(range(K), repeat=N)))
    values = torch.stack([q.evaluate(u.expand(B, N)) for u in actions])       # [K^N, B]
    best = values.argmax(0)
    logits = torch.zeros(B, K ** N, dtype=torch.float64)
    logits[torch.arange(B), best] = -14.0
    logits.requires_grad_(True)
    alpha = torch.tensor(0.01, dtype=torch.float64)
    plain, _ = actor_loss(FactorValues.stack([q, q]), JointCategorical(logits, N, K), alpha)
    (g_plain,) = torch.autograd.grad(plain, logits)
    mode = actions[best]
    guided, _ = actor_loss(FactorValues.stack([q, q]), JointCategorical(logits, N, K), alpha,
                           mode=mode, mode_weight=0.1)
    (g_guided,) = torch.autograd.grad(guided, logits)
    rows = torch.arange(B)
    assert (g_plain[rows, best].abs() < 1e-4).all()
    torch.testing.assert_close(g_guided[rows, best] - g_plain[rows, best],
                               torch.full((B,), -0.1 / B, dtype=torch.float64),
                               rtol=1e-4, atol=1e-9)


def test_mode_floor_leaves_states_whose_best_action_is_already_likely():
    """With the floor f (``mode_log_floor = log f``), a state contributes ``-w log pi(mode)``
    (and its gradient) only while ``pi(mode) < f``; states above it add the constant
    ``-w log f``."""
    graph = FactorGraph.complete(N)
    q = FactorValues.stack([_values(0, graph), _values(1, graph)])
    actions = torch.tensor(list(itertools.product(range(K), repeat=N)))
    logits = torch.zeros(B, K ** N, dtype=torch.float64)
    logits[:2, 0] = 6.0                   # rows 0, 1: pi(action 0) ~ 0.94, above the floor
    logits.requires_grad_(True)
    alpha = torch.tensor(0.3, dtype=torch.float64)
    mode = actions[torch.zeros(B, dtype=torch.long)]
    dist = JointCategorical(logits, N, K)
    plain, _ = actor_loss(q, dist, alpha)
    floored, _ = actor_loss(q, dist, alpha, mode=mode, mode_weight=0.2,
                            mode_log_floor=math.log(0.5))
    log_pi = dist.log_prob(mode)
    assert (log_pi[:2].exp() > 0.5).all() and (log_pi[2:].exp() < 0.5).all()
    expected = plain - 0.2 * torch.cat([torch.full((2,), math.log(0.5), dtype=torch.float64),
                                        log_pi[2:]]).mean()
    torch.testing.assert_close(floored, expected)
    (g_plain,) = torch.autograd.grad(plain, logits, retain_graph=True)
    (g_floor,) = torch.autograd.grad(floored, logits)
    torch.testing.assert_close(g_floor[:2], g_plain[:2])     # no guidance above the floor
    assert not torch.allclose(g_floor[2:], g_plain[2:])
    unfloored, _ = actor_loss(q, dist, alpha, mode=mode, mode_weight=0.2)
    torch.testing.assert_close(unfloored, plain - 0.2 * log_pi.mean())


def test_mode_log_floor_is_the_log_of_the_scaled_uniform_probability_capped_at_one():
    from spnpolicy.algos.spn_ac import mode_log_floor
    assert mode_log_floor(1.0, 3, 4) == pytest.approx(math.log(4 ** -3))
    assert mode_log_floor(0.5, 2, 5) == pytest.approx(math.log(0.5 / 25))
    assert mode_log_floor(100.0, 2, 5) == 0.0                 # above 1: capped
    assert mode_log_floor(math.inf, 2, 5) == 0.0
    assert mode_log_floor(1.0, 500, 6) == pytest.approx(-500 * math.log(6))  # 6**-500 == 0.0


def test_mode_mask_removes_the_masked_states_guidance():
    """``mode_mask`` 0 on a state: that state adds nothing to the guidance, its gradient is
    the plain loss's; the others' terms are as without the mask (the mean stays over B)."""
    graph = FactorGraph.complete(N)
    q = FactorValues.stack([_values(0, graph), _values(1, graph)])
    actions = torch.tensor(list(itertools.product(range(K), repeat=N)))
    logits = torch.randn(B, K ** N, dtype=torch.float64,
                         generator=torch.Generator().manual_seed(3))
    logits.requires_grad_(True)
    alpha = torch.tensor(0.3, dtype=torch.float64)
    mode = actions[torch.arange(B) % K ** N]
    mask = torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=torch.float64)[:B]
    dist = JointCategorical(logits, N, K)
    plain, _ = actor_loss(q, dist, alpha)
    masked, _ = actor_loss(q, dist, alpha, mode=mode, mode_weight=0.2, mode_mask=mask)
    log_pi = dist.log_prob(mode)
    torch.testing.assert_close(masked, plain - 0.2 * (mask * log_pi).sum() / B)
    (g_plain,) = torch.autograd.grad(plain, logits, retain_graph=True)
    (g_masked,) = torch.autograd.grad(masked, logits)
    off = mask == 0
    torch.testing.assert_close(g_masked[off], g_plain[off])
    assert not torch.allclose(g_masked[~off], g_plain[~off])


def test_guidance_acts_only_where_the_critics_argmaxes_agree(monkeypatch):
    """SpnAc passes the first critic's argmax and a mask that is 1 exactly on the states
    where both critics' exact argmaxes (by enumeration) are the same joint action."""
    from spnpolicy.algos import spn_ac
    from spnpolicy.training import make_vec_env
    envs = make_vec_env("coverage", 1, seed=0, num_agents=2, grid_size=3)
    algo = spn_ac.SpnAc(spn_ac.SpnAcConfig(), envs)
    seen = {}

    def spy(*args, **kwargs):
        seen["mode"], seen["floor"], seen["mask"] = (kwargs["mode"], kwargs["mode_log_floor"],
                                                     kwargs["mode_mask"])
        return actor_loss(*args, **kwargs)
    monkeypatch.setattr(spn_ac, "actor_loss", spy)
    state = torch.randn(64, envs.state_dim)
    algo._actor_loss(state, None, torch.tensor(0.1))
    values = algo.critic.values(state)
    k, n = envs.num_actions, envs.num_agents
    joint = torch.tensor(list(itertools.product(range(k), repeat=n)))
    best = [joint[torch.stack([q.evaluate(u.expand(64, n)) for u in joint]).argmax(0)]
            for q in values]
    agree = (best[0] == best[1]).all(-1)
    assert 0 < agree.sum() < 64           # random critics: some states agree, some do not
    torch.testing.assert_close(seen["mask"], agree.to(seen["mask"].dtype))
    assert torch.equal(seen["mode"][agree], best[0][agree])
    assert seen["floor"] == pytest.approx(-n * math.log(k))


def test_mode_guidance_is_joint_on_narrow_graphs_and_per_factor_with_a_note_on_wide_ones():
    """3 agents on coverage (3 pairs: tables of 6^3 = 216 entries) guide the joint action; 6
    agents on 20 random pairs (6^6 = 46,656 > MODE_TABLE_SIZE) guide each factor, with
    floors k**-2, and say so."""
    from factor_q.argmax import elimination_plan, table_size
    from spnpolicy.algos.spn_ac import MODE_TABLE_SIZE, SpnAc, SpnAcConfig
    from spnpolicy.training import make_vec_env
    narrow = SpnAc(SpnAcConfig(), make_vec_env("coverage", 1, seed=0, num_agents=3,
                                               grid_size=4))
    assert narrow.guidance.weight == 0.1 and not narrow.notes and narrow.guidance.scopes is None
    wide_envs = make_vec_env("coverage", 1, seed=0, num_agents=6, grid_size=8)
    wide = SpnAc(SpnAcConfig(), wide_envs)
    assert table_size(elimination_plan(wide.critic.graph), 6) > MODE_TABLE_SIZE
    assert wide.guidance.weight == 0.1 and "mode_guidance acts per factor" in wide.notes[0]
    assert wide.guidance.scopes == tuple(wide.critic.graph.factors)
    torch.testing.assert_close(wide.guidance.log_floor,
                               torch.full((20,), -2 * math.log(6), dtype=torch.float32))
    off = SpnAc(SpnAcConfig(mode_guidance=0.0), wide_envs)
    assert off.notes == () and off.guidance.scopes is None
    assert narrow.guidance.exact and not wide.guidance.exact and not off.guidance.exact
    # off, the targets on the wide graph are still max-plus's per factor (no 6^6 tables)
    values = off.critic.values(torch.as_tensor(wide_envs.reset(seed=0)[0]))
    mode, agree = off.guidance.targets(values)
    assert mode.shape == (1, 6) and agree.shape == (1, 20)


def test_per_factor_guidance_is_each_agreed_factors_marginal_below_its_floor():
    """``mode_scopes``: the term is ``-w mean_B sum_f mask_f min(log pi(mode_f), floor_f)``
    with ``pi(mode_f)`` the exact marginal of the scope's actions (by enumeration of a
    softmax over every joint action); a factor above its floor or masked adds no gradient."""
    graph = FactorGraph.complete(N)
    q = FactorValues.stack([_values(0, graph), _values(1, graph)])
    actions = torch.tensor(list(itertools.product(range(K), repeat=N)))
    logits = torch.randn(B, K ** N, dtype=torch.float64,
                         generator=torch.Generator().manual_seed(5)) * 2
    logits.requires_grad_(True)
    alpha = torch.tensor(0.3, dtype=torch.float64)
    mode = actions[torch.arange(B) * 5 % K ** N]
    scopes = tuple(graph.factors)
    mask = torch.ones(B, len(graph.factors), dtype=torch.float64)
    mask[1, 0] = 0.0
    floor = torch.full((len(graph.factors),), math.log(0.3), dtype=torch.float64)
    dist = JointCategorical(logits, N, K)
    plain, _ = actor_loss(q, dist, alpha)
    guided, _ = actor_loss(q, dist, alpha, mode=mode, mode_weight=0.2, mode_log_floor=floor,
                           mode_mask=mask, mode_scopes=scopes)
    probs = logits.softmax(-1)                                            # [B, K**N]
    marginal = torch.stack([                                              # [B, F]
        (probs * (actions[:, list(scope)] == mode[:, None, list(scope)]).all(-1)).sum(-1)
        for scope in graph.factors], 1)
    terms = torch.minimum(marginal.log(), floor) * mask
    torch.testing.assert_close(guided, plain - 0.2 * terms.sum(1).mean())
    assert (marginal < 0.3).any() and (marginal > 0.3).any()   # both sides of the floor
    held = (marginal >= 0.3) | (mask == 0)
    (g_plain,) = torch.autograd.grad(plain, logits, retain_graph=True)
    (g_guided,) = torch.autograd.grad(guided, logits)
    rows = held.all(1)                   # states whose every factor is held or masked
    torch.testing.assert_close(g_guided[rows], g_plain[rows])
    assert not torch.allclose(g_guided[~rows], g_plain[~rows])


def test_critics_factor_modes_are_each_members_max_plus_argmax_and_their_agreement():
    from spnpolicy.algos.spn_ac import MAX_PLUS_ITERATIONS, critics_factor_modes
    graph = FactorGraph.random(6, 12, order=2, seed=1)
    members = [_values(seed, graph, batch=32, agents=6) for seed in (0, 1)]
    mode, agree = critics_factor_modes(FactorValues.stack(members))
    each = [m.argmax("max_plus", iterations=MAX_PLUS_ITERATIONS) for m in members]
    assert torch.equal(mode, each[0])
    expected = torch.stack([(each[0][:, list(f)] == each[1][:, list(f)]).all(-1)
                            for f in graph.factors], 1)
    assert 0 < expected.sum() < expected.numel()
    torch.testing.assert_close(agree, expected.to(agree.dtype))


@pytest.mark.parametrize("scale", [1.0, 40.0])
def test_scope_log_probs_are_the_exact_log_marginals_of_each_scope(scale):
    """Pairs and triples of a selective circuit's distribution against enumeration in float64;
    at scale 40 some marginals underflow float32's linear-space tables (below TINY_MARGINAL)
    and are read in log space: finite, exact, with a gradient."""
    from circuits.structures import selective
    from spnpolicy.algos.spn_ac import TINY_MARGINAL, scope_log_probs
    n, k, batch = 4, 3, 5
    circuit = selective(n, k, 4)
    gen = torch.Generator().manual_seed(0)
    params = (torch.randn(batch, circuit.num_params, generator=gen) * scale).requires_grad_()
    dist = circuit.distribution(params)
    actions = torch.randint(k, (batch, n), generator=gen)
    scopes = ((0, 1), (3, 1), (0, 2, 3), (2, 3))
    got = scope_log_probs(dist, actions, scopes)                          # [B, F]
    joint = torch.tensor(list(itertools.product(range(k), repeat=n)))
    exact = circuit.distribution(params.detach().double()).log_prob(
        joint[:, None, :].expand(-1, batch, -1))                         # [k**n, B] float64
    for f, scope in enumerate(scopes):
        agree = (joint[:, None, list(scope)] == actions[None, :, list(scope)]).all(-1)
        expected = exact.masked_fill(~agree, -math.inf).logsumexp(0)      # [B]
        torch.testing.assert_close(got[:, f].double(), expected, rtol=1e-4, atol=1e-4)
    if scale > 1:   # some asked marginals are below the tables' range: the log-space route
        assert (got < math.log(TINY_MARGINAL)).any()
    got.sum().backward()
    assert torch.isfinite(params.grad).all() and params.grad.abs().sum() > 0


def test_the_config_takes_an_infinite_mode_floor_and_refuses_nan_and_zero():
    """``mode_floor=inf`` (the guidance on every state) is a valid config value, as its
    docstring says; nan, 0 and negative floors are refused, naming the field."""
    from spnpolicy.algos.registry import make_config
    assert make_config("spn-ac", "lift", {"mode_floor": math.inf}).mode_floor == math.inf
    for bad in (math.nan, 0.0, -1.0):
        with pytest.raises(ValueError, match=r"mode_floor must be a number in \(0.0, inf\]"):
            make_config("spn-ac", "lift", {"mode_floor": bad})
