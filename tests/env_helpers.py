"""Helpers shared by the env tests (import as ``tests.env_helpers``)."""

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np


def stacked(values: dict[str, Any], agents: list[str]) -> np.ndarray:
    """A PettingZoo per-agent dict as one array `[n, ...]`, in the order of `agents`."""
    return np.stack([values[agent] for agent in agents])


def replay_in_lockstep(vec, envs: list, seed: int, draw_actions: Callable[[], np.ndarray],
                       steps: int) -> Iterator[tuple[int, Any, dict, dict, bool]]:
    """Check that copy e of the batched `vec` (made with `seed`) replays `envs[e]`, its
    one-copy ParallelEnv, reset with `reset(seed=seed + e)` and with `reset()` after each
    episode: the same observations, states, (team) rewards, terminations, truncations and
    `success`, before and after auto-resets, over `steps` joint actions `[E, n]` from
    `draw_actions()`.

    Yields `(e, env, info, ref_info, ended)` for every copy after every step, for the env's
    own checks: `info` is the vec's step info, `ref_info` `env`'s info of `agent_0`, and
    `env` has already been reset when the episode `ended`.
    """
    agents = envs[0].possible_agents
    obs = vec.reset()
    for e, env in enumerate(envs):
        first, _ = env.reset(seed=seed + e)
        np.testing.assert_array_equal(obs[e], stacked(first, agents))
    np.testing.assert_array_equal(vec.state(), np.stack([env.state() for env in envs]))
    for _ in range(steps):
        actions = draw_actions()
        obs, reward, terminated, truncated, info = vec.step(actions)
        state = vec.state()
        for e, env in enumerate(envs):
            ref_obs, ref_rew, ref_term, ref_trunc, ref_info = env.step(
                dict(zip(agents, actions[e].tolist(), strict=True)))
            np.testing.assert_array_equal(info["final_observation"][e], stacked(ref_obs, agents))
            np.testing.assert_array_equal(info["final_state"][e], env.state())
            assert reward[e] == ref_rew["agent_0"] == ref_info["agent_0"]["team_reward"]
            assert terminated[e] == ref_term["agent_0"]
            assert truncated[e] == ref_trunc["agent_0"]
            assert info["success"][e] == ref_info["agent_0"]["success"]
            ended = bool(terminated[e] or truncated[e])
            if ended:
                ref_obs, _ = env.reset()
            np.testing.assert_array_equal(obs[e], stacked(ref_obs, agents))
            np.testing.assert_array_equal(state[e], env.state())
            yield e, env, info, ref_info["agent_0"], ended
