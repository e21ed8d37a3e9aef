"""spnpolicy.make_env: every name, and errors that name the argument."""

import sys

import numpy as np
import pytest
from pettingzoo import ParallelEnv

import spnpolicy
from spnpolicy.envs import ENV_NAMES, coverage_v0, matrix_v0

BUILT_IN = ["coverage", *matrix_v0.GAMES]


@pytest.mark.parametrize("name", BUILT_IN)
def test_built_in_names_make_parallel_envs(name):
    env = spnpolicy.make_env(name)
    assert isinstance(env, ParallelEnv)
    env.reset(seed=0)


def test_names_listed():
    assert set(BUILT_IN) <= set(ENV_NAMES)
    assert {"mpe/simple_spread", "mpe/simple_speaker_listener", "mpe/simple_tag",
            "mpe/simple_adversary"} <= set(ENV_NAMES)


def test_kwargs_reach_the_env():
    env = spnpolicy.make_env("coverage", num_agents=3, grid_size=6, reward="distance",
                             broken_agents=(2,))
    assert isinstance(env, coverage_v0.CoverageEnv)
    assert env.possible_agents == ["agent_0", "agent_1", "agent_2"]
    assert env.config.grid_size == 6 and env.config.broken_agents == (2,)
    assert spnpolicy.make_env("penalty", k=50).payoff[0, 0] == -50
    assert spnpolicy.make_env("linear", episode_length=4).episode_length == 4


def test_unknown_name_lists_the_valid_names():
    with pytest.raises(ValueError, match="unknown env 'gridworld'") as error:
        spnpolicy.make_env("gridworld")
    for name in ENV_NAMES:
        assert name in str(error.value)
    assert "lbf/" in str(error.value)
    with pytest.raises(ValueError, match="unknown env 'mpe/simple_crypto'"):
        spnpolicy.make_env("mpe/simple_crypto")
    with pytest.raises(ValueError, match="name"):
        spnpolicy.make_env(3)


@pytest.mark.parametrize("name, kwargs, argument", [
    ("coverage", {"num_agents": 0}, "num_agents"),
    ("coverage", {"num_agents": 6, "grid_size": 2}, "grid_size"),
    ("coverage", {"reward": "shaped"}, "reward"),
    ("coverage", {"agents": 3}, "agents"),
    ("climbing", {"game": "linear"}, "game"),
    ("climbing", {"k": 3}, "k"),
    ("penalty", {"k": -3}, "k"),
])
def test_bad_kwargs_name_the_argument(name, kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        spnpolicy.make_env(name, **kwargs)


@pytest.mark.parametrize("name, modules, extra", [
    ("mpe/simple_spread", ("mpe2", "mpe2.simple_spread_v3"), "mpe"),
    ("lbf/Foraging-8x8-2p-3f-v3", ("lbforaging",), "lbf"),
])
def test_missing_extra_says_what_to_install(monkeypatch, name, modules, extra):
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ImportError, match=rf"spnpolicy\[{extra}\]"):
        spnpolicy.make_env(name)


def test_action_names_follow_the_envs_own_actions():
    from spnpolicy.envs.registry import action_names

    assert action_names("coverage", 6)[:2] == ("noop", "up")
    assert action_names("climbing", 3) == ("0", "1", "2")
    assert action_names("mpe/simple_speaker_listener", 5) == ("0", "1", "2", "3", "4")
    assert action_names("lbf/Foraging-8x8-2p-3f-v3", 6) == (
        "none", "north", "south", "west", "east", "load")
    assert action_names("mpe/simple_spread", 5) == ("noop", "left", "right", "down", "up")


def test_mpe_moves_are_named_by_what_they_do():
    pytest.importorskip("mpe2")
    from spnpolicy.envs.registry import MPE_MOVES

    env = spnpolicy.make_env("mpe/simple_spread", N=1, max_cycles=5)
    env.reset(seed=0)
    for action, name in enumerate(MPE_MOVES):
        env.reset(seed=0)
        agent = env.unwrapped.world.agents[0]
        env.step({env.agents[0]: action})
        moved = agent.state.p_vel                 # the move's first effect: the velocity
        expected = {"noop": (0, 0), "left": (-1, 0), "right": (1, 0), "down": (0, -1),
                    "up": (0, 1)}[name]
        assert tuple(np.sign(np.round(moved, 6)).astype(int)) == expected, name


def test_lbf_actions_are_lbforagings_enum():
    lbf = pytest.importorskip("lbforaging.foraging.environment")
    from spnpolicy.envs.registry import LBF_ACTIONS

    assert LBF_ACTIONS == tuple(a.name.lower() for a in lbf.Action)
