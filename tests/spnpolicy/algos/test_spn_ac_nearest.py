"""spn-ac with ``factor_graph="nearest"``: critics whose pairs are chosen per state by the
agents' positions. The config's rules, the positions coverage gives, an update whose critic
values are those of each replayed state's own pairs, and a short run that trains,
checkpoints, reloads and evaluates."""

import math

import numpy as np
import pytest
import torch

import spnpolicy
from factor_q import AgentFactorQ, FactorGraph, NearestGraph
from spnpolicy.algos.critics import build_factor_graph
from spnpolicy.algos.registry import make_config
from spnpolicy.algos.spn_ac import SpnAc, SpnAcConfig, critic_loss, soft_value
from spnpolicy.evaluate import evaluate_saved_run
from spnpolicy.inference import load_agent
from spnpolicy.training import make_vec_env
from tests.run_helpers import replay_batches

COVERAGE = dict(num_agents=5, grid_size=6, max_steps=10, reward="coverage",
                observation="nearest")
NEAREST = dict(critic_input="agents", factor_graph="nearest", neighbours=2, mode_guidance=0.0)


def test_config_names_what_a_graph_per_state_needs():
    assert SpnAcConfig(**NEAREST).neighbours == 2
    with pytest.raises(ValueError, match=r"factor_graph='nearest' \(pairs chosen per state\) "
                                         r"needs critic_input='agents'.*got \{'critic_input': "
                                         r"'state'\}"):
        SpnAcConfig(factor_graph="nearest", mode_guidance=0.0)
    with pytest.raises(ValueError, match=r"got \{'acting': 'critics', 'mode_guidance': 0.1\}"):
        SpnAcConfig(**(NEAREST | dict(acting="critics", mode_guidance=0.1)))
    with pytest.raises(ValueError, match="^neighbours must"):
        SpnAcConfig(**(NEAREST | dict(neighbours=0)))
    assert build_factor_graph("nearest", 6, neighbours=3) == NearestGraph(6, 3)
    with pytest.raises(ValueError, match="pairwise factors; got order=3"):
        build_factor_graph("nearest", 6, order=3)


def test_coverage_gives_the_agents_cells_from_numpy_and_torch_states():
    envs = make_vec_env("coverage", 3, seed=0, **COVERAGE)
    envs.reset(seed=0)
    states = envs.step(np.random.default_rng(0).integers(5, size=(3, 5))).state
    cells = envs.agent_positions(states)
    np.testing.assert_allclose(cells, envs.env.agent_positions, atol=1e-5)
    torch.testing.assert_close(envs.agent_positions(torch.from_numpy(states)),
                               torch.from_numpy(cells))
    envs.close()


def test_an_env_without_positions_is_refused():
    cfg = make_config("spn-ac", "climbing", dict(NEAREST, neighbours=1))
    envs = make_vec_env("climbing", 2, seed=0)
    with pytest.raises(ValueError, match="chooses the critics' pairs by the agents' "
                                         "positions, which ParallelEnvVec does not give"):
        SpnAc(cfg, envs)


def test_the_critics_values_are_each_replayed_states_own_pairs():
    cfg = make_config("spn-ac", "coverage", dict(NEAREST, num_envs=8, width=4,
                                                 policy_hidden=(16,), critic_hidden=(32,)))
    envs = make_vec_env("coverage", cfg.num_envs, seed=0, **COVERAGE)
    torch.manual_seed(0)
    algo = SpnAc(cfg, envs)
    assert isinstance(algo.critic.graph, NearestGraph)
    batch, = replay_batches(envs, 1, size=16, observations=True)
    values = algo._values(algo.critic, batch.state, batch.obs)
    cells = envs.agent_positions(batch.state)
    scopes, kept = NearestGraph(5, 2).scopes(cells)
    torch.testing.assert_close(values.pair_scopes, scopes)
    # row 0's Q is that of a fixed-graph critic on its kept pairs with the same weights
    fixed = FactorGraph(5, [tuple(s) for s, keep in zip(scopes[0].tolist(), kept[0].tolist())
                            if keep])
    other = AgentFactorQ(fixed, envs.obs_dim, envs.num_actions, (32,), ensemble=2)
    other.load_state_dict(algo.critic.state_dict())
    torch.testing.assert_close(values.evaluate(batch.actions)[:, 0],
                               other(batch.obs[:1]).evaluate(batch.actions[:1])[:, 0])
    # the critics' loss: Q on the states' pairs, bootstrapped on the next states' pairs
    alpha = algo.temperature.value
    with torch.no_grad():
        loss, = algo._critic_loss(batch.state, batch.obs, batch.actions, batch.reward,
                                  batch.next_state, batch.next_obs, batch.steps,
                                  batch.terminated, alpha)
        nxt = algo.critic_target(batch.next_obs,
                                 positions=envs.agent_positions(batch.next_state))
        dist = algo.policy.distribution(algo._policy_input(batch.next_state, batch.next_obs))
        target = batch.reward + cfg.gamma ** batch.steps.float() * (1 - batch.terminated) * \
            soft_value(nxt, dist, alpha, algo.value_offset)
        q = algo.critic(batch.obs, positions=cells).evaluate(batch.actions)
    torch.testing.assert_close(loss, critic_loss(q, target))
    losses = [float(algo.update(batch)["loss_critic"]) for _ in range(20)]
    assert all(map(math.isfinite, losses)) and losses[-1] < 0.5 * losses[0], losses
    envs.close()


def test_a_run_on_nearest_pairs_trains_reloads_and_evaluates(tmp_path):
    config = dict(NEAREST, num_envs=4, learning_starts=64, batch_size=16, total_steps=320,
                  checkpoint_interval=320, eval_interval=320, eval_episodes=2,
                  param_head="agents", policy_hidden=(16,), critic_hidden=(16,),
                  progress=False, verbose=False)
    result = spnpolicy.train("spn-ac", "coverage", seed=0, out_dir=tmp_path / "run",
                             env_kwargs=COVERAGE, **config)
    assert result.config.factor_graph == "nearest"
    loaded = load_agent(tmp_path / "run")
    assert loaded.needs_obs
    record = evaluate_saved_run(tmp_path / "run", episodes=2, seed=3)
    assert math.isfinite(record["greedy"]["final_potential"])
