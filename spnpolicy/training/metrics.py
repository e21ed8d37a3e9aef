"""Training metrics: losses, entropy, ... averaged over the updates between evaluations
(:class:`UpdateMeans`), and the training records logged between them
(:class:`TrainingMeans`: the training episodes' returns and lengths, and the losses)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

from spnpolicy.training.runner import Episode

__all__ = ["TrainingMeans", "UpdateMeans"]


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


class TrainingMeans:
    """What a training record reports: the training episodes that ended and the means of
    the updates' scalars, since the last :meth:`pop`.

    ```python
    training = TrainingMeans()
    training.add_update(metrics)                    # once per gradient step
    training.add_episodes(runner.pop_episodes())    # once per env step of every copy
    if session.log_due(step):
        session.record_training(step, training.pop(envs.has_success))
    ```
    Episodes are those the runner played while collecting (exploring, with the env's own
    reward, not a shaped one). Checkpointed with :meth:`state_dict`.
    """

    def __init__(self) -> None:
        self.updates = UpdateMeans()
        self.episodes = 0
        self.return_sum = 0.0
        self.length_sum = 0
        self.successes = 0

    def add_update(self, values: Mapping[str, float | torch.Tensor]) -> None:
        """One update's scalars (floats or one-element tensors)."""
        self.updates.add(**values)

    def add_episodes(self, episodes: Iterable[Episode]) -> None:
        for episode in episodes:
            self.episodes += 1
            self.return_sum += episode.ret
            self.length_sum += episode.length
            self.successes += bool(episode.success)

    def pop(self, has_success: bool) -> dict[str, float]:
        """``episodes`` (how many ended) with their ``return_mean`` and ``length_mean`` (and
        ``success_rate`` when ``has_success``: the env reports success) when any ended,
        then the updates' means (:meth:`UpdateMeans.pop`); starts afresh."""
        record: dict[str, float] = {"episodes": self.episodes}
        if self.episodes:
            record["return_mean"] = self.return_sum / self.episodes
            record["length_mean"] = self.length_sum / self.episodes
            if has_success:
                record["success_rate"] = self.successes / self.episodes
        self.episodes, self.return_sum, self.length_sum, self.successes = 0, 0.0, 0, 0
        return record | self.updates.pop()

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates.state_dict(), "episodes": self.episodes,
                "return_sum": self.return_sum, "length_sum": self.length_sum,
                "successes": self.successes}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates.load_state_dict(state["updates"])
        self.episodes, self.successes = int(state["episodes"]), int(state["successes"])
        self.return_sum, self.length_sum = float(state["return_sum"]), int(state["length_sum"])
