"""mpe2 tasks through make_env (skipped without the mpe extra)."""

import pytest
from pettingzoo.test import parallel_api_test, parallel_seed_test

import spnpolicy
from spnpolicy.envs import mpe

pytest.importorskip("mpe2")


@pytest.mark.parametrize("task", sorted(mpe.MPE_TASKS))
def test_pettingzoo_api_and_seeding(task):
    parallel_api_test(spnpolicy.make_env(f"mpe/{task}"), num_cycles=50)
    parallel_seed_test(lambda: spnpolicy.make_env(f"mpe/{task}"))


def test_actions_are_discrete_and_kwargs_reach_mpe2():
    env = spnpolicy.make_env("mpe/simple_spread", N=4, max_cycles=10)
    assert env.possible_agents == [f"agent_{i}" for i in range(4)]
    assert env.action_space("agent_0").n == 5


@pytest.mark.parametrize("kwargs, argument", [
    ({"continuous_actions": True}, "continuous_actions"),
    ({"num_agents": 3}, "num_agents"),
])
def test_bad_kwargs_name_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        spnpolicy.make_env("mpe/simple_spread", **kwargs)
