"""How often spn-ac's mode guidance acts, over a training run.

Trains spn-ac with its defaults and the mode guidance on (``--weight``, also where an env's
defaults turn it off) on one task and records, at every update, the share of the
batch's states where

- the critics' exact argmaxes agree (the guidance's mask),
- the policy gives the first critic's argmax ``u*`` less than the floor
  (``mode_floor * k**-n``, as a log: ``mode_log_floor``),
- both hold (where the guidance acts),

and the batch mean of ``pi(u* | s)``. Prints and writes them in blocks of updates.

    python benchmarks/mode_guidance_gate.py --suite coverage-random --steps 40000
    python benchmarks/mode_guidance_gate.py --suite coordination --task lift-3-p0.5
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

import spnpolicy
from spnpolicy.algos import spn_ac
from spnpolicy.bench.suites import SUITES
from spnpolicy.machine import training_provenance

RESULTS = Path(__file__).resolve().parent / "results" / "coordination"


def record_guidance(rows: list) -> None:
    """Wrap spn-ac's actor loss so that each call appends its guidance statistics."""
    actor_loss = spn_ac.actor_loss

    def recorded(values, dist, alpha, gradient="exact", samples=8, mode=None,
                 mode_weight=0.0, mode_log_floor=0.0, mode_mask=None, mode_scopes=None):
        if mode is not None and mode_scopes is None:   # the joint guidance's gates
            with torch.no_grad():
                log_p_best = dist.log_prob(mode)
                p_best = log_p_best.exp()
                below = (log_p_best < mode_log_floor).float()
                agree = torch.ones_like(below) if mode_mask is None else mode_mask
                rows.append([agree.mean().item(), below.mean().item(),
                             (agree * below).mean().item(), p_best.mean().item()])
        return actor_loss(values, dist, alpha, gradient, samples, mode, mode_weight,
                          mode_log_floor, mode_mask, mode_scopes)

    spn_ac.actor_loss = recorded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="coverage-random")
    parser.add_argument("--task", default=None, help="a task of the suite (default: its first)")
    parser.add_argument("--steps", type=int, default=40_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--blocks", type=int, default=8)
    parser.add_argument("--weight", type=float, default=0.1, help="mode_guidance")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"JSON file (default {RESULTS}/mode_guidance_gate_<task>.json)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    suite = SUITES[args.suite]
    task = next(t for t in suite.tasks if args.task in (None, t.name))
    rows: list = []
    record_guidance(rows)
    spnpolicy.train("spn-ac", task.env, seed=args.seed, total_steps=args.steps,
                    env_kwargs=task.env_kwargs, progress=False,
                    **(dict(suite.config) | {"mode_guidance": args.weight}))
    if not rows:
        raise SystemExit("the guidance never ran: off for this task, or no update within "
                         "--steps (see the run's notes and warnings)")
    table = torch.tensor(rows)
    size = math.ceil(len(rows) / args.blocks)
    blocks = [{"updates": [start, min(start + size, len(rows))],
               **dict(zip(("agree", "below_floor", "guided", "mean_p_best"),
                          table[start:start + size].mean(0).tolist()))}
              for start in range(0, len(rows), size)]
    print(f"{task.name}, {args.steps:,} steps, seed {args.seed}: share of states per block")
    print("updates        agree  below floor  guided  mean pi(u*)")
    for b in blocks:
        print(f"{b['updates'][0]:>5}-{b['updates'][1]:<6} {b['agree']:7.3f} "
              f"{b['below_floor']:12.3f} {b['guided']:7.3f} {b['mean_p_best']:12.4f}")
    out = args.out or RESULTS / f"mode_guidance_gate_{task.name}.json"
    out.write_text(json.dumps({"task": task.name, "steps": args.steps, "seed": args.seed,
                               "blocks": blocks, "provenance": training_provenance(args.steps)},
                              indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
