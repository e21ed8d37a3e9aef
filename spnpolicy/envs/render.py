"""Drawing gridworld frames with numpy, and saving episodes as a GIF or a PNG sheet.

No display or pygame is needed: `GridworldRenderer.render` returns an RGB array
`[grid_size * cell_px, grid_size * cell_px, 3]` uint8 and `save_episode` writes frames with
Pillow (installed with matplotlib).

>>> from spnpolicy.envs import coverage_v0
>>> env = coverage_v0.parallel_env(num_agents=3, grid_size=6, render_mode="rgb_array")
>>> _ = env.reset(seed=0)
>>> env.render().shape
(96, 96, 3)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

# Matplotlib's tab10 colours, one per agent (cycled); broken agents are drawn grey.
AGENT_COLOURS = np.array(
    [[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189],
     [140, 86, 75], [227, 119, 194], [188, 189, 34], [23, 190, 207], [127, 127, 127]],
    dtype=np.uint8,
)
BROKEN_COLOUR = np.array([90, 90, 90], dtype=np.uint8)
GOAL_COLOUR = np.array([190, 230, 190], dtype=np.uint8)
COVERED_GOAL_COLOUR = np.array([60, 170, 60], dtype=np.uint8)
GRID_LINE_COLOUR = np.array([215, 215, 215], dtype=np.uint8)


class GridworldRenderer:
    """Draws agents (discs) and goals (squares, dark green once covered) on a grid.

    Args:
        grid_size: cells per side.
        cell_px: pixels per cell side (at least 4).
    """

    def __init__(self, grid_size: int, cell_px: int = 16) -> None:
        if cell_px < 4:
            raise ValueError(f"cell_px must be >= 4, got {cell_px}")
        self.grid_size = grid_size
        self.cell_px = cell_px
        centre = (cell_px - 1) / 2
        yy, xx = np.mgrid[:cell_px, :cell_px]
        self._disc = (yy - centre) ** 2 + (xx - centre) ** 2 <= (0.35 * cell_px) ** 2
        self._background = self._draw_background()

    def _draw_background(self) -> np.ndarray:
        side = self.grid_size * self.cell_px
        image = np.full((side, side, 3), 255, dtype=np.uint8)
        image[:: self.cell_px, :] = GRID_LINE_COLOUR
        image[:, :: self.cell_px] = GRID_LINE_COLOUR
        return image

    def _cell(self, image: np.ndarray, row: int, col: int) -> np.ndarray:
        c = self.cell_px
        return image[row * c : (row + 1) * c, col * c : (col + 1) * c]

    def render(self, agent_positions: np.ndarray, goal_positions: np.ndarray,
               broken_agents: Sequence[int] = ()) -> np.ndarray:
        """RGB frame `[H, W, 3]` uint8 for `agent_positions`, `goal_positions` `[n, 2]`."""
        image = self._background.copy()
        agent_cells = {tuple(p) for p in np.asarray(agent_positions).tolist()}
        inset = max(1, self.cell_px // 8)
        for row, col in np.asarray(goal_positions).tolist():
            colour = COVERED_GOAL_COLOUR if (row, col) in agent_cells else GOAL_COLOUR
            self._cell(image, row, col)[inset:-inset, inset:-inset] = colour
        for index, (row, col) in enumerate(np.asarray(agent_positions).tolist()):
            broken = index in broken_agents
            colour = BROKEN_COLOUR if broken else AGENT_COLOURS[index % len(AGENT_COLOURS)]
            self._cell(image, row, col)[self._disc] = colour
        return image


def save_episode(frames: Sequence[np.ndarray], path: str | Path, fps: float = 5.0,
                 columns: int = 10) -> Path:
    """Write `frames` (each `[H, W, 3]` uint8, equal shapes) to `path`; returns the path.

    `.gif`: an animation at `fps` frames per second, looping. `.png`: a sheet of the frames
    in reading order, `columns` per row, separated by 2 white pixels.
    """
    from PIL import Image

    path = Path(path)
    if not frames:
        raise ValueError("frames must hold at least one frame, got none")
    arrays = [np.asarray(frame) for frame in frames]
    shape = arrays[0].shape
    if len(shape) != 3 or shape[2] != 3 or any(a.shape != shape for a in arrays):
        shapes = sorted({a.shape for a in arrays})
        raise ValueError(f"frames must all have one shape [H, W, 3], got shapes {shapes}")
    arrays = [a.astype(np.uint8, copy=False) for a in arrays]
    suffix = path.suffix.lower()
    if suffix == ".gif":
        images = [Image.fromarray(a) for a in arrays]
        images[0].save(path, save_all=True, append_images=images[1:],
                       duration=round(1000 / fps), loop=0)
    elif suffix == ".png":
        Image.fromarray(_sheet(arrays, columns)).save(path)
    else:
        raise ValueError(f"path must end in .gif or .png, got {str(path)!r}")
    return path


def _sheet(frames: list[np.ndarray], columns: int, gap: int = 2) -> np.ndarray:
    """Frames tiled `columns` per row into one `[rows * (H + gap) - gap, ..., 3]` image."""
    height, width, _ = frames[0].shape
    columns = max(1, min(columns, len(frames)))
    rows = math.ceil(len(frames) / columns)
    sheet = np.full((rows * (height + gap) - gap, columns * (width + gap) - gap, 3), 255,
                    dtype=np.uint8)
    for index, frame in enumerate(frames):
        top, left = divmod(index, columns)
        top, left = top * (height + gap), left * (width + gap)
        sheet[top : top + height, left : left + width] = frame
    return sheet
