"""Assertions shared by the tests that train runs (import as ``tests.run_helpers``)."""

import torch

#: History fields that measure the machine, not the run.
WALL_CLOCK = ("wall_time", "steps_per_second")


def strip_wall_clock(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if k not in WALL_CLOCK} for h in history]


def assert_same_run(whole, resumed) -> None:
    """Two ``spnpolicy.train`` results are the same run: equal evaluation histories
    (wall-clock fields aside) and bit-equal agent weights."""
    assert strip_wall_clock(resumed.history) == strip_wall_clock(whole.history)
    for a, b in zip(whole.agent.state_dict().values(), resumed.agent.state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)
