"""spn-ac's epsilon exploration: off by default (collection samples the policy alone, with
the same random draws as before the option existed), and when on, each agent's action is
uniform with probability epsilon (or, shared, each row's agents take one uniform action
together), annealed linearly as the Q-learners' schedule; and greedy_envs, where the first
copies collect with the greedy joint action and per-agent uniform actions at their own rate,
for every agent or only those the env reports unsettled, from the first step of each episode
or from a later one."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from scipy import stats

import spnpolicy

from spnpolicy.algos.registry import make_config
from spnpolicy.algos.spn_ac import SpnAc, greedy_rows
from spnpolicy.training import make_vec_env


def _algorithm(env: str = "lift", **overrides) -> tuple[SpnAc, torch.Tensor]:
    """spn-ac on 4 copies of a 3-agent env (coverage on a 4x4 grid), and their states."""
    cfg = make_config("spn-ac", env, dict(num_envs=4, width=4, policy_hidden=(16,),
                                          critic_hidden=(16,)) | overrides)
    envs = make_vec_env(env, 4, seed=0, num_agents=3, **({"grid_size": 4} if env == "coverage"
                                                          else {}))
    torch.manual_seed(0)
    algo = SpnAc(cfg, envs)
    state, _ = envs.reset(seed=0)
    envs.close()
    return algo, torch.as_tensor(state)


def test_off_by_default_collection_samples_the_policy_with_the_same_draws():
    algo, state = _algorithm()
    assert (algo.cfg.epsilon_start, algo.cfg.epsilon_finish) == (0.0, 0.0)
    explored = algo.explore(state, None, 0, torch.Generator().manual_seed(3))
    sampled = algo.sample(state, None, torch.Generator().manual_seed(3))
    torch.testing.assert_close(explored, sampled)
    assert algo.schedule_metrics(0) == {}


def _peaked(algo: SpnAc) -> None:
    """Push the policy onto one joint action per state (large random circuit logits)."""
    with torch.no_grad():
        for p in algo.policy.encoder.parameters():
            p.zero_()
        algo.policy.encoder[-1].bias.copy_(torch.randn_like(algo.policy.encoder[-1].bias) * 30)


def test_epsilon_one_collects_uniform_actions():
    """At epsilon 1 every agent's action is uniform over the k actions, whatever the policy
    (a policy pushed onto one joint action first): a chi-square test per agent, seeded."""
    algo, state = _algorithm(epsilon_start=1.0, epsilon_finish=1.0)
    _peaked(algo)
    greedy = algo.greedy(state, None)
    generator = torch.Generator().manual_seed(0)
    draws = torch.cat([algo.explore(state, None, 10**6, generator) for _ in range(500)])
    k = algo.policy.num_actions
    for agent in range(draws.shape[1]):
        counts = np.bincount(draws[:, agent].numpy(), minlength=k)
        assert stats.chisquare(counts).pvalue > 1e-3, counts
    policy_draws = torch.cat([algo.sample(state, None, generator) for _ in range(50)])
    assert (policy_draws == greedy.repeat(50, 1)).float().mean() > 0.9   # the policy is peaked


@pytest.mark.parametrize("step, expected", [(0, 0.8), (500, 0.5), (1000, 0.2), (5000, 0.2)])
def test_epsilon_anneals_linearly_and_is_logged(step, expected):
    """On a peaked policy an action differs from the policy's own when replaced (probability
    epsilon) by one of the k - 1 others: a share epsilon (k - 1) / k of the entries."""
    algo, state = _algorithm(epsilon_start=0.8, epsilon_finish=0.2, epsilon_anneal_steps=1000)
    assert algo.schedule_metrics(step)["epsilon"] == pytest.approx(expected)
    _peaked(algo)
    greedy = algo.greedy(state, None)
    generator = torch.Generator().manual_seed(1)
    explored = torch.cat([algo.explore(state, None, step, generator) for _ in range(1000)])
    k = algo.policy.num_actions
    changed = (explored != greedy.repeat(1000, 1)).float().mean().item()   # 12,000 entries
    assert changed == pytest.approx(expected * (k - 1) / k, abs=0.02)


def test_the_config_checks_the_rates():
    with pytest.raises(ValueError, match="epsilon_start"):
        make_config("spn-ac", "lift", {"epsilon_start": 1.5})
    with pytest.raises(ValueError, match="epsilon_anneal_steps"):
        make_config("spn-ac", "lift", {"epsilon_anneal_steps": 0})
    cfg = make_config("spn-ac", "lift", {"epsilon_start": 1.0, "epsilon_finish": 0.05})
    assert dataclasses.replace(cfg).epsilon_finish == 0.05


def test_shared_exploration_moves_the_whole_team_together():
    """At epsilon 1 with shared exploration every agent of a row takes the row's one action,
    uniform over the k actions (chi-square, seeded), whatever the policy."""
    algo, state = _algorithm(epsilon_start=1.0, epsilon_finish=1.0, exploration="shared")
    _peaked(algo)
    generator = torch.Generator().manual_seed(0)
    draws = torch.cat([algo.explore(state, None, 10**6, generator) for _ in range(500)])
    assert (draws == draws[:, :1]).all()
    counts = np.bincount(draws[:, 0].numpy(), minlength=algo.policy.num_actions)
    assert stats.chisquare(counts).pvalue > 1e-3, counts


def test_shared_exploration_replaces_whole_rows_at_the_rate():
    """On a peaked policy a row differs from the policy's joint action when it is replaced
    (probability epsilon) by a shared action other than that joint action: epsilon (1 - c / k)
    of the rows, c = 1 where the policy's joint action is one action for every agent."""
    epsilon = 0.4
    algo, state = _algorithm(epsilon_start=epsilon, epsilon_finish=epsilon, exploration="shared")
    _peaked(algo)
    greedy = algo.greedy(state, None)
    k = algo.policy.num_actions
    uniform_row = (greedy == greedy[:, :1]).all(1).float()
    expected = epsilon * (1 - uniform_row / k).mean().item()
    generator = torch.Generator().manual_seed(2)
    explored = torch.stack([algo.explore(state, None, 0, generator) for _ in range(1000)])
    changed = (explored != greedy).any(-1).float().mean().item()          # 4,000 rows
    assert changed == pytest.approx(expected, abs=0.03)


