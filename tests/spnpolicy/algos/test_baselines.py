"""iql / vdn / qmix / dcg: configs, mixers, the DCG argmax, the TD target, exact resumption."""

import itertools

import numpy as np
import pytest
import torch

import spnpolicy
from factor_q import AgentFactorQ, FactorGraph
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
from spnpolicy.algos.registry import get_algorithm
from spnpolicy.algos.value_based import AgentQNetwork, MixedQ, ValueBasedConfig
from spnpolicy.training import Batch, make_vec_env

from tests.run_helpers import assert_same_run
from tests.update_helpers import move_apart, random_batch

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


def test_dcg_default_graphs_and_inputs():
    coverage = make_vec_env("coverage", 1, seed=0, num_agents=6, grid_size=8)
    model = build_dcg(make_config("dcg", "coverage"), coverage)
    assert model.q.graph == build_factor_graph("random", 6, 20, 2)  # the paper setting's graph
    assert isinstance(model.q, AgentFactorQ) and model.needs_obs and model.q.state_dim == 0
    assert model.input_shape == (6, coverage.obs_dim)
    matrix = make_vec_env("climbing", 1, seed=0)
    assert build_dcg(make_config("dcg", "climbing"), matrix).q.graph == FactorGraph.complete(2)
    low_rank = build_dcg(make_config("dcg", "coverage", {"payoff_rank": 2}), coverage)
    assert low_rank.q.rank == 2 and model.q.rank is None


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


def _dcg(graph, seed, k=3, obs_dim=4, rank=None):
    torch.manual_seed(seed)
    return DcgQ(graph, obs_dim, k, hidden=(16,), rank=rank)


