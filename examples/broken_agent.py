"""A broken agent: condition a trained joint policy on its noop and let the others adapt.

Run: .venv/bin/python examples/broken_agent.py            # a tiny training run (4,000 env steps)
     .venv/bin/python examples/broken_agent.py runs/cov3  # or a run trained on this env

Agent 2 of 3 breaks (the env forces its noop). Compare (a) acting from the joint policy,
the env overriding agent 2, with (b) sampling the others from pi(u | s, u_2 = noop).
With the tiny budget the policy has barely learned: use a trained run for real figures
(benchmarks/inference.py runs the full experiment over seeds).
"""

import numpy as np
import torch

import spnpolicy
from spnpolicy.inference import conditional_policy, most_likely
from spnpolicy.training import make_vec_env

from tiny_coverage import ENV, agent_from_argv  # examples/tiny_coverage.py

BROKEN, NOOP = 2, 0


def covered_fraction(act, episodes=64, seed=123):
    """Mean fraction of goals covered over the episode, with agent BROKEN broken."""
    envs = make_vec_env("coverage", episodes, seed=seed, broken_agents=(BROKEN,), **ENV)
    state, _ = envs.reset(seed=seed)
    rewards = []
    with torch.no_grad():
        for _ in range(ENV["max_steps"]):
            out = envs.step(act(torch.as_tensor(state)).numpy())
            rewards.append(out.reward)  # the coverage reward is the covered fraction
            state = out.state
    return float(np.mean(rewards))


def main() -> None:
    torch.set_num_threads(1)
    agent = agent_from_argv()
    generator = torch.Generator().manual_seed(0)

    env = spnpolicy.make_env("coverage", **ENV)
    env.reset(seed=1)
    state = torch.as_tensor(env.state())[None]                 # [1, state_dim]
    with torch.no_grad():
        print("pi(u_i | s) per agent [n, k]:\n", agent.distribution(state).marginals()[0])
        given = conditional_policy(agent, state, {BROKEN: NOOP})
        print(f"pi(u_i | s, u_{BROKEN} = noop) [n, k]:\n", given.marginals()[0])
        print("most likely joint action:", agent.distribution(state).mode[0].tolist(),
              f"| given u_{BROKEN} = noop:", most_likely(agent, state, {BROKEN: NOOP})[0].tolist())

    joint = covered_fraction(lambda s: agent.distribution(s).sample(generator=generator))
    conditioned = covered_fraction(
        lambda s: conditional_policy(agent, s, {BROKEN: NOOP}).sample(generator=generator))
    print(f"\nmean covered fraction with agent {BROKEN} broken, over 64 episodes:")
    print(f"  (a) joint policy, env overrides agent {BROKEN}: {joint:.3f}")
    print(f"  (b) others conditioned on u_{BROKEN} = noop:     {conditioned:.3f}")


if __name__ == "__main__":
    main()
