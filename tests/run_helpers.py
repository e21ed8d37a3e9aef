"""Helpers shared by the tests that train runs or run scripts (import as ``tests.run_helpers``)."""

import importlib.util
from pathlib import Path
from types import ModuleType

import torch

#: The repository root (scripts in ``examples/`` and ``benchmarks/`` are loaded from it).
ROOT = Path(__file__).resolve().parents[1]


def load_script(relative: str) -> ModuleType:
    """The module of the script at ``ROOT / relative`` (its ``main`` is not run)."""
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

#: History fields that measure the machine, not the run.
WALL_CLOCK = ("wall_time", "steps_per_second")


def strip_wall_clock(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if k not in WALL_CLOCK} for h in history]


def assert_same_run(whole, resumed) -> None:
    """Two ``spnpolicy.train`` results are the same run: equal evaluation histories and
    training records (wall-clock fields aside) and bit-equal agent weights."""
    assert strip_wall_clock(resumed.history) == strip_wall_clock(whole.history)
    assert strip_wall_clock(resumed.training) == strip_wall_clock(whole.training)
    for a, b in zip(whole.agent.state_dict().values(), resumed.agent.state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)
