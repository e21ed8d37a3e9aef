"""Coverage is learned: fixed goals, relative observations and potential-based shaping.
The fast check runs by default; coverage-quick itself is marked slow."""

import pytest

import spnpolicy
from spnpolicy.bench.suites import get_suite

TINY = dict(num_agents=2, grid_size=3, max_steps=6, reward="sparse", layout="fixed",
            layout_seed=0, observation="relative")


def test_spn_ac_learns_a_tiny_fixed_layout():
    """2 agents, 3x3, 6 steps: the untrained greedy policy covers both goals in few
    episodes; after 3,000 shaped env steps spn-ac's greedy policy covers them in most
    episodes, with coverage's defaults (no mode guidance)."""
    result = spnpolicy.train("spn-ac", "coverage", seed=1, total_steps=3_000, env_kwargs=TINY,
                             shaping=True, num_envs=8, learning_starts=200, batch_size=64,
                             gradient_steps=2, policy_hidden=(32,), critic_hidden=(32,),
                             actor_lr=3e-3, critic_lr=3e-3, eval_interval=3_000,
                             eval_episodes=50, eval_stochastic=False)
    assert result.history[0]["success_rate"] <= 0.2
    assert result.eval["success_rate"] >= 0.8


@pytest.mark.slow
def test_spn_ac_learns_coverage_quick():
    """The coverage-quick task and protocol (3 agents, 6x6, 50 steps, fixed goals, relative
    observations, shaping, 100k env steps): greedy success >= 0.9 (a few CPU minutes)."""
    suite = get_suite("coverage-quick")
    result = spnpolicy.train("spn-ac", "coverage", seed=0, env_kwargs=suite.tasks[0].env_kwargs,
                             **suite.protocol.overrides(), **suite.config)
    assert result.history[0]["success_rate"] <= 0.05
    assert result.eval["success_rate"] >= 0.9


def test_coverage_trains_spn_ac_without_the_mode_guidance_and_lift_with_it():
    """The guidance is a per-env default: off on coverage, on where no env default says."""
    from spnpolicy.algos.registry import make_config
    assert make_config("spn-ac", "coverage").mode_guidance == 0.0
    assert make_config("meanfield-ac", "coverage").mode_guidance == 0.0
    assert make_config("spn-ac", "lift").mode_guidance == 0.1
    assert make_config("spn-ac", "coverage", {"mode_guidance": 0.2}).mode_guidance == 0.2
