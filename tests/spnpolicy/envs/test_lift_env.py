"""The lift task: PettingZoo contract, the lift and penalty rules, the vectorised twin."""

import itertools

import numpy as np
import pytest
from pettingzoo.test import parallel_api_test, parallel_seed_test

import spnpolicy
from spnpolicy.envs import lift
from spnpolicy.envs.lift import APPROACH, LIFT, RETREAT, WAIT
from tests.env_helpers import replay_in_lockstep


@pytest.mark.parametrize("kwargs", [{}, {"num_agents": 3, "penalty": 1.0},
                                    {"num_agents": 4, "required": 2, "distance": 0}])
def test_pettingzoo_api_and_seeding(kwargs):
    parallel_api_test(lift.parallel_env(**kwargs), num_cycles=100)
    parallel_seed_test(lambda: lift.parallel_env(**kwargs))


def at(env, distances):
    """Reset `env` and put its agents at `distances`."""
    env.reset(seed=0)
    env._vec.distances[0] = distances
    return env


def step(env, joint):
    return env.step({a: u for a, u in zip(env.possible_agents, joint)})


@pytest.mark.parametrize("n", [2, 3])
def test_every_joint_action_at_the_object(n):
    """All at the object: only 'everyone lifts' succeeds; any other lift is a failed
    attempt costing the penalty once; no lift costs nothing."""
    env = lift.parallel_env(num_agents=n, penalty=0.7)
    for joint in itertools.product(range(4), repeat=n):
        _, rewards, terminated, truncated, infos = step(at(env, [0] * n), joint)
        lifts = sum(u == LIFT for u in joint)
        expected = 1.0 if lifts == n else (-0.7 if lifts else 0.0)
        assert rewards == dict.fromkeys(env.possible_agents, pytest.approx(expected))
        assert infos["agent_0"]["success"] == (lifts == n)
        assert infos["agent_0"]["attempt"] == (lifts > 0)
        assert all(terminated.values()) == (lifts == n) and not any(truncated.values())


def test_a_lift_needs_the_lifters_at_the_object():
    env = lift.parallel_env(num_agents=2, penalty=0.5)
    _, rewards, terminated, _, infos = step(at(env, [0, 1]), (LIFT, LIFT))
    assert rewards["agent_0"] == -0.5 and not terminated["agent_0"]
    assert infos["agent_0"]["at_object"] == 1


def test_required_agents_of_a_larger_team():
    env = lift.parallel_env(num_agents=3, required=2, penalty=0.5)
    assert step(at(env, [0, 0, 2]), (LIFT, LIFT, WAIT))[1]["agent_0"] == 1.0
    assert step(at(env, [0, 0, 2]), (LIFT, WAIT, LIFT))[1]["agent_0"] == -0.5


def test_moves_are_clipped_to_the_track():
    env = lift.parallel_env(num_agents=2, distance=2)
    at(env, [0, 2])
    step(env, (APPROACH, RETREAT))
    np.testing.assert_array_equal(env._vec.distances[0], [0, 2])
    step(env, (RETREAT, APPROACH))
    np.testing.assert_array_equal(env._vec.distances[0], [1, 1])
    np.testing.assert_allclose(env.state(), [0.5, 0.5, 2 / 12])


def test_the_deadline_terminates_and_observation_layout():
    """Time is in the state, so reaching max_steps ends the task (terminated, no success),
    not a truncation to bootstrap through."""
    env = lift.parallel_env(num_agents=2, max_steps=3)
    observations, _ = env.reset(seed=1)
    state = env.state()
    np.testing.assert_array_equal(observations["agent_1"], np.r_[state, 0.0, 1.0])
    for t in range(3):
        assert env.agents
        _, _, terminated, truncated, infos = step(env, (WAIT, WAIT))
    assert terminated["agent_0"] and not truncated["agent_0"] and env.agents == []
    assert not infos["agent_0"]["success"]


@pytest.mark.parametrize("bad, match", [({"penalty": -1}, "penalty"),
                                        ({"penalty": float("nan")}, "penalty"),
                                        ({"num_agents": 2, "required": 3}, "required"),
                                        ({"distance": -1}, "distance"),
                                        ({"max_steps": 0}, "max_steps")])
def test_bad_arguments_name_themselves(bad, match):
    with pytest.raises(ValueError, match=match):
        lift.parallel_env(**bad)


def test_vec_env_replays_the_parallel_env_with_seed_plus_copy():
    """Copy e of LiftVecEnv(seed=s) is parallel_env reset with seed s + e, then reset()
    without a seed after each episode; over random joint actions, across resets."""
    E, n, seed = 3, 3, 11
    vec = lift.LiftVecEnv(E, num_agents=n, penalty=0.3, max_steps=5, seed=seed)
    envs = [lift.parallel_env(num_agents=n, penalty=0.3, max_steps=5) for _ in range(E)]
    rng = np.random.default_rng(0)

    def draw_actions():
        actions = rng.integers(0, 4, size=(E, n))
        actions[rng.random(E) < 0.3] = LIFT
        return actions

    ends = sum(ended for *_, ended in replay_in_lockstep(vec, envs, seed, draw_actions, 60))
    assert ends >= E


def test_registry_names_and_describes_the_task():
    env = spnpolicy.make_env("lift", num_agents=3, penalty=0.2)
    assert env.possible_agents == ["agent_0", "agent_1", "agent_2"]
    assert spnpolicy.envs.registry.action_names("lift", 4) == lift.ACTION_NAMES
    assert "lift" in spnpolicy.envs.registry.ENV_DESCRIPTIONS
    with pytest.raises(ValueError, match="unknown argument"):
        spnpolicy.make_env("lift", agents=2)


def test_failed_agents_wait_and_the_runner_stores_what_was_executed():
    """An announced failure makes the agent wait whatever it chose; the env reports the
    executed action, and the training loop's transition holds it, not the chosen one."""
    from spnpolicy.training import make_vec_env
    from spnpolicy.training.runner import Runner
    parallel_api_test(lift.parallel_env(failure_prob=0.5, observe_failures=True),
                      num_cycles=100)
    env = lift.parallel_env(num_agents=3, failure_prob=0.4, observe_failures=True)
    env.reset(seed=3)
    seen = 0
    while env.agents:
        stuck = env.stuck
        state = env.state()
        np.testing.assert_array_equal(state[4:], stuck)         # the oracle's flags
        _, _, _, _, infos = step(env, (LIFT, RETREAT, LIFT))
        executed = [infos[a]["executed_action"] for a in env.possible_agents]
        assert executed == [WAIT if s else u for s, u in zip(stuck, (LIFT, RETREAT, LIFT))]
        seen += stuck.sum()
    assert seen > 0
    envs = make_vec_env("lift", 4, seed=0, num_agents=2, failure_prob=0.5)
    runner = Runner(envs)
    runner.reset(seed=0)
    stored = np.concatenate([runner.step(np.full((4, 2), LIFT)).actions for _ in range(20)])
    assert (stored == WAIT).any() and (stored == LIFT).any()
    assert set(np.unique(stored)) <= {WAIT, LIFT}


def test_without_failures_nothing_is_overridden():
    env = lift.parallel_env(num_agents=2)
    env.reset(seed=0)
    infos = step(env, (LIFT, WAIT))[4]
    assert "executed_action" not in infos["agent_0"] and not env.stuck.any()
