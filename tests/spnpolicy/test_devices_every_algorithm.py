"""Every registered algorithm trains with ``device=cuda``: its networks live there, and the
run's config.json records the device it ran on.

Skipped where torch has no CUDA device. ``SPNPOLICY_TEST_DEVICE=cpu`` runs the same code
paths on the CPU (as tests/test_devices.py does)."""

import dataclasses
import json
import os

import pytest
import torch

import spnpolicy
from spnpolicy.algos.registry import ALGORITHMS

DEVICE = os.environ.get("SPNPOLICY_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(
    DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA device")

#: Small settings, applied to the algorithms whose config has the field.
_SMALL = {"learning_starts": 32, "batch_size": 16, "hidden": (16,), "num_steps": 8,
          "num_minibatches": 1}


@pytest.mark.parametrize("algo", list(ALGORITHMS))
def test_every_algorithm_trains_on_the_device(tmp_path, algo):
    spec = ALGORITHMS[algo]
    names = {f.name for f in dataclasses.fields(spec.config_cls)} - set(spec.fixed)
    small = {key: value for key, value in _SMALL.items() if key in names}
    result = spnpolicy.train(algo, "coverage", seed=0, total_steps=64, out_dir=tmp_path,
                             env_kwargs=dict(num_agents=2, grid_size=4, max_steps=8),
                             num_envs=8, eval_interval=64, eval_episodes=2, device=DEVICE,
                             progress=False, verbose=False, **small)
    parameters = list(result.agent.parameters())
    assert parameters and {p.device.type for p in parameters} == {torch.device(DEVICE).type}
    assert json.loads((tmp_path / "config.json").read_text())["config"]["device"] == DEVICE
