"""iql / vdn / qmix / dcg: configs, mixers, the DCG argmax, the TD target, exact resumption."""

import itertools

import numpy as np
import pytest
import torch

import spnpolicy
from factor_q import FactorGraph
from spnpolicy.algos import make_config
from spnpolicy.algos.critics import build_factor_graph
from spnpolicy.algos.dcg import DcgConfig, DcgQ
from spnpolicy.algos.dcg import build as build_dcg
from spnpolicy.algos.mixers import QmixMixer, VdnMixer, make_mixer
from spnpolicy.algos.q_learning import (
    QModel,
    RunningMeanStd,
    epsilon_greedy,
    linear_epsilon,
    td_loss,
)
from spnpolicy.algos.value_based import AgentQNetwork, MixedQ, ValueBasedConfig
from spnpolicy.training import Batch, make_vec_env

from tests.run_helpers import assert_same_run

QUICK = dict(total_steps=400, learning_starts=80, eval_interval=200, eval_episodes=2)


# --- configs and registry ----------------------------------------------------------------
@pytest.mark.parametrize("field, value", [
    ("lr", 0.0), ("hidden", (0,)), ("buffer_size", 0), ("batch_size", 0), ("gamma", 1.5),
    ("epsilon_start", 1.5), ("epsilon_finish", -0.1), ("epsilon_anneal_steps", 0),
    ("target_update_interval", 0), ("double_q", 1), ("standardise_rewards", "yes"),
    ("learning_starts", -1), ("n_step", 0), ("max_grad_norm", float("nan")),
    ("mixer", "qtran"), ("mixing_embed_dim", 0), ("hypernet_embed", -1), ("total_steps", 0),
])
def test_value_based_config_errors_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"^{field} must"):
        ValueBasedConfig(**{field: value})


@pytest.mark.parametrize("field, value", [
    ("factor_graph", "grid"), ("num_factors", -1), ("payoff_rank", -1), ("graph_seed", 1.5),
    ("lr", -1.0), ("greedy_method", "brute"), ("max_plus_iterations", 0),
])
def test_dcg_config_errors_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"^{field} must"):
        DcgConfig(**{field: value})


def test_registry_entries_and_defaults():
    assert {make_config(a, "climbing").mixer for a in ("iql", "vdn", "qmix")} == \
        {"none", "vdn", "qmix"}
    for algo in ("iql", "vdn", "qmix", "dcg"):
        matrix, coverage = make_config(algo, "climbing"), make_config(algo, "coverage")
        spn_ac = make_config("spn-ac", "climbing")
        assert matrix.total_steps == spn_ac.total_steps  # equal budgets, fair comparisons
        assert matrix.total_steps < coverage.total_steps
    assert make_config("qmix", "coverage", {"hidden": [8]}).hidden == (8,)
    with pytest.raises(ValueError, match="mixer='vdn' defines the algorithm 'vdn'"):
        make_config("vdn", "climbing", {"mixer": "qmix"})


def test_dcg_default_graphs():
    coverage = make_vec_env("coverage", 1, seed=0, num_agents=6, grid_size=8)
    model = build_dcg(make_config("dcg", "coverage"), coverage)
    assert model.q.graph == build_factor_graph("random", 6, 20, 2)  # the paper setting's graph
    assert model.q.share_params
    matrix = make_vec_env("climbing", 1, seed=0)
    assert build_dcg(make_config("dcg", "climbing"), matrix).q.graph == FactorGraph.complete(2)


# --- mixers ------------------------------------------------------------------------------
def test_vdn_mixer_is_the_sum():
    q, state = torch.randn(7, 4), torch.randn(7, 3)
    torch.testing.assert_close(VdnMixer()(q, state), q.sum(-1))
    assert make_mixer("none", 4, 3) is None
    with pytest.raises(ValueError, match="mixer must be one of"):
        make_mixer("qatten", 4, 3)


@pytest.mark.parametrize("seed", range(5))
def test_qmix_is_monotonic_in_every_agent_value(seed):
    torch.manual_seed(seed)
    mixer = QmixMixer(num_agents=4, state_dim=5, embed_dim=8, hypernet_embed=16)
    q = (10 * torch.randn(256, 4)).requires_grad_()
    state = torch.randn(256, 5)
    q_tot = mixer(q, state)
    assert q_tot.shape == (256,)
    (grad,) = torch.autograd.grad(q_tot.sum(), q)
    assert (grad >= 0).all()
    # and not trivially: the mixing depends on the state
    assert not torch.allclose(mixer(q, state), mixer(q, torch.randn(256, 5)))


