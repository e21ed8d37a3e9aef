"""Matrix-game outcomes: did a run reach an optimal joint action?

The matrix games have one constant observation ``[1.0]``, so a trained agent's greedy
joint action is a single ``(row, col)`` pair. A run reaches the optimum when that pair is
one of the game's optimal joint actions; in a run's history this is the final greedy
evaluation's ``success_rate`` (the env flags each played joint action ``optimal``), which
is 1.0 for an optimal greedy joint action and 0.0 otherwise.

```python
from spnpolicy.bench.matrix import greedy_joint_action, optimal_joint_actions
result = spnpolicy.train("spn-ac", "penalty", env_kwargs={"k": 100})
greedy_joint_action(result.agent) in optimal_joint_actions("penalty", {"k": 100})
```
"""

from __future__ import annotations

from typing import Any

from spnpolicy.envs.matrix_v0 import GAMES

__all__ = ["greedy_joint_action", "is_matrix_game", "optimal_joint_actions", "reached_optimum"]


def is_matrix_game(env: str) -> bool:
    return env in GAMES


def optimal_joint_actions(game: str, env_kwargs: dict[str, Any] | None = None
                          ) -> tuple[tuple[int, int], ...]:
    """The joint actions ``(row, col)`` that maximise the team payoff of ``game``."""
    from spnpolicy.envs import make_env

    env = make_env(game, **(env_kwargs or {}))
    try:
        return env.unwrapped.optimal_joint_actions
    finally:
        env.close()


def greedy_joint_action(agent: Any) -> tuple[int, int]:
    """A trained agent's greedy joint action in a matrix game (constant state ``[1.0]``).

    Agents acting on per-agent observations (``needs_obs``: iql, vdn, qmix, dcg) get ``[1.0]``
    for each of the two agents, the others the global state.
    """
    state = [[[1.0], [1.0]]] if getattr(agent, "needs_obs", False) else [[1.0]]
    return tuple(int(a) for a in agent.act(state)[0])


def reached_optimum(final_record: dict[str, Any]) -> bool:
    """Whether a matrix-game run's final greedy evaluation played an optimal joint action."""
    if "success_rate" not in final_record:
        raise ValueError(f"a matrix-game evaluation record has a success_rate, got keys "
                         f"{sorted(final_record)}")
    return final_record["success_rate"] >= 1.0
