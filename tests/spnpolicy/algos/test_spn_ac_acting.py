"""spn-ac's ``acting``: the trained team acts by its joint policy's mode, or by its first
critic's best joint action (``CriticsAgent``), through training's evaluations,
``load_agent`` and ``spnpolicy evaluate``."""

import pytest
import torch

import spnpolicy
from spnpolicy.algos.policies import JointPolicy
from factor_q import FactorGraph, FactorValues
from spnpolicy.algos.spn_ac import CriticsAgent, ModeGuidance, SpnAcConfig
from spnpolicy.envs import make_env
from spnpolicy.evaluate import evaluate_saved_run
from spnpolicy.inference import load_agent
from spnpolicy.training import make_vec_env
from tests.run_helpers import load_script, run_cli

SMALL = dict(num_agents=3, num_prey=1, grid_size=3, max_steps=10, punishment=2.0)
TINY = dict(total_steps=256, num_envs=8, learning_starts=64, batch_size=16, eval_interval=256,
            eval_episodes=2, policy_hidden=(16,), critic_hidden=(16,), critic_payoff_hidden=8,
            width=4, verbose=False, progress=False)


def test_acting_is_the_policy_unless_told_and_names_a_bad_choice():
    assert SpnAcConfig().acting == "policy"
    assert SpnAcConfig(acting="critics").acting == "critics"
    with pytest.raises(ValueError, match="^acting must be one of"):
        SpnAcConfig(acting="critic")


@pytest.fixture(scope="module")
def critics_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("acting") / "run"
    spnpolicy.train("spn-ac", "predator-prey", seed=0, out_dir=run, env_kwargs=SMALL,
                    acting="critics", **TINY)
    return run


def test_a_critics_run_loads_an_agent_that_plays_its_critics_exact_argmax(critics_run):
    agent = load_agent(critics_run)
    assert isinstance(agent, CriticsAgent) and agent.needs_obs
    assert agent.action_names is not None and agent.num_actions == 6
    envs = make_vec_env("predator-prey", 16, seed=3, **SMALL)
    try:
        state, obs = envs.reset()
        for _ in range(4):     # a few steps in, so that the states differ
            state, obs, *_ = envs.step(torch.as_tensor(agent.act(obs)).numpy())
    finally:
        envs.close()
    actions = torch.as_tensor(agent.act(obs))                                # [16, 3]
    with torch.no_grad():
        table = agent.critic.values(torch.as_tensor(obs))[0].table()         # [16, 6, 6, 6]
    chosen = table[torch.arange(16), actions[:, 0], actions[:, 1], actions[:, 2]]
    # the exact argmax of the first critic: no joint action of the 216 is worth more
    torch.testing.assert_close(chosen, table.flatten(1).amax(1))
    # the queries read the joint policy, the one a policy-acting run would load
    state = torch.as_tensor(state)
    policy = agent.policy
    assert isinstance(policy, JointPolicy)
    torch.testing.assert_close(agent.distribution(state).log_prob(actions),
                               policy.distribution(state).log_prob(actions))


def test_evaluate_plays_the_critics_argmax_of_the_diagnosis(critics_run):
    record = evaluate_saved_run(critics_run, episodes=4, stochastic=True)
    acting = load_script("benchmarks/predator_prey_diagnosis.py").acting(critics_run, 4)
    assert record["greedy"] == acting["critics_argmax"]
    assert record["stochastic"]["episodes"] == 4


def test_epsilon_greedy_sampling_departs_from_the_argmax_at_its_rate(critics_run):
    agent = load_agent(critics_run)
    agent.epsilon = 0.5
    obs = torch.zeros(2000, *agent.input_shape)
    greedy = agent.act(obs)
    sampled = agent.act(obs, deterministic=False, generator=torch.Generator().manual_seed(0))
    # each action is redrawn with prob. 0.5, uniformly over 6: it differs with prob. 5/12
    changed = float((sampled != greedy).float().mean())
    assert abs(changed - 5 / 12) < 4 * (5 / 12 * 7 / 12 / 6000) ** 0.5, changed


def test_state_critics_acting_reaches_the_optimum_of_climbing():
    result = spnpolicy.train("spn-ac", "climbing", seed=0, acting="critics",
                             eval_stochastic=False, progress=False, verbose=False)
    assert isinstance(result.agent, CriticsAgent) and not result.agent.needs_obs
    assert tuple(result.agent.act(torch.ones(1, 1))[0].tolist()) in \
        make_env("climbing").unwrapped.optimal_joint_actions
    assert result.eval["success_rate"] == 1.0


def test_load_agent_and_evaluate_override_the_runs_acting(critics_run):
    assert isinstance(load_agent(critics_run, acting="policy"), JointPolicy)
    assert isinstance(load_agent(critics_run, acting="critics"), CriticsAgent)
    played = evaluate_saved_run(critics_run, 2, acting="policy")
    assert played["acting"] == "policy"
    assert evaluate_saved_run(critics_run, 2)["acting"] == "critics"
    with pytest.raises(ValueError, match=r"^acting must be one of \('policy', 'critics'\), "
                                         r"got 'critic'"):
        load_agent(critics_run, acting="critic")


