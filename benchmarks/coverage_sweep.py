"""One short training run on the coverage-quick setting, for hyperparameter sweeps.

```bash
.venv/bin/python benchmarks/coverage_sweep.py spn-ac 40000 1 regulariser=kl_uniform
.venv/bin/python benchmarks/coverage_sweep.py vdn 40000 2 target_update_interval=2000
```

Arguments: ALGO STEPS SEED, then config overrides ``key=value`` (``env.key=value`` for env
arguments). The env is coverage-quick's (3 agents, 6x6, 50 steps, sparse, fixed goals,
relative observations) and ``shaping=True``; greedy evaluation every 10k steps over 100
episodes. Prints one JSON line: the final greedy success, the curve and the wall time.
"""

from __future__ import annotations

import json
import sys
import time

import torch

import spnpolicy
from spnpolicy.algos.config import parse_field_value
from spnpolicy.algos.registry import get_algorithm
from spnpolicy.bench.suites import get_suite


def main(argv: list[str]) -> None:
    algo, steps, seed = argv[0], int(argv[1]), int(argv[2])
    torch.set_num_threads(1)
    env_kwargs = dict(get_suite("coverage-quick").tasks[0].env_kwargs)
    config = dict(shaping=True, eval_interval=10_000, eval_episodes=100, eval_stochastic=False)
    for pair in argv[3:]:
        key, value = pair.split("=", 1)
        if key.startswith("env."):
            env_kwargs[key[4:]] = int(value) if value.isdigit() else value
        else:
            config[key] = parse_field_value(get_algorithm(algo).config_cls, key, value)
    start = time.time()
    result = spnpolicy.train(algo, "coverage", seed=seed, total_steps=steps,
                             env_kwargs=env_kwargs, **config)
    print(json.dumps({"algo": algo, "seed": seed, "args": argv[3:],
                      "wall_s": round(time.time() - start),
                      "final": result.eval["success_rate"],
                      "curve": [(h["step"], h["success_rate"]) for h in result.history]}))


if __name__ == "__main__":
    main(sys.argv[1:])
