"""Per-agent anomaly scores -log pi(u_i | u_-i, s): which agent has gone rogue?

Run: .venv/bin/python examples/anomaly_scores.py            # a tiny training run (4,000 env steps)
     .venv/bin/python examples/anomaly_scores.py runs/cov3  # or a run trained on this env

The team follows its joint policy; from step ROGUE_FROM on, agent ROGUE acts uniformly at
random. Every step's joint action is scored per agent by the leave-one-out surprise
-log pi(u_i | u_-i, s) (one upward and one downward pass through the circuit) and, as a
baseline, by the marginal surprise -log pi(u_i | s).
"""

import numpy as np
import torch
from scipy.stats import mannwhitneyu

from spnpolicy.inference import anomaly_scores, marginal_scores
from spnpolicy.training import make_vec_env

from tiny_coverage import ENV, agent_from_argv  # examples/tiny_coverage.py

ROGUE, ROGUE_FROM, EPISODES = 1, 8, 64


def main() -> None:
    torch.set_num_threads(1)
    agent = agent_from_argv()
    generator = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)

    envs = make_vec_env("coverage", EPISODES, seed=7, **ENV)
    state, _ = envs.reset(seed=7)
    loo, marginal = [], []
    with torch.no_grad():
        for t in range(ENV["max_steps"]):
            s = torch.as_tensor(state)
            actions = agent.distribution(s).sample(generator=generator)     # [E, n]
            if t >= ROGUE_FROM:
                actions[:, ROGUE] = torch.as_tensor(rng.integers(0, 6, EPISODES))
            loo.append(anomaly_scores(agent, s, actions).numpy())           # [E, n]
            marginal.append(marginal_scores(agent, s, actions).numpy())
            state = envs.step(actions.numpy()).state
    loo, marginal = np.stack(loo), np.stack(marginal)                       # [T, E, n]

    print(f"episode 0, agent {ROGUE} rogue from step {ROGUE_FROM}: "
          f"-log pi(u_i | u_-i, s) per agent")
    for t in range(ENV["max_steps"]):
        scores = "  ".join(f"{v:6.2f}" for v in loo[t, 0])
        print(f"  step {t:2d}: {scores}   most anomalous: agent {loo[t, 0].argmax()}")

    rogue_steps = np.arange(ENV["max_steps"]) >= ROGUE_FROM
    print(f"\nover {EPISODES} episodes:")
    for name, scores in (("leave-one-out", loo), ("marginal baseline", marginal)):
        step_score = scores.max(-1)                                          # [T, E]
        u = mannwhitneyu(step_score[rogue_steps].ravel(), step_score[~rogue_steps].ravel())
        auroc = u.statistic / (rogue_steps.sum() * (~rogue_steps).sum() * EPISODES**2)
        named = (scores[rogue_steps].argmax(-1) == ROGUE).mean()
        print(f"  {name:18s} AUROC {auroc:.3f}, rogue agent named on {named:.1%} of its steps")


if __name__ == "__main__":
    main()
