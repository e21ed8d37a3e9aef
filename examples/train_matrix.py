"""Train spn-ac on the climbing game and look at the joint policy it learned.

Climbing (Claus & Boutilier 1998): the optimum (0, 0) pays 11 but sits next to -30
penalties, so independent learners drift to the safe (2, 2). spn-ac's joint policy is a
selective circuit over both agents' actions, trained by the exact max-ent ELBO against a
factor-graph critic; its greedy joint action is the circuit's mode.

Run: .venv/bin/python examples/train_matrix.py
"""

from __future__ import annotations

import itertools

import torch

import spnpolicy

result = spnpolicy.train("spn-ac", "climbing", seed=0)
state = torch.ones(1, 1)  # matrix games have one constant state
greedy = result.agent.act(state)[0].tolist()
print(f"greedy joint action: {tuple(greedy)}  (optimum: (0, 0), payoff 11)")
print(f"greedy return: {result.eval['return_mean']}, after {result.eval['step']} env steps")

with torch.no_grad():
    dist = result.agent.distribution(state)
    joint = torch.tensor(list(itertools.product(range(3), repeat=2)))
    probs = dist.log_prob(joint[:, None, :]).exp().view(3, 3)
    entropy = float(dist.entropy())
print("\nlearned joint policy pi(u0, u1) (rows: agent 0's action, columns: agent 1's):")
for row, values in enumerate(probs.tolist()):
    print(f"  u0={row}: " + "  ".join(f"{p:6.3f}" for p in values))
print(f"entropy: {entropy:.3f} nats (uniform: {2 * torch.log(torch.tensor(3.)):.3f})")
