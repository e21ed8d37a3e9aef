"""How many tensor operations one eager spn-ac update dispatches, per team size, and where
they come from: what an accelerator launches one kernel each for, and what torch.compile
traces into one graph.

    python benchmarks/update_ops.py                    # coverage-paper (6), 16, 32 and 64 agents
    python benchmarks/update_ops.py --agents 16 64 --out /tmp/ops.json

Each team size builds spn-ac with its coverage suite's shared config (``coverage-paper`` at 6
agents, ``coverage-<n>`` above: critics on random pairs, not the nearest pairs that the
many-agent suites give spn-ac) with the agents design (``param_head="agents"``,
``critic_input="agents"``, the many-agent suites' own), runs one update on a random batch of
``--batch-size`` rows to build its lazy tables, then counts the aten operations of a second
one (``TorchDispatchMode``, on the CPU). Each operation is charged to the innermost frame of
this repository's code that issued it; the backward pass's operations are charged to the
optimiser step that runs it. Writes ``benchmarks/results/many-agents/update_ops.json``
by default.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import traceback
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spnpolicy.algos.registry import make_config  # noqa: E402
from spnpolicy.algos.spn_ac import SpnAc  # noqa: E402
from spnpolicy.bench.runner import config_fields  # noqa: E402
from spnpolicy.bench.suites import get_suite  # noqa: E402
from spnpolicy.machine import git_commit  # noqa: E402
from spnpolicy.training import Batch, make_vec_env  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "many-agents" / "update_ops.json"
AGENTS_DESIGN = {"param_head": "agents", "critic_input": "agents"}
_OWN = str(ROOT) + "/"


class CountOps(TorchDispatchMode):
    """Counts the aten operations dispatched inside it, by operation and by the innermost
    frame of this repository's code (``"path:function"``)."""

    def __init__(self) -> None:
        super().__init__()
        self.by_op: collections.Counter = collections.Counter()
        self.by_site: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.by_op[str(func.overloadpacket)] += 1
        own = [f for f in traceback.extract_stack()[:-1]
               if f.filename.startswith(_OWN) and "/.venv/" not in f.filename
               and not f.filename.endswith("update_ops.py")]
        site = own[-1] if own else None
        self.by_site["other" if site is None else
                     f"{site.filename[len(_OWN):]}:{site.name}"] += 1
        return func(*args, **(kwargs or {}))


def suite_of(num_agents: int):
    return get_suite("coverage-paper" if num_agents == 6 else f"coverage-{num_agents}")


def count_update(num_agents: int, batch_size: int, seed: int = 0) -> dict:
    """The operations of one spn-ac update at ``num_agents`` (see the module docstring)."""
    suite = suite_of(num_agents)
    torch.manual_seed(seed)
    envs = make_vec_env("coverage", 1, **dict(suite.tasks[0].env_kwargs))
    try:
        cfg = make_config("spn-ac", "coverage",
                          config_fields("spn-ac", dict(suite.config)) | AGENTS_DESIGN)
        algo = SpnAc(cfg, envs)
        b, n = batch_size, num_agents
        obs = torch.rand(b, n, envs.obs_dim)
        batch = Batch(state=torch.rand(b, envs.state_dim), obs=obs,
                      actions=torch.randint(0, envs.num_actions, (b, n)), reward=torch.rand(b),
                      next_state=torch.rand(b, envs.state_dim), next_obs=obs,
                      steps=torch.ones(b, dtype=torch.long), terminated=torch.zeros(b))
        algo.update(batch)                       # builds the lazy plans and tables
        with CountOps() as counted:
            algo.update(batch)
    finally:
        envs.close()
    return {"num_agents": num_agents, "suite": suite.name, "batch_size": batch_size,
            "ops": sum(counted.by_op.values()),
            "by_op": dict(counted.by_op.most_common(12)),
            "by_site": dict(counted.by_site.most_common())}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, nargs="+", default=[6, 16, 32, 64],
                        help="team sizes: 6 (coverage-paper) or a coverage-<n> suite's")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    for n in args.agents:
        try:
            suite_of(n)
        except ValueError as error:
            parser.error(f"--agents {n}: {error}")
    torch.set_num_threads(1)
    rows = []
    for n in args.agents:
        row = count_update(n, args.batch_size)
        rows.append(row)
        top = ", ".join(f"{site} {count}" for site, count in list(row["by_site"].items())[:4])
        print(f"{n} agents: {row['ops']:,} operations per update ({top})", flush=True)
    result = {"benchmark": "update_ops", "commit": git_commit(),
              "command": "python benchmarks/update_ops.py " + " ".join(argv or sys.argv[1:]),
              "design": AGENTS_DESIGN, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