def test_acting_is_refused_for_a_run_without_spn_ac_critics(tmp_path):
    run = tmp_path / "vdn"
    spnpolicy.train("vdn", "climbing", seed=0, out_dir=run, total_steps=200, num_envs=8,
                    learning_starts=64, batch_size=16, eval_interval=200, eval_episodes=2,
                    verbose=False, progress=False)
    with pytest.raises(ValueError, match=r"^acting='critics': run .* trained 'vdn', which has "
                                         r"no joint policy and factor critics"):
        evaluate_saved_run(run, 2, acting="critics")
    assert "acting" not in evaluate_saved_run(run, 2)


def test_query_reads_the_joint_policy_of_a_critics_run(critics_run):
    out = run_cli("query", critics_run, "--fix", "0=stay", "--samples", "3")
    assert out.returncode == 0, out.stderr
    assert "given: agent 0 = stay" in out.stdout and "most likely joint action" in out.stdout


def test_query_best_prints_the_critics_best_given_the_stuck_agent(critics_run):
    """``--best`` on observation critics: the reset's observations, as ``make_vec_env``
    gives them for the same seed, and ``best_joint_action`` on them."""
    from spnpolicy.inference import best_joint_action

    out = run_cli("query", critics_run, "--fix", "0=stay", "--best", "--seed", "4")
    assert out.returncode == 0, out.stderr
    agent = load_agent(critics_run)
    envs = make_vec_env("predator-prey", 1, seed=4, **SMALL)
    try:
        _, obs = envs.reset(seed=4)
    finally:
        envs.close()
    obs = torch.as_tensor(obs)
    best = best_joint_action(agent, obs, fixed={0: "stay"})[0]
    with torch.no_grad():
        q = float(agent.values(obs).evaluate(best[None])[0])
    shown = ", ".join(agent.action_names[int(a)] for a in best)
    assert (f"critics' best joint action given the fixed agents (agents 0..2): ({shown}), "
            f"Q = {q:.4g}") in out.stdout
    assert shown.startswith("stay")
    refused = run_cli("query", critics_run, "--best", "--state", ",".join(["0"] * agent.state_dim))
    assert refused.returncode == 2
    assert "--best: this run's critics read each agent's" in refused.stderr


@pytest.mark.parametrize("n, exact", [(3, True), (8, False)])
def test_best_is_the_first_members_target_without_the_others(n, exact):
    """On a narrow graph the exact argmax, on a wide one max-plus's: both equal to what
    the mode guidance targets, the first critic's."""
    graph = FactorGraph.complete(n)
    guidance = ModeGuidance(graph, 6, 0.0, 1.0)
    assert guidance.exact is exact
    generator = torch.Generator().manual_seed(n)
    values = FactorValues(graph, torch.randn(2, 32, n, 6, generator=generator),
                          torch.randn(2, 32, len(graph.factors), 6, 6, generator=generator))
    torch.testing.assert_close(guidance.best(values[0]), guidance.targets(values)[0])
    if exact:   # and the brute-force maximum of the first critic's table
        table = values[0].table().flatten(1)
        chosen = values[0].evaluate(guidance.best(values[0]))
        torch.testing.assert_close(chosen, table.amax(1))


def test_best_joint_action_is_the_critics_best_when_an_agent_is_stuck(critics_run):
    """``best_joint_action`` with ``fixed``: the brute-force maximum of the first critic's
    table over the joint actions with agent 1 at ``stay``; without it, the team's act."""
    from spnpolicy.inference import best_joint_action

    agent = load_agent(critics_run)
    envs = make_vec_env("predator-prey", 16, seed=5, **SMALL)
    try:
        _, obs = envs.reset()
    finally:
        envs.close()
    obs = torch.as_tensor(obs)
    stay = agent.action_names.index("stay")
    actions = best_joint_action(agent, obs, fixed={1: "stay"})               # [16, 3]
    assert (actions[:, 1] == stay).all()
    with torch.no_grad():
        table = agent.values(obs).table()                                     # [16, 6, 6, 6]
    chosen = table[torch.arange(16), actions[:, 0], actions[:, 1], actions[:, 2]]
    torch.testing.assert_close(chosen, table[:, :, stay].flatten(1).amax(1))
    assert torch.equal(best_joint_action(agent, obs), torch.as_tensor(agent.act(obs)))
    with pytest.raises(ValueError, match=r"inputs must have shape \[B, 3, "):
        best_joint_action(agent, obs[:, :2])
    with pytest.raises(ValueError, match="agent must act by a factor-graph Q.*JointPolicy"):
        best_joint_action(agent.policy, obs, fixed={1: "stay"})
