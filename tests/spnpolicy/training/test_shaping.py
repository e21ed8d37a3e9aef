"""Reward shaping with the env's potential: telescoping over episodes (both forms), n-step
and hindsight rows, errors, every algorithm honouring ``shaping``, the loops honouring
``shaping_form``, and exact resumption of a shaped run."""

import numpy as np
import pytest
import torch

import spnpolicy
from spnpolicy.algos.registry import algorithm_names
from spnpolicy.envs import coverage_core as core
from spnpolicy.training import ParallelEnvVec, Runner, TransitionStream, make_vec_env
from spnpolicy.training.shaping import PotentialShaping

from tests.run_helpers import assert_same_run

ENV = dict(num_agents=2, grid_size=3, max_steps=12, reward="sparse")


def rollout(steps, seed=0, num_envs=3, **env):
    envs = make_vec_env("coverage", num_envs, seed=seed, **(ENV | env))
    runner = Runner(envs)
    runner.reset(seed=seed)
    rng = np.random.default_rng(seed)
    return envs, [runner.step(rng.integers(0, 6, size=(num_envs, envs.num_agents)))
                  for _ in range(steps)]


@pytest.mark.parametrize("env", [{}, {"layout": "fixed", "observation": "relative"},
                                 {"reward": "coverage"}])
def test_shaped_rewards_telescope_over_every_episode(env):
    gamma = 0.9
    envs, transitions = rollout(200, **env)
    stream = TransitionStream(envs, n_step=1, gamma=gamma, shaping=True)
    config = envs.env.config
    episodes = np.zeros(envs.num_envs)          # discounted shaped return so far
    returns, t = np.zeros(envs.num_envs), np.zeros(envs.num_envs, int)
    start = np.zeros(envs.num_envs)            # Phi(s_0) of each copy's episode
    checked = 0
    for transition in transitions:
        start = np.where(t == 0, core.state_potential(transition.state, config), start)
        rows = stream.push(transition)          # n = 1: one row per copy, in copy order
        assert len(rows.reward) == envs.num_envs
        episodes += gamma**t * rows.reward
        returns += gamma**t * transition.reward
        t += 1
        for e in np.flatnonzero((transition.terminated > 0) | transition.truncated):
            end = core.state_potential(transition.next_state[e], config)
            end *= 1.0 - transition.terminated[e]
            expected = returns[e] + gamma ** t[e] * end - start[e]
            assert episodes[e] == pytest.approx(expected, abs=1e-5)
            checked += 1
            episodes[e], returns[e], t[e] = 0.0, 0.0, 0
    assert checked >= 3 * envs.num_envs


def test_nstep_rows_equal_discounted_sums_of_shaped_one_step_rewards():
    gamma, n = 0.95, 4
    envs, transitions = rollout(150, seed=3, num_envs=1)
    one = TransitionStream(envs, 1, gamma, shaping=True)
    many = TransitionStream(envs, n, gamma, shaping=True)
    shaped = np.concatenate([one.push(tr).reward for tr in transitions]).astype(np.float64)
    rows = [many.push(tr) for tr in transitions]
    reward = np.concatenate([r.reward for r in rows])
    steps = np.concatenate([r.steps for r in rows])
    assert (steps < n).any() and (steps == n).any()
    for j, (value, m) in enumerate(zip(reward, steps)):  # one copy: row j starts at step j
        assert value == pytest.approx(sum(gamma**i * shaped[j + i] for i in range(m)),
                                      abs=1e-5)


def test_hindsight_rows_are_shaped_with_the_relabelled_potential():
    gamma = 0.9
    envs, transitions = rollout(60, seed=5)
    shaped = TransitionStream(envs, 2, gamma, hindsight=True, seed=1, shaping=True)
    plain = TransitionStream(envs, 2, gamma, hindsight=True, seed=1)
    config = envs.env.config
    relabelled = 0
    for tr in transitions:
        out, base = shaped.push(tr), plain.push(tr)
        np.testing.assert_array_equal(out.next_state, base.next_state)
        expected = (base.reward + gamma**base.steps * (1 - base.terminated)
                    * core.state_potential(base.next_state, config)
                    - core.state_potential(base.state, config))
        np.testing.assert_allclose(out.reward, expected, rtol=1e-5, atol=1e-6)
        relabelled += int((base.steps == 1).sum())
    assert relabelled > 0


def test_progress_rows_add_the_undiscounted_potential_difference():
    """Form 'progress': every row gains (1 - terminated) Phi(s') - Phi(s), so an episode's
    undiscounted shaped return is R + (1 - terminated) Phi(s_T) - Phi(s_0); on 3x3 with 2
    agents many episodes end in success, so the terminal case is covered."""
    envs, transitions = rollout(300, seed=2, grid_size=3, max_steps=30)
    stream = TransitionStream(envs, 1, 0.9, shaping=True, shaping_form="progress")
    config = envs.env.config
    shaped_sum, plain_sum = np.zeros(envs.num_envs), np.zeros(envs.num_envs)
    start, fresh = np.zeros(envs.num_envs), np.ones(envs.num_envs, bool)
    ended = {"terminated": 0, "truncated": 0}
    for tr in transitions:
        rows = stream.push(tr)
        begin = core.state_potential(tr.state, config)
        end = core.state_potential(tr.next_state, config) * (1.0 - tr.terminated)
        np.testing.assert_allclose(rows.reward, tr.reward + end - begin, atol=1e-6)
        start = np.where(fresh, begin, start)
        shaped_sum += rows.reward
        plain_sum += tr.reward
        fresh = (tr.terminated > 0) | tr.truncated
        for e in np.flatnonzero(fresh):
            assert shaped_sum[e] == pytest.approx(plain_sum[e] + end[e] - start[e], abs=1e-5)
            ended["terminated" if tr.terminated[e] else "truncated"] += 1
        shaped_sum[fresh], plain_sum[fresh] = 0.0, 0.0
    assert ended["terminated"] >= 5 and ended["truncated"] >= 1


