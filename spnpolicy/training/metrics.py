"""Training metrics (losses, entropy, ...) averaged over the updates between evaluations."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["UpdateMeans"]


class UpdateMeans:
    """Sums of per-update scalars; :meth:`pop` returns their means and starts afresh.

    ```python
    means = UpdateMeans()
    means.add(loss=loss, entropy=entropy.mean())   # once per gradient step
    record |= means.pop()                          # at an evaluation: {"loss": ..., ...}
    ```
    Checkpointed with :meth:`state_dict` so a resumed run logs the same means.
    """

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.count = 0

    def add(self, **values: float | torch.Tensor) -> None:
        """One update's scalars (floats or one-element tensors)."""
        for name, value in values.items():
            value = float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
            self.sums[name] = self.sums.get(name, 0.0) + value
        self.count += 1

    def pop(self) -> dict[str, float]:
        """The mean of each scalar since the last pop (empty before any update)."""
        means = {name: total / max(self.count, 1) for name, total in self.sums.items()}
        self.sums, self.count = {}, 0
        return means

    def state_dict(self) -> dict[str, Any]:
        return {"sum": dict(self.sums), "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sums, self.count = dict(state["sum"]), int(state["count"])
