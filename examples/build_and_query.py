"""Build a sum-product network in code and ask it every query the engine supports.

Run: .venv/bin/python examples/build_and_query.py
"""

import torch

from circuits import Categorical, Circuit, NotDeterministicError, Product, Sum
from circuits.structures import mixture, selective


def main() -> None:
    torch.manual_seed(0)

    # Three agents with 3 actions each. Two "modes": agents 0 and 1 agree on action 0, or
    # agent 1 takes action 2 while agent 0 varies. Agent 2 is independent.
    a0 = Categorical(var=0, num_states=3, probs=[0.2, 0.3, 0.5])
    a1 = Categorical(var=1, num_states=3, support=[0, 2])                # never action 1
    both_zero = Product([Categorical.indicator(0, 0, 3), Categorical.indicator(1, 0, 3)])
    root = Product([
        Sum([both_zero, Product([a0, Categorical.indicator(1, 2, 3)])], weights=[0.4, 0.6]),
        Categorical(var=2, num_states=3, probs=[0.7, 0.2, 0.1]),
    ])
    c = Circuit(root)
    print(c)
    print("smooth, decomposable, deterministic:", c.is_smooth, c.is_decomposable, c.is_deterministic)

    with torch.no_grad():
        x = torch.tensor([[0, 0, 0], [2, 2, 1], [0, -1, -1]])         # -1 = marginalised
        print("\nlog p(x) for", x.tolist(), "->", c.log_prob(x).tolist())
        print("single-variable marginals [num_vars, max_states]:\n", c.marginals())
        print("joint marginal of agents (0, 1):\n", c.scope_marginals([(0, 1)])[0])

        evidence = torch.tensor([-1, 2, -1])                           # agent 1 took action 2
        conditional = c.condition(evidence)
        print("\nmarginals given agent 1 = 2:\n", conditional.marginals())
        print("samples given agent 1 = 2:\n", c.sample(5, evidence=evidence,
                                                       generator=torch.Generator().manual_seed(0)))
        print("most probable joint action:", c.mpe().tolist(),
              "| given agent 1 = 2:", c.mpe(evidence).tolist())
        print("entropy (exact, deterministic circuit):", float(c.entropy()))
        print("log p(x_i | x_-i) for x = [2, 2, 1]:",
              c.leave_one_out_log_prob(torch.tensor([2, 2, 1])).tolist())

        # State-conditioned parameters: one parameter set per batch row (a policy head).
        policy = selective(num_vars=4, num_states=3, width=8)
        logits = torch.randn(2, policy.num_params)
        dist = policy.distribution(logits)
        print(f"\nselective(4, 3, 8): {policy.num_params} parameters; batch of 2 distributions")
        print("sampled joint actions [sample, batch, agents]:", dist.sample((3,)).tolist())
        print("entropies:", dist.entropy().tolist(), "modes:", dist.mode.tolist())

        try:
            mixture(num_vars=3, num_states=2, components=2).entropy()
        except NotDeterministicError as error:
            print("\nmixture entropy ->", type(error).__name__ + ":", error)


if __name__ == "__main__":
    main()