def test_greedy_envs_collect_with_the_greedy_joint_action_and_the_rest_sample():
    """greedy_envs=0.5 of 4 copies: the first 2 rows are the greedy joint action (at
    greedy_envs_epsilon 0), the others the policy's samples, drawn as without the option."""
    algo, state = _algorithm(greedy_envs=0.5, greedy_envs_epsilon=0.0)
    explored = algo.explore(state, None, 0, torch.Generator().manual_seed(3))
    sampled = algo.sample(state, None, torch.Generator().manual_seed(3))
    torch.testing.assert_close(explored[:2], algo.greedy(state[:2], None))
    torch.testing.assert_close(explored[2:], sampled[2:])
    assert not torch.equal(sampled[:2], explored[:2])   # the policy is broad: samples differ


def test_greedy_envs_replace_each_agents_action_at_the_rate():
    """In the greedy copies an agent's action differs from the greedy one when replaced
    (probability greedy_envs_epsilon) by one of the k - 1 others, each as likely (chi-square
    per greedy action, seeded)."""
    epsilon = 0.3
    algo, state = _algorithm(greedy_envs=1.0, greedy_envs_epsilon=epsilon)
    greedy = algo.greedy(state, None)
    generator = torch.Generator().manual_seed(4)
    explored = torch.stack([algo.explore(state, None, 0, generator) for _ in range(1000)])
    k = algo.policy.num_actions
    changed = (explored != greedy).float().mean().item()                  # 12,000 entries
    assert changed == pytest.approx(epsilon * (k - 1) / k, abs=0.02)
    for action in greedy.unique().tolist():        # replaced ones: uniform over the others
        where = (greedy == action).expand_as(explored)
        others = np.bincount(explored[where & (explored != action)].numpy(), minlength=k)
        assert stats.chisquare(np.delete(others, action)).pvalue > 1e-3, (action, others)


def test_greedy_envs_unsettled_explore_only_the_agents_the_env_reports_unsettled():
    """greedy_envs_agents="unsettled" at rate 1: a settled agent keeps its greedy action,
    an unsettled one's action is uniform over all k (chi-square per agent, seeded); and
    the random numbers drawn are those of greedy_envs_agents="all"."""
    algo, state = _algorithm("coverage", greedy_envs=1.0, greedy_envs_epsilon=1.0,
                             greedy_envs_agents="unsettled")
    settled = torch.tensor([[True, False, False], [False, True, True],
                            [False, False, False], [True, True, True]])
    greedy = algo.greedy(state, None)
    generator = torch.Generator().manual_seed(5)
    explored = torch.stack([algo.explore(state, None, 0, generator, settled)
                            for _ in range(600)])
    assert torch.equal(explored[:, settled], greedy[settled].expand(600, -1))
    k = algo.policy.num_actions
    for draws in explored[:, ~settled].T:
        assert stats.chisquare(np.bincount(draws.numpy(), minlength=k)).pvalue > 1e-3
    everyone, _ = _algorithm("coverage", greedy_envs=1.0, greedy_envs_epsilon=1.0)
    torch.testing.assert_close(
        algo.explore(state, None, 0, torch.Generator().manual_seed(6), settled)[~settled],
        everyone.explore(state, None, 0, torch.Generator().manual_seed(6))[~settled])