# --- networks ----------------------------------------------------------------------------
def test_agent_network_tells_agents_apart_and_act_checks_its_input():
    torch.manual_seed(0)
    agents = AgentQNetwork(obs_dim=2, num_agents=3, num_actions=4, hidden=(8,))
    q = agents(torch.ones(5, 3, 2))
    assert q.shape == (5, 3, 4) and not torch.allclose(q[:, 0], q[:, 1])
    model = MixedQ(agents, None)
    assert model.act(np.ones((5, 3, 2))).shape == (5, 3)
    assert model.act(np.ones((3, 2))).shape == (3,)
    assert isinstance(model.act(torch.ones(2, 3, 2)), torch.Tensor)
    assert model.evaluate(None, torch.ones(5, 3, 2), torch.zeros(5, 3, dtype=torch.long)
                          ).shape == (5, 3)
    with pytest.raises(ValueError, match=r"per-agent observations .*\[B, 3, 2\].*got shape "
                                         r"\[5, 2\]"):
        model.act(np.ones((5, 2)))


def _dcg(graph, seed, k=3, state_dim=4):
    torch.manual_seed(seed)
    return DcgQ(graph, state_dim, k, hidden=(16,))


@pytest.mark.parametrize("seed", range(6))
def test_dcg_greedy_is_the_brute_force_argmax_of_its_q(seed):
    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(2, 5)), 3
    graph = FactorGraph.random(n, int(rng.integers(1, n * (n - 1) // 2 + 1)), seed=seed)
    model = _dcg(graph, seed, k)
    states = torch.randn(6, 4)
    greedy = model.greedy(states)
    joint = torch.tensor(list(itertools.product(range(k), repeat=n)))  # [k**n, n]
    with torch.no_grad():
        all_q = torch.stack([model.evaluate(states, None, u.expand(6, n)) for u in joint], 1)
        torch.testing.assert_close(model.evaluate(states, None, greedy), all_q.max(1).values)


def test_dcg_max_plus_option_is_exact_on_a_tree():
    line = _dcg(FactorGraph.line(5), 0)
    states = torch.randn(8, 4)
    with torch.no_grad():
        best = line.evaluate(states, None, line.greedy(states))
        line.method = "max_plus"
        torch.testing.assert_close(line.evaluate(states, None, line.greedy(states)), best)
    cfg = make_config("dcg", "coverage", {"greedy_method": "max_plus"})
    model = build_dcg(cfg, make_vec_env("coverage", 1, seed=0, num_agents=3, grid_size=4))
    assert (model.method, model.iterations) == ("max_plus", cfg.max_plus_iterations)


def test_dcg_payoffs_are_symmetric_and_normalised():
    forward, backward = FactorGraph(2, [(0, 1)]), FactorGraph(2, [(1, 0)])
    a, b = _dcg(forward, 0), _dcg(backward, 1)
    b.load_state_dict(a.state_dict())
    state = torch.randn(3, 4)
    torch.testing.assert_close(b.values(state).pairwise[:, 0],
                               a.values(state).pairwise[:, 0].transpose(-1, -2))
    raw = a.q(state)
    torch.testing.assert_close(a.values(state).unary, raw.unary / 2)  # 1/|V|, |E| = 1
    with pytest.raises(ValueError, match=r"global states .*\[B, 4\]"):
        a.act(np.ones((3, 2, 1)))


# --- exploration, targets, reward statistics ---------------------------------------------
def test_linear_epsilon_and_epsilon_greedy():
    cfg = ValueBasedConfig(epsilon_start=1.0, epsilon_finish=0.1, epsilon_anneal_steps=100)
    assert [linear_epsilon(s, cfg) for s in (0, 50, 100, 1000)] == pytest.approx(
        [1.0, 0.55, 0.1, 0.1])
    greedy = torch.zeros(2000, 2, dtype=torch.long)
    generator = torch.Generator().manual_seed(0)
    assert torch.equal(epsilon_greedy(greedy, 0.0, 4, generator), greedy)
    uniform = epsilon_greedy(greedy, 1.0, 4, generator)
    assert set(uniform.unique().tolist()) == {0, 1, 2, 3}
    assert abs((uniform == 0).float().mean().item() - 0.25) < 0.05


class _FixedQ(QModel):
    """State-independent per-agent values ``v`` ``[n, k]``; Q = sum of the agents' picks."""

    needs_obs = False

    def __init__(self, values):
        super().__init__()
        self.v = torch.nn.Parameter(torch.tensor(values))

    def greedy(self, state, obs):
        return self.v.argmax(-1).expand(state.shape[0], -1)

    def evaluate(self, state, obs, actions):
        return self.v.expand(state.shape[0], -1, -1).gather(-1, actions[..., None]).sum((1, 2))


@pytest.mark.parametrize("double_q, bootstrap", [(True, 2.0), (False, 5.0)])
def test_td_target_uses_double_q(double_q, bootstrap):
    online, target = _FixedQ([[0.0, 1.0]]), _FixedQ([[5.0, 2.0]])
    batch = Batch(state=torch.zeros(2, 1), actions=torch.tensor([[0], [1]]),
                  reward=torch.tensor([1.0, 1.0]), next_state=torch.zeros(2, 1),
                  terminated=torch.tensor([0.0, 1.0]), steps=torch.tensor([1, 1]))
    cfg = ValueBasedConfig(gamma=0.5, double_q=double_q, standardise_rewards=False)
    loss, q = td_loss(online, target, batch, cfg)
    expected = torch.tensor([1.0 + 0.5 * bootstrap, 1.0])  # the terminated row: no bootstrap
    torch.testing.assert_close(q, torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(loss, ((q - expected) ** 2).mean())


def test_running_mean_std_matches_numpy():
    rng = np.random.default_rng(0)
    chunks = [rng.normal(3.0, 2.0, size=int(rng.integers(1, 50))) for _ in range(20)]
    stats = RunningMeanStd(epsilon=1e-12)
    for chunk in chunks:
        stats.update(torch.tensor(chunk))
    data = np.concatenate(chunks)
    assert stats.mean == pytest.approx(data.mean()) and stats.var == pytest.approx(data.var())
    x = torch.tensor(data)
    assert stats.standardise(x).mean().item() == pytest.approx(0.0, abs=1e-9)


# --- training runs -----------------------------------------------------------------------
@pytest.mark.parametrize("algo, inputs", [("iql", np.ones((3, 2, 1))),
                                          ("dcg", np.ones((3, 1)))])
def test_result_contract(algo, inputs):
    result = spnpolicy.train(algo, "climbing", seed=0, **QUICK)
    assert [h["step"] for h in result.history] == [0, 200, 400]
    assert {"return_mean", "success_rate", "loss_td", "q_taken", "epsilon"} <= set(result.eval)
    assert result.agent.act(inputs).shape == (3, 2)
    assert result.agent.act(inputs, deterministic=False).shape == (3, 2)


@pytest.mark.parametrize("algo", ["qmix", "dcg"])
def test_resumed_run_equals_uninterrupted_run(tmp_path, algo):
    """Stop at step 480 (a checkpoint), resume to 960: the same history and weights as one
    run to 960, with multi-step episodes, n-step returns and target copies in both halves."""
    config = dict(QUICK, checkpoint_interval=240, eval_interval=240, n_step=2,
                  target_update_interval=96, eval_stochastic=True,
                  env_kwargs={"episode_length": 3})
    whole = spnpolicy.train(algo, "penalty", seed=2, out_dir=tmp_path / "a",
                            **dict(config, total_steps=960))
    spnpolicy.train(algo, "penalty", seed=2, out_dir=tmp_path / "b",
                    **dict(config, total_steps=480))
    resumed = spnpolicy.train(algo, "penalty", seed=2, out_dir=tmp_path / "b", resume=True,
                              **dict(config, total_steps=960))
    assert_same_run(whole, resumed)
    assert len(whole.history) == 5


@pytest.mark.parametrize("algo", ["vdn", "qmix", "dcg"])
def test_coverage_smoke(algo):
    result = spnpolicy.train(algo, "coverage", seed=0, total_steps=256,
                             env_kwargs=dict(num_agents=3, grid_size=4, max_steps=10),
                             num_envs=8, learning_starts=128, batch_size=32, n_step=3,
                             eval_interval=128, eval_episodes=4, hidden=(16,))
    assert 0.0 <= result.eval["success_rate"] <= 1.0
    inputs = np.zeros((5, 16)) if algo == "dcg" else np.zeros((5, 3, 19))
    assert result.agent.act(inputs).shape == (5, 3)