def _obs(model, batch, seed=0):
    """Random observations ``[B, n, obs_dim]`` for ``model``."""
    return torch.randn(batch, *model.input_shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("seed", range(6))
def test_dcg_greedy_is_the_brute_force_argmax_of_its_q(seed):
    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(2, 5)), 3
    graph = FactorGraph.random(n, int(rng.integers(1, n * (n - 1) // 2 + 1)), seed=seed)
    model = _dcg(graph, seed, k, rank=(None, 2)[seed % 2])
    obs = _obs(model, 6)
    greedy = model.greedy(None, obs)
    joint = torch.tensor(list(itertools.product(range(k), repeat=n)))  # [k**n, n]
    with torch.no_grad():
        all_q = torch.stack([model.evaluate(None, obs, u.expand(6, n)) for u in joint], 1)
        torch.testing.assert_close(model.evaluate(None, obs, greedy), all_q.max(1).values)


@pytest.mark.parametrize("seed", range(4))
def test_dcg_best_joint_action_given_a_stuck_agent_is_the_brute_force_argmax(seed):
    """``spnpolicy.inference.best_joint_action`` on a dcg team: the best joint action with
    agent 0 fixed, against every joint action that keeps it."""
    from spnpolicy.inference import best_joint_action

    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(2, 5)), 3
    model = _dcg(FactorGraph.random(n, int(rng.integers(1, n * (n - 1) // 2 + 1)), seed=seed),
                 seed, k)
    obs = _obs(model, 6, seed)
    stuck = int(rng.integers(k))
    best = best_joint_action(model, obs, fixed={0: stuck})
    assert (best[:, 0] == stuck).all()
    joint = torch.tensor([u for u in itertools.product(range(k), repeat=n) if u[0] == stuck])
    with torch.no_grad():
        all_q = torch.stack([model.evaluate(None, obs, u.expand(6, n)) for u in joint], 1)
        torch.testing.assert_close(model.evaluate(None, obs, best), all_q.max(1).values)


def test_dcg_max_plus_option_is_exact_on_a_tree():
    line = _dcg(FactorGraph.line(5), 0)
    obs = _obs(line, 8)
    with torch.no_grad():
        best = line.evaluate(None, obs, line.greedy(None, obs))
        line.method = "max_plus"
        torch.testing.assert_close(line.evaluate(None, obs, line.greedy(None, obs)), best)
    cfg = make_config("dcg", "coverage", {"greedy_method": "max_plus"})
    model = build_dcg(cfg, make_vec_env("coverage", 1, seed=0, num_agents=3, grid_size=4))
    assert (model.method, model.iterations) == ("max_plus", cfg.max_plus_iterations)


@pytest.mark.parametrize("rank", [None, 2])
def test_dcg_payoffs_are_symmetric_and_normalised(rank):
    forward, backward = FactorGraph(3, [(0, 1), (1, 2)]), FactorGraph(3, [(1, 0), (1, 2)])
    a, b = _dcg(forward, 0, rank=rank), _dcg(backward, 1, rank=rank)
    b.load_state_dict(a.state_dict())
    obs = _obs(a, 3)
    torch.testing.assert_close(b.values(obs).pairwise[:, 0],
                               a.values(obs).pairwise[:, 0].transpose(-1, -2))
    raw = a.q(obs)
    torch.testing.assert_close(a.values(obs).unary, raw.unary / 3)          # 1/|V|
    torch.testing.assert_close(a.values(obs).pairwise, raw.pairwise / 2)    # 1/|E|
    with pytest.raises(ValueError, match=r"per-agent observations .*\[B, 3, 4\]"):
        a.act(np.ones((5, 4)))


def test_dcg_acts_on_each_agents_own_observation():
    """An agent's utilities read its own observation only; a payoff its two agents'."""
    model = _dcg(FactorGraph(3, [(0, 1)]), 0)
    obs = _obs(model, 2)
    moved = obs.clone()
    moved[:, 2] += 1.0
    before, after = model.values(obs), model.values(moved)
    torch.testing.assert_close(after.unary[:, :2], before.unary[:, :2])
    torch.testing.assert_close(after.pairwise, before.pairwise)
    assert not torch.allclose(after.unary[:, 2], before.unary[:, 2])


def test_a_checkpoint_of_the_earlier_dcg_network_is_refused_clearly(tmp_path):
    """Runs written when dcg read the global state (its payoff network embedding agent
    ids: ``agent_in``) do not load; the error says why, for load_agent and resume."""
    from spnpolicy.inference import load_agent
    from spnpolicy.training.checkpoint import load_checkpoint, save_checkpoint

    spnpolicy.train("dcg", "climbing", seed=0, out_dir=tmp_path, progress=False,
                    verbose=False, **QUICK)
    path = tmp_path / "checkpoints" / "last.pt"
    payload = load_checkpoint(path)
    earlier = {"q.torso.0.weight": torch.zeros(32, 1), "q.torso.0.bias": torch.zeros(32),
               "q.unary_head.weight": torch.zeros(6, 32), "q.unary_head.bias": torch.zeros(6),
               "q.payoff.2.state_in.weight": torch.zeros(32, 32),
               "q.payoff.2.state_in.bias": torch.zeros(32),
               "q.payoff.2.agent_in.weight": torch.zeros(4, 32),
               "q.payoff.2.out.1.weight": torch.zeros(9, 32),
               "q.payoff.2.out.1.bias": torch.zeros(9)}
    payload["algorithm"]["model"] = payload["algorithm"]["target_model"] = earlier
    save_checkpoint(path, payload)
    message = "written by an earlier dcg network .*train the run again"
    with pytest.raises(ValueError, match=message):
        load_agent(tmp_path)
    with pytest.raises(ValueError, match=message):
        spnpolicy.train("dcg", "climbing", seed=0, out_dir=tmp_path, resume=True,
                        progress=False, verbose=False, **dict(QUICK, total_steps=600))


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
    shared = epsilon_greedy(greedy, 1.0, 4, generator, "shared")
    assert (shared == shared[:, :1]).all()                # the team takes one action
    assert abs((shared[:, 0] == 0).float().mean().item() - 0.25) < 0.05
    half = epsilon_greedy(greedy, 0.5, 4, generator, "shared")
    assert (half == half[:, :1]).all()
    assert abs((half[:, 0] != 0).float().mean().item() - 0.5 * 0.75) < 0.05
    with pytest.raises(ValueError, match="exploration must be one of"):
        epsilon_greedy(greedy, 0.5, 4, generator, "joint")


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


@pytest.mark.parametrize("algo", ["iql", "vdn", "qmix", "dcg"])
def test_update_is_the_online_networks_td_loss_against_its_target(algo):
    """An update's loss is td_loss(online, target) (by hand above), not the reverse: told
    apart with the target moved away from the online network."""
    torch.manual_seed(0)
    envs = make_vec_env("climbing", 1)
    cfg = make_config(algo, "climbing", {"standardise_rewards": False})
    algorithm = get_algorithm(algo).learner(cfg, envs)
    move_apart(algorithm.target, scale=1.0)
    batch = random_batch(envs)
    with torch.no_grad():
        expected, _ = td_loss(algorithm.agent, algorithm.target, batch, cfg)
        reverse, _ = td_loss(algorithm.target, algorithm.agent, batch, cfg)
    assert abs(float(expected) - float(reverse)) > 1e-3
    assert float(algorithm.update(batch)["loss_td"]) == pytest.approx(float(expected), rel=1e-6)


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
                                          ("dcg", np.ones((3, 2, 1)))])
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
    inputs = np.zeros((5, 3, 19))
    assert result.agent.act(inputs).shape == (5, 3)