def test_greedy_envs_after_explore_only_the_copies_that_reached_that_step():
    """greedy_envs_after=3 at rate 1: the copies at an earlier step of their episode play
    the greedy joint action, the others' actions are uniform (chi-square per agent, seeded);
    with greedy_envs_agents="unsettled", only the unsettled agents of the late copies."""
    settled = torch.tensor([[True, False, False], [False, True, True],
                            [False, False, False], [True, False, True]])
    elapsed = torch.tensor([0, 2, 3, 7])
    late = torch.tensor([False, False, True, True])[:, None].expand(4, 3)
    k = 6
    for agents, explorers in (("all", late), ("unsettled", late & ~settled)):
        algo, state = _algorithm("coverage", greedy_envs=1.0, greedy_envs_epsilon=1.0,
                                 greedy_envs_agents=agents, greedy_envs_after=3)
        greedy = algo.greedy(state, None)
        generator = torch.Generator().manual_seed(5)
        explored = torch.stack([algo.explore(state, None, 0, generator, settled, elapsed)
                                for _ in range(600)])
        assert torch.equal(explored[:, ~explorers], greedy[~explorers].expand(600, -1))
        for draws in explored[:, explorers].T:
            assert stats.chisquare(np.bincount(draws.numpy(), minlength=k)).pvalue > 1e-3
    algo, state = _algorithm("coverage", greedy_envs=1.0, greedy_envs_epsilon=1.0,
                             greedy_envs_after=3)
    with pytest.raises(ValueError, match="greedy_envs_after=3 needs the env copies' elapsed"):
        algo.explore(state, None, 0, torch.Generator().manual_seed(0), settled)
    with pytest.raises(ValueError, match=r"greedy_envs_after=4 acts in the greedy env copies; "
                                         r"set greedy_envs above 0"):
        make_config("spn-ac", "lift", {"greedy_envs_after": 4})
    with pytest.raises(ValueError, match="greedy_envs_after"):
        make_config("spn-ac", "lift", {"greedy_envs": 0.5, "greedy_envs_after": -1})


def test_greedy_envs_branch_vary_the_greedy_action_in_the_copies_after_the_greedy_ones():
    """greedy_envs_branch at rate 1 on 6 copies, 2 greedy: copies 0-1 play the greedy joint
    action unchanged, copies 2-3 (set to their states by the loop) the same action with the
    explorers' actions uniform (chi-square per agent, seeded), copies 4-5 sample."""
    algo, _ = _algorithm("coverage", num_envs=6, greedy_envs=1 / 3, greedy_envs_epsilon=1.0,
                         greedy_envs_agents="unsettled", greedy_envs_after=2,
                         greedy_envs_branch=True)
    assert [a.tolist() for a in algo.branches] == [[0, 1], [2, 3]]
    envs = make_vec_env("coverage", 6, seed=0, num_agents=3, grid_size=4)
    envs.reset(seed=0)
    envs.copy_copies(*algo.branches)
    state = torch.as_tensor(envs.env.state())
    settled = torch.as_tensor(envs.settled())
    settled[[0, 2], 0] = True          # leaders and branches stand alike (the loop's copies)
    settled[[0, 2], 1:] = False
    elapsed = torch.tensor([4, 1, 4, 1, 0, 0])
    greedy = algo.greedy(state[:2], None)
    explorers = torch.tensor([[False, True, True], [False, False, False]])
    generator = torch.Generator().manual_seed(5)
    explored = torch.stack([algo.explore(state, None, 0, generator, settled, elapsed)
                            for _ in range(600)])
    assert torch.equal(explored[:, :2], greedy.expand(600, -1, -1))
    assert torch.equal(explored[:, 2:4][:, ~explorers], greedy[~explorers].expand(600, -1))
    for draws in explored[:, 2:4][:, explorers].T:
        assert stats.chisquare(np.bincount(draws.numpy(), minlength=6)).pvalue > 1e-3
    sampled = algo.sample(state, None, torch.Generator().manual_seed(9))
    again = algo.explore(state, None, 0, torch.Generator().manual_seed(9), settled, elapsed)
    assert torch.equal(again[4:], sampled[4:])


