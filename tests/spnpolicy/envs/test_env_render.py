"""Rendering the coverage gridworld and saving episodes."""

import numpy as np
import pytest
from PIL import Image

from spnpolicy.envs import coverage_v0
from spnpolicy.envs.render import (
    AGENT_COLOURS,
    BROKEN_COLOUR,
    COVERED_GOAL_COLOUR,
    GOAL_COLOUR,
    GridworldRenderer,
    save_episode,
)


def episode_frames(steps=4):
    env = coverage_v0.parallel_env(num_agents=3, grid_size=5, render_mode="rgb_array")
    env.reset(seed=0)
    frames = [env.render()]
    for _ in range(steps):
        env.step({agent: 4 for agent in env.agents})
        frames.append(env.render())
    return frames


def test_frame_shows_agents_and_goals_where_they_are():
    renderer = GridworldRenderer(grid_size=4, cell_px=8)
    frame = renderer.render(np.array([[0, 0], [3, 2]]), np.array([[0, 0], [1, 3]]),
                            broken_agents=(1,))
    assert frame.shape == (32, 32, 3) and frame.dtype == np.uint8
    np.testing.assert_array_equal(frame[4, 4], AGENT_COLOURS[0])        # agent 0's centre
    np.testing.assert_array_equal(frame[3 * 8 + 4, 2 * 8 + 4], BROKEN_COLOUR)
    np.testing.assert_array_equal(frame[1 * 8 + 4, 3 * 8 + 4], GOAL_COLOUR)
    np.testing.assert_array_equal(frame[1, 1 + 1], COVERED_GOAL_COLOUR)  # corner of goal (0, 0)


def test_render_without_a_render_mode_returns_none():
    env = coverage_v0.parallel_env(num_agents=2, grid_size=3)
    env.reset(seed=0)
    with pytest.warns(UserWarning, match="render_mode"):
        assert env.render() is None


@pytest.mark.parametrize("suffix", [".gif", ".png"])
def test_save_episode_writes_a_readable_image(tmp_path, suffix):
    frames = episode_frames()
    path = save_episode(frames, tmp_path / f"episode{suffix}", columns=2)
    with Image.open(path) as image:
        if suffix == ".gif":
            assert image.n_frames == len(frames) and image.size == (80, 80)
        else:
            assert image.size == (2 * 80 + 2, 3 * 80 + 2 * 2)


def test_save_episode_refuses_bad_input(tmp_path):
    with pytest.raises(ValueError, match="path"):
        save_episode(episode_frames(1), tmp_path / "episode.mp4")
    with pytest.raises(ValueError, match="frames"):
        save_episode([], tmp_path / "episode.gif")
    with pytest.raises(ValueError, match="frames"):
        save_episode([np.zeros((8, 8, 3)), np.zeros((4, 8, 3))], tmp_path / "episode.gif")
