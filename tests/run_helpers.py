"""Helpers shared by the tests that train runs or run scripts (import as ``tests.run_helpers``)."""

import importlib.util
import os
import subprocess
import sys
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

#: A tiny coverage task for the tests of the commands that read a saved run.
TINY_COVERAGE = dict(num_agents=3, grid_size=4, max_steps=5, reward="coverage")


def train_tiny(out: Path) -> Path:
    """A 64-step spn-ac run on :data:`TINY_COVERAGE` saved in ``out``; returns ``out``."""
    import spnpolicy
    spnpolicy.train("spn-ac", "coverage", seed=0, out_dir=out, env_kwargs=TINY_COVERAGE,
                    total_steps=64, num_envs=8, learning_starts=32, batch_size=16,
                    eval_interval=64, eval_episodes=2, policy_hidden=(16,),
                    critic_hidden=(16,), width=4, verbose=False, progress=False)
    return out


def run_cli(command: str, *args) -> subprocess.CompletedProcess:
    """``python -m spnpolicy.cli COMMAND ARGS...`` as a subprocess from the repository root,
    its output captured."""
    return subprocess.run([sys.executable, "-m", "spnpolicy.cli", command, *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=300)


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


def replay_batches(envs, count: int, size: int = 32, observations: bool = False) -> list:
    """``count`` batches of ``size`` one-step transitions sampled from a replay buffer of 400
    steps of uniform random joint actions in ``envs`` (seeded); with ``observations`` the
    batches hold the per-agent observations too (``obs``, ``next_obs``), else ``None``."""
    from spnpolicy.training import ReplayBuffer, Runner, TransitionStream

    buffer = ReplayBuffer(400, envs.state_dim, envs.num_agents,
                          obs_dim=envs.obs_dim if observations else None, seed=0)
    gen = torch.Generator().manual_seed(0)
    runner = Runner(envs, observations=observations)
    stream = TransitionStream(envs, 1, 0.99, False, seed=0)
    runner.reset(seed=0)
    for _ in range(400 // envs.num_envs):
        actions = torch.randint(envs.num_actions, (envs.num_envs, envs.num_agents),
                                generator=gen).numpy()
        buffer.add(stream.push(runner.step(actions)))
    return [buffer.sample(size) for _ in range(count)]
