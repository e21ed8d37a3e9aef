"""Multi-agent particle environments (the four tasks of the MA-SAC paper) from `mpe2`,
discrete actions.

Needs the optional extra: `pip install 'spnpolicy[mpe]'`.

```python
from spnpolicy.envs import mpe
env = mpe.parallel_env("simple_spread", N=3, max_cycles=25)
```

The returned env is mpe2's own `ParallelEnv` (agents, spaces, rewards and `state()` as
documented by mpe2), always with `continuous_actions=False`:

| task | mpe2 module | agents |
|---|---|---|
| `simple_spread` (cooperative navigation) | `simple_spread_v3` | `agent_0..N-1`, shared |
| `simple_speaker_listener` | `simple_speaker_listener_v4` | `speaker_0`, `listener_0`, shared |
| `simple_tag` | `simple_tag_v3` | `adversary_*` chase `agent_*` (competitive) |
| `simple_adversary` | `simple_adversary_v3` | `adversary_0` against `agent_*` (competitive) |

In `simple_speaker_listener` the speaker has 3 actions (what it says) and the listener 5
(moves); training steps both with `k = 5`, the speaker's actions 3 and 4 repeating its 0
and 1 (:class:`~spnpolicy.training.ParallelEnvVec`).
"""

from __future__ import annotations

import importlib
import inspect
from types import ModuleType

from pettingzoo import ParallelEnv

MPE_TASKS = {
    "simple_spread": "simple_spread_v3",
    "simple_speaker_listener": "simple_speaker_listener_v4",
    "simple_tag": "simple_tag_v3",
    "simple_adversary": "simple_adversary_v3",
}


def _task_module(task: str) -> ModuleType:
    if task not in MPE_TASKS:
        raise ValueError(f"task must be one of {tuple(MPE_TASKS)}, got {task!r}")
    try:
        return importlib.import_module(f"mpe2.{MPE_TASKS[task]}")
    except ModuleNotFoundError as error:
        if error.name is None or not error.name.startswith("mpe2"):
            raise
        raise ImportError(f"mpe/{task} needs the mpe2 package: "
                          "pip install 'spnpolicy[mpe]'") from None


def task_arguments(task: str) -> tuple[str, ...]:
    """Keyword arguments that `parallel_env(task, ...)` accepts (mpe2's, less actions)."""
    parameters = inspect.signature(_task_module(task).raw_env).parameters
    return tuple(name for name in parameters if name != "continuous_actions")


def parallel_env(task: str, **kwargs: object) -> ParallelEnv:
    """mpe2's `task` as a `ParallelEnv` with discrete actions; `kwargs` go to mpe2."""
    module = _task_module(task)
    if "continuous_actions" in kwargs:
        raise ValueError("continuous_actions: the mpe adapter has discrete actions only, "
                         f"got continuous_actions={kwargs['continuous_actions']!r}")
    valid = task_arguments(task)
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ValueError(f"unknown argument(s) {unknown} for mpe/{task}; valid: {valid}")
    return module.parallel_env(continuous_actions=False, **kwargs)