def test_greedy_envs_branch_is_refused_where_it_cannot_branch():
    with pytest.raises(ValueError, match=r"a branch copy for each of the 6 greedy copies "
                                         r"\(greedy_envs=0\.75 of num_envs=8\)"):
        make_config("spn-ac", "lift", {"greedy_envs": 0.75, "greedy_envs_branch": True})
    with pytest.raises(ValueError, match="a branch copy for each of the 0 greedy copies"):
        make_config("spn-ac", "lift", {"greedy_envs_branch": True})
    with pytest.raises(ValueError, match=r"needs n_step=1 and hindsight=False, got n_step=3, "
                                         r"hindsight=False"):
        make_config("spn-ac", "lift", {"greedy_envs": 0.5, "greedy_envs_branch": True,
                                       "n_step": 3})
    with pytest.raises(ValueError, match=r"needs an env that can set one copy to another's "
                                         r"state \(coverage can\); ParallelEnvVec cannot"):
        _algorithm(greedy_envs=0.5, greedy_envs_branch=True)


def test_greedy_envs_unsettled_is_refused_without_greedy_copies_or_settled_agents():
    with pytest.raises(ValueError, match=r"greedy_envs_agents='unsettled' acts in the greedy "
                                         r"env copies; set greedy_envs above 0"):
        make_config("spn-ac", "lift", {"greedy_envs_agents": "unsettled"})
    with pytest.raises(ValueError, match="greedy_envs_agents must be one of"):
        make_config("spn-ac", "lift", {"greedy_envs": 0.5, "greedy_envs_agents": "stray"})
    with pytest.raises(ValueError, match=r"needs an env that reports its settled agents "
                                         r"\(coverage does\); .* does not"):
        _algorithm(greedy_envs=0.5, greedy_envs_agents="unsettled")
    algo, state = _algorithm("coverage", greedy_envs=0.5, greedy_envs_agents="unsettled")
    with pytest.raises(ValueError, match="this env reports none"):
        algo.explore(state, None, 0, torch.Generator().manual_seed(0))


@pytest.mark.parametrize("share, num_envs, rows", [(0.0, 8, 0), (0.5, 16, 8), (1 / 16, 8, 1),
                                                   (0.3, 8, 2), (1.0, 3, 3)])
def test_greedy_rows_round_half_up(share, num_envs, rows):
    assert greedy_rows(share, num_envs) == rows


def test_greedy_envs_that_give_no_copy_are_refused_naming_the_values():
    with pytest.raises(ValueError, match=r"greedy_envs=0\.05 gives none of num_envs=8"):
        greedy_rows(0.05, 8)
    with pytest.raises(ValueError, match=r"greedy_envs=0\.1 gives none of num_envs=4"):
        make_config("spn-ac", "lift", {"greedy_envs": 0.1, "num_envs": 4})
    with pytest.raises(ValueError, match="greedy_envs"):
        make_config("spn-ac", "lift", {"greedy_envs": 1.5})


@pytest.mark.parametrize("agents, after, branch", [("all", 0, False), ("unsettled", 0, False),
                                                   ("unsettled", 3, True)])
def test_a_run_with_greedy_envs_saves_them_and_resumes_as_the_whole_run(tmp_path, agents,
                                                                        after, branch):
    """Through the training loop on coverage (which reports its settled agents):
    config.json keeps the options, and a run stopped half-way and resumed ends with the
    uninterrupted run's evaluations."""
    kwargs = dict(seed=0, env_kwargs=dict(num_agents=3, grid_size=4, max_steps=8),
                  num_envs=4, learning_starts=32, batch_size=16, eval_interval=80,
                  eval_episodes=4, greedy_envs=0.5, greedy_envs_epsilon=0.3,
                  greedy_envs_agents=agents, greedy_envs_after=after,
                  greedy_envs_branch=branch, progress=False, verbose=False)
    whole = spnpolicy.train("spn-ac", "coverage", total_steps=160, out_dir=tmp_path / "a",
                            **kwargs)
    spnpolicy.train("spn-ac", "coverage", total_steps=80, out_dir=tmp_path / "b", **kwargs)
    resumed = spnpolicy.train("spn-ac", "coverage", total_steps=160, out_dir=tmp_path / "b",
                              resume=True, **kwargs)
    saved = json.loads((tmp_path / "b" / "config.json").read_text())["config"]
    assert (saved["greedy_envs"], saved["greedy_envs_epsilon"], saved["greedy_envs_agents"],
            saved["greedy_envs_after"], saved["greedy_envs_branch"]) == (0.5, 0.3, agents, after,
                                                                       branch)
    assert [r["step"] for r in whole.history] == [0, 80, 160]
    timing = {"wall_time", "steps_per_second"}
    assert [{k: v for k, v in r.items() if k not in timing} for r in resumed.history] == [
        {k: v for k, v in r.items() if k not in timing} for r in whole.history]
