"""Why spn-ac fails the penalised lift, and what mode guidance changes: the critics' Q and the
policy's mass at the states that matter.

    python benchmarks/lift_diagnosis.py                               # the default settings
    python benchmarks/lift_diagnosis.py --agents 3 --penalty 0.5 --set mode_guidance=0 \\
        --set factor_order=3

Trains one run of ``--algo`` on the lift task through ``spnpolicy.train`` (config overrides
with ``--set KEY=VALUE``), then, at two states (everyone at the object; agent 0 one step
away, the others at the object; time 0.25), reports:

- ``Q(all lift)``, the best joint action by Q and its value, ``Q(all wait)``: the twin
  critics' minimum, for every joint action;
- the policy's probability of "all lift", its most probable joint action and its mode;

and, over training, the mean number of rows per update batch whose reward is a lift
(how often the replay data shows the coordinated action succeed). Appends one JSON line
to ``--out``/lift_diagnosis.jsonl.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import torch

import spnpolicy
from spnpolicy.algos import spn_ac
from spnpolicy.algos.config import parse_field_value
from spnpolicy.envs.lift import LIFT, WAIT


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--algo", default="spn-ac")
    parser.add_argument("--agents", type=int, default=3)
    parser.add_argument("--penalty", type=float, default=0.5)
    parser.add_argument("--total-steps", type=int, default=40_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks"))
    args = parser.parse_args(argv)
    overrides = {}
    for item in args.set:
        key, _, text = item.partition("=")
        overrides[key] = parse_field_value(spn_ac.SpnAcConfig, key, text)
    held: dict = {"lift_rows": 0, "updates": 0}
    # the registry holds the class itself: observe through its methods, restored below
    cls = spn_ac.SpnAc
    original_init, original_update = cls.__init__, cls.update

    def observed_init(self, *a, **k):
        original_init(self, *a, **k)
        held["algorithm"] = self

    def observed_update(self, batch):
        held["lift_rows"] += int((batch.reward > 0.5).sum())
        held["updates"] += 1
        return original_update(self, batch)

    cls.__init__, cls.update = observed_init, observed_update
    started = time.time()
    try:
        result = spnpolicy.train(args.algo, "lift", seed=args.seed,
                                 env_kwargs=dict(num_agents=args.agents, penalty=args.penalty),
                                 total_steps=args.total_steps,
                                 eval_interval=args.total_steps // 4, **overrides)
    finally:
        cls.__init__, cls.update = original_init, original_update
    algorithm, n = held["algorithm"], args.agents
    joint = torch.tensor(list(itertools.product(range(4), repeat=n)))
    lift_index = int(((joint == LIFT).all(1)).nonzero())
    wait_index = int(((joint == WAIT).all(1)).nonzero())
    states = {}
    for label, distances in (("all at the object", [0] * n),
                             ("agent 0 one step away", [1] + [0] * (n - 1))):
        state = torch.tensor([[d / 2 for d in distances] + [0.25]], dtype=torch.float32)
        with torch.no_grad():
            q = algorithm.critic.evaluate(state.expand(len(joint), -1), joint).min(0).values
            dist = algorithm.policy.distribution(state)
            prob = dist.log_prob(joint.unsqueeze(1)).squeeze(1).exp()
            best = int(q.argmax())
            states[label] = {
                "Q_all_lift": float(q[lift_index]), "Q_all_wait": float(q[wait_index]),
                "Q_best_action": joint[best].tolist(), "Q_best": float(q[best]),
                "pi_all_lift": float(prob[lift_index]),
                "pi_best_action": joint[int(prob.argmax())].tolist(),
                "pi_best": float(prob.max()), "mode": dist.mode[0].tolist()}
    record = {"algo": args.algo, "agents": n, "penalty": args.penalty, "seed": args.seed,
              "total_steps": args.total_steps, "overrides": overrides,
              "greedy_success": result.eval.get("success_rate"),
              "curve": [[h["step"], h.get("success_rate")] for h in result.history],
              "updates": held["updates"],
              "lift_rows_per_batch": held["lift_rows"] / max(held["updates"], 1),
              "states": states, "seconds": round(time.time() - started, 1)}
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "lift_diagnosis.jsonl", "a") as file:
        file.write(json.dumps(record) + "\n")
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