def test_progress_needs_one_step_rows_and_known_forms_only():
    envs, transitions = rollout(10, num_envs=1)
    stream = TransitionStream(envs, 3, 0.9, shaping=True, shaping_form="progress")
    with pytest.raises(ValueError, match="one-step rows"):
        for tr in transitions:
            stream.push(tr)
    with pytest.raises(ValueError, match="n_step=3"):
        spnpolicy.train("vdn", "coverage", seed=0, shaping=True, shaping_form="progress",
                        n_step=3)
    with pytest.raises(ValueError, match="shaping_form"):
        PotentialShaping(envs, 0.9, form="discounted")
    with pytest.raises(ValueError, match="shaping_form"):
        spnpolicy.train("ippo", "coverage", seed=0, shaping=True, shaping_form="sparse")


@pytest.mark.parametrize("algo", ["vdn", "ia2c"])
def test_the_training_loops_pass_the_shaping_form_on(algo):
    """The off-policy (vdn) and on-policy (ia2c) loops, which every algorithm runs in: the
    same seed with the two forms trains different weights (a loop that dropped the field
    would train the same run twice)."""
    config = dict(env_kwargs=ENV, shaping=True, gamma=0.9, num_envs=4, total_steps=160,
                  eval_interval=160, eval_episodes=1, checkpoint_interval=160)
    if algo == "vdn":
        config |= dict(learning_starts=32, batch_size=16, hidden=(16,))
    runs = [spnpolicy.train(algo, "coverage", seed=0, shaping_form=form, **config)
            for form in ("potential", "progress")]
    weights = [list(run.agent.state_dict().values()) for run in runs]
    assert any(not torch.equal(a, b) for a, b in zip(*weights, strict=True))


def test_terminal_potential_is_zero_and_success_keeps_its_reward():
    envs, _ = rollout(1)
    shaping = PotentialShaping(envs, 0.99)
    config = envs.env.config
    agents = np.array([[[0, 0], [2, 2]]])
    goals = np.array([[[0, 0], [2, 2]]])
    state = core.global_state(agents, goals, np.ones((1, 2), bool), 1, config)
    assert envs.potential(state)[0] == 0.0


def test_shaping_without_a_potential_names_shaping():
    envs = make_vec_env("climbing", 2, seed=0)
    with pytest.raises(ValueError, match="shaping"):
        TransitionStream(envs, 1, 0.99, shaping=True)
    with pytest.raises(ValueError, match="shaping"):
        spnpolicy.train("vdn", "coverage", seed=0, shaping="yes")


@pytest.mark.parametrize("algo", algorithm_names())
def test_every_algorithm_honours_shaping(algo):
    """shaping=True on an env without a potential is refused by every algorithm's loop (an
    algorithm that ignored the field would train without complaint)."""
    with pytest.raises(ValueError, match="shaping"):
        spnpolicy.train(algo, "climbing", seed=0, shaping=True, total_steps=400,
                        eval_interval=400, eval_episodes=1)


def test_shaped_run_resumes_exactly(tmp_path):
    config = dict(env_kwargs=dict(ENV, layout="fixed", observation="relative"), shaping=True,
                  num_envs=4, learning_starts=32, batch_size=16, n_step=3, hidden=(16,),
                  eval_interval=96, checkpoint_interval=96, eval_episodes=2,
                  target_update_interval=40)
    whole = spnpolicy.train("vdn", "coverage", seed=1, out_dir=tmp_path / "a",
                            total_steps=192, **config)
    spnpolicy.train("vdn", "coverage", seed=1, out_dir=tmp_path / "b", total_steps=96,
                    **config)
    resumed = spnpolicy.train("vdn", "coverage", seed=1, out_dir=tmp_path / "b",
                              resume=True, total_steps=192, **config)
    assert_same_run(whole, resumed)


def test_an_own_env_with_a_state_potential_is_shaped():
    # shaping worked on coverage only: an own env could not give its potential
    from pettingzoo.test import parallel_api_test

    from tests.spnpolicy.training.test_observation_spaces import Signal

    class Walk(Signal):
        """Signal with a state and a potential: minus the distance of the step count
        from 2."""

        def state(self):
            return np.array([self.t, self.signal], np.float32)

        def state_potential(self, state):
            return -abs(float(state[0]) - 2.0)

    parallel_api_test(Walk(), num_cycles=10)
    envs = ParallelEnvVec(Walk, 3, seed=0)
    runner = Runner(envs)
    runner.reset(seed=0)
    stream = TransitionStream(envs, n_step=1, gamma=0.9, shaping=True)
    transition = runner.step(np.zeros((3, 2), dtype=int))
    rows = stream.push(transition)
    start = -np.abs(transition.state[:, 0] - 2.0)
    end = -np.abs(transition.next_state[:, 0] - 2.0) * (1.0 - transition.terminated)
    np.testing.assert_allclose(rows.reward, transition.reward + 0.9 * end - start, rtol=1e-6)
    result = spnpolicy.train("vdn", Walk, seed=0, total_steps=96, num_envs=4,
                             learning_starts=48, batch_size=16, hidden=(16,), shaping=True,
                             eval_interval=96, eval_episodes=2, progress=False, verbose=False)
    assert result.history[-1]["step"] == 96
