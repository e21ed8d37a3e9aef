"""spn-ac with ``critic_input="agents"``: twin AgentFactorQ critics on the agents'
observations (and the global state). The config's rules, an update on replayed
observations, an end-to-end matrix game, and a resumed and reloaded run."""

import math

import pytest
import torch

import spnpolicy
from factor_q import AgentFactorQ, FactorQ
from spnpolicy.algos.registry import make_config
from spnpolicy.algos.spn_ac import SpnAc, SpnAcConfig
from spnpolicy.envs import make_env
from spnpolicy.inference import load_agent
from spnpolicy.training import make_vec_env
from tests.run_helpers import assert_same_run, replay_batches

COVERAGE = dict(num_agents=3, grid_size=4, max_steps=10, reward="coverage")


def test_config_refuses_low_rank_tables_with_agents_critics():
    with pytest.raises(ValueError, match=r"critic_rank=2 needs critic_input='state'; the "
                                         r"agents critics have full tables"):
        SpnAcConfig(critic_input="agents", critic_rank=2)
    with pytest.raises(ValueError, match="^critic_input must"):
        SpnAcConfig(critic_input="observations")
    assert SpnAcConfig(critic_input="agents", critic_rank=0).critic_input == "agents"
    assert SpnAcConfig().critic_input == "state"
    with pytest.raises(ValueError, match=r"critic_agent_ids=False needs critic_input='agents' "
                                         r"\(per-agent critic inputs\), got "
                                         r"critic_input='state'"):
        SpnAcConfig(critic_agent_ids=False)
    with pytest.raises(ValueError, match="^critic_agent_ids must"):
        SpnAcConfig(critic_input="agents", critic_agent_ids="no")
    with pytest.raises(ValueError, match=r"critic_centred=True needs critic_input='agents' "
                                         r"and unary=True .* got critic_input='state', "
                                         r"unary=True"):
        SpnAcConfig(critic_centred=True)
    with pytest.raises(ValueError, match=r"got critic_input='agents', unary=False"):
        SpnAcConfig(critic_input="agents", critic_centred=True, unary=False)


def test_centred_critics_are_built_with_centred_tables():
    envs = make_vec_env("coverage", 2, seed=0, **COVERAGE)
    cfg = make_config("spn-ac", "coverage", dict(num_envs=2, width=4, policy_hidden=(16,),
                                                 critic_hidden=(16,), critic_input="agents",
                                                 critic_centred=True))
    algo = SpnAc(cfg, envs)
    obs = torch.as_tensor(envs.reset(seed=0)[1])
    tables = algo.critic(obs).pairwise                                 # [E, B, F, k, k]
    assert algo.critic.centred and tables.abs().max() > 0
    assert tables.mean(-1).abs().max() < 1e-6 and tables.mean(-2).abs().max() < 1e-6
    envs.close()


def test_agents_critics_read_observations_and_fit_a_fixed_batch():
    cfg = make_config("spn-ac", "coverage", dict(num_envs=8, width=4, policy_hidden=(16,),
                                                 critic_hidden=(32,), critic_input="agents"))
    envs = make_vec_env("coverage", cfg.num_envs, seed=0, **COVERAGE)
    torch.manual_seed(0)
    algo = SpnAc(cfg, envs)
    assert algo.needs_obs and isinstance(algo.critic, AgentFactorQ)
    assert (algo.critic.ensemble, algo.critic.input_dim, algo.critic.state_dim) == \
        (2, envs.obs_dim, 0)   # each agent its own observation
    state_critics = SpnAc(make_config("spn-ac", "coverage", dict(num_envs=8, width=4)), envs)
    assert not state_critics.needs_obs and isinstance(state_critics.critic, FactorQ)

    batch, = replay_batches(envs, 1, size=64, observations=True)
    assert batch.obs.shape == batch.next_obs.shape == (64, envs.num_agents, envs.obs_dim)
    # the critics' loss reads the observations
    args = (batch.actions, batch.reward, batch.next_state, batch.next_obs, batch.steps,
            batch.terminated, algo.temperature.value)
    with torch.no_grad():
        loss, = algo._critic_loss(batch.state, batch.obs, *args)
        moved, = algo._critic_loss(batch.state, batch.obs + 1.0, *args)
    assert not torch.isclose(loss, moved)
    # whole updates (critics, actor, alpha) on one batch: the critics fit it
    losses = [float(algo.update(batch)["loss_critic"]) for _ in range(20)]
    assert all(map(math.isfinite, losses))
    assert losses[-1] < 0.25 * losses[0], losses
    envs.close()


@pytest.mark.parametrize("seed", [0, 1])
def test_agents_critics_reach_the_optimum_of_climbing(seed):
    result = spnpolicy.train("spn-ac", "climbing", seed=seed, critic_input="agents",
                             eval_stochastic=False, progress=False, verbose=False)
    assert result.config.critic_input == "agents"
    assert tuple(result.agent.act(torch.ones(1, 1))[0].tolist()) in \
        make_env("climbing").unwrapped.optimal_joint_actions
    assert result.eval["success_rate"] == 1.0


def test_a_run_with_agents_critics_resumes_and_loads(tmp_path):
    """Stopped at 240 and resumed to 480 (the saved config supplies critic_input), the run
    equals the uninterrupted one; load_agent rebuilds its policy."""
    config = dict(num_envs=8, learning_starts=96, batch_size=16, checkpoint_interval=240,
                  eval_interval=240, eval_episodes=4, policy_hidden=(16,), critic_hidden=(16,),
                  critic_input="agents", progress=False, verbose=False)
    whole = spnpolicy.train("spn-ac", "climbing", seed=1, out_dir=tmp_path / "a",
                            total_steps=480, **config)
    spnpolicy.train("spn-ac", "climbing", seed=1, out_dir=tmp_path / "b", total_steps=240,
                    **config)
    resumed = spnpolicy.train("spn-ac", "climbing", seed=1, out_dir=tmp_path / "b",
                              resume=True, total_steps=480, progress=False, verbose=False)
    assert resumed.config.critic_input == "agents"
    assert_same_run(whole, resumed)
    loaded = load_agent(tmp_path / "b")
    states = torch.ones(3, 1)
    torch.testing.assert_close(loaded.distribution(states).marginals(),
                               resumed.agent.distribution(states).marginals())


def test_predator_prey_defaults_use_the_agents_critics_and_explore():
    """The registered predator-prey env's defaults: agents critics on every pair of
    predators, epsilon exploration, kl_uniform from alpha 1 (spn-ac and its variants); dcg
    on the paper's fully connected graph; the lift task keeps the generic defaults."""
    for algo in ("spn-ac", "meanfield-ac", "reinforce"):
        cfg = make_config(algo, "predator-prey")
        assert (cfg.critic_input, cfg.factor_graph, cfg.critic_payoff_hidden) == \
            ("agents", "complete", 128)
        assert (cfg.epsilon_start, cfg.epsilon_finish, cfg.regulariser, cfg.alpha) == \
            (1.0, 0.05, "kl_uniform", 1.0)
    assert make_config("dcg", "predator-prey").factor_graph == "complete"
    lift = make_config("spn-ac", "lift")
    assert (lift.critic_input, lift.epsilon_start, lift.factor_graph) == ("state", 0.0, "auto")
