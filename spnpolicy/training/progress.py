"""A tqdm progress bar over environment steps (on stderr), showing env steps/s."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm

__all__ = ["ProgressBar"]


class ProgressBar:
    """``total`` env steps; ``initial`` for a resumed run; a no-op when ``enabled`` is False."""

    def __init__(self, total: int, initial: int = 0, enabled: bool = True,
                 description: str | None = None) -> None:
        self._bar = tqdm(total=total, initial=initial, unit="step", unit_scale=True,
                         desc=description, file=sys.stderr, dynamic_ncols=True,
                         smoothing=0.1) if enabled else None

    def update(self, steps: int) -> None:
        if self._bar is not None:
            self._bar.update(steps)

    def set_postfix(self, **values: float) -> None:
        if self._bar is not None:
            self._bar.set_postfix({k: f"{v:.3g}" for k, v in values.items()}, refresh=False)

    def write(self, line: str) -> None:
        """Print a line (to stdout) without breaking the bar."""
        tqdm.write(line, file=sys.stdout)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
