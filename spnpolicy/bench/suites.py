"""Benchmark suites: which tasks, algorithms, seeds and evaluation protocol a bench runs.

```python
from spnpolicy.bench.suites import get_suite
suite = get_suite("matrix")
suite.task_names()          # ('climbing', 'penalty-k0', ..., 'stag_hunt')
suite.protocol.total_steps  # the env-step budget of every algorithm on every task
```

Protocol (Gorsane et al. 2022): every algorithm gets the same env-step budget on a task,
and is evaluated greedily every ``eval_interval`` env steps (and at step 0 and at the end)
over ``eval_episodes`` episodes. The suite sets these fields in every algorithm's config;
the algorithm's other hyperparameters are its own defaults for the environment.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from spnpolicy.algos.config import check_int

__all__ = ["SUITES", "Protocol", "Suite", "Task", "get_suite"]

#: The algorithms every full suite compares, in table order.
ALL_ALGOS = ("spn-ac", "meanfield-ac", "reinforce", "iql", "vdn", "qmix", "dcg")
#: The on-policy actor-critics (docs/design.md, section 5).
ONPOLICY_ALGOS = ("ia2c", "maa2c", "ippo", "mappo", "coma", "pac", "dpo", "mdpo")
#: The off-policy baselines beside spn-ac (docs/design.md, section 5).
OFFPOLICY_ALGOS = ("masac", "maddpg", "qtran", "ma2ql", "i2q")


@dataclass(frozen=True)
class Task:
    """One environment setting: ``make_env(env, **env_kwargs)``, called ``name`` in tables
    and in run directories (``runs/<name>/<algo>/s<seed>``)."""

    name: str
    env: str
    env_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Protocol:
    """The evaluation protocol, the same for every algorithm of a suite."""

    total_steps: int
    """Env-step budget of every run."""
    eval_interval: int
    """Env steps between greedy evaluations (also one at step 0 and one at the end)."""
    eval_episodes: int
    """Episodes per greedy evaluation."""
    checkpoint_interval: int
    """Env steps between checkpoints: how much an interrupted run loses."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            check_int(f.name, getattr(self, f.name), 1)

    def with_budget(self, total_steps: int | None) -> Protocol:
        """This protocol with another budget; None keeps it.

        The intervals stay as they are, even above the budget (every run is evaluated and
        checkpointed at its end anyway), so that a run can later be extended to a larger
        budget by resuming it: its config must not change. (Capping them by a small budget
        made the extended run's config differ, and resuming it was refused.)
        """
        if total_steps is None:
            return self
        check_int("total_steps", total_steps, 1)
        return dataclasses.replace(self, total_steps=total_steps)

    def overrides(self) -> dict[str, int]:
        """The config overrides that impose this protocol on an algorithm."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Suite:
    """A benchmark: every (task, algorithm, seed) combination is one run."""

    name: str
    description: str
    tasks: tuple[Task, ...]
    algos: tuple[str, ...]
    seeds: int
    """Seeds per (task, algorithm): seeds 0 .. seeds-1 unless the user picks others."""
    protocol: Protocol
    metric: str = "success_rate"
    """The evaluation metric that tables and learning curves report."""
    config: dict[str, Any] = field(default_factory=dict)
    """Config overrides for every algorithm whose config has the field (e.g. the factor
    graph of the factored critics); algorithms without the field ignore it."""
    algo_config: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Config overrides for one algorithm each (``{algo: {field: value}}``), set after
    ``config``: a design only some of the suite's algorithms take."""

    def __post_init__(self) -> None:
        unknown = sorted(set(self.algo_config) - set(self.algos))
        if unknown:
            raise ValueError(f"suite {self.name!r}: algo_config names {unknown}, which are not "
                             f"among its algorithms ({', '.join(self.algos)})")

    def task_names(self) -> tuple[str, ...]:
        return tuple(task.name for task in self.tasks)

    def task(self, name: str) -> Task:
        for task in self.tasks:
            if task.name == name:
                return task
        raise ValueError(f"unknown task {name!r} for suite {self.name!r}; valid: "
                         f"{', '.join(self.task_names())}")


_MATRIX_TASKS = (Task("climbing", "climbing"),
                 *(Task(f"penalty-k{k}", "penalty", {"k": k}) for k in (0, 25, 50, 75, 100)),
                 Task("coordination", "coordination"), Task("linear", "linear"),
                 Task("monotonic", "monotonic"), Task("stag_hunt", "stag_hunt"))

# The learnable coverage setting: goals on cells fixed by layout_seed, egocentric
# offsets in the observations, and potential-based shaping of the sparse reward for every
# algorithm (`shaping`, evaluation on the env's own reward). The coverage study log
# (benchmarks/results/coverage/README.md) has the evidence: without these, 3 agents on 6x6
# stay at the random policy's level.
_LEARNABLE = {"reward": "sparse", "layout": "fixed", "layout_seed": 0,
              "observation": "relative"}
_COVERAGE_QUICK = {"num_agents": 3, "grid_size": 6, "max_steps": 50, **_LEARNABLE}
_COVERAGE_RANDOM = {**_COVERAGE_QUICK, "layout": "random"}
_COVERAGE_SMALL = {"num_agents": 2, "grid_size": 4, "max_steps": 20, **_LEARNABLE}
_COVERAGE_PAPER = {"num_agents": 6, "grid_size": 20, "max_steps": 200, **_LEARNABLE}
_SHAPING = {"shaping": True}
# coverage-paper's reward is never reached by chance (6 agents on 20x20): potential-based
# shaping's signal fades there as the values converge. The undiscounted progress with gamma
# 0.9 keeps a signal (benchmarks/results/coverage/README.md, "coverage-paper").
_PROGRESS = {"shaping": True, "shaping_form": "progress", "gamma": 0.9}

#: The coordination suite's algorithms: the joint, mean-field and score-function policies
#: of spn-ac, a coordination graph, value factorisation, and centralised actor-critics.
COORDINATION_ALGOS = ("spn-ac", "meanfield-ac", "reinforce", "dcg", "vdn", "qmix", "mappo",
                      "masac")


def _lift(num_agents: int, penalty: float) -> Task:
    return Task(f"lift-{num_agents}-p{penalty:g}", "lift",
                {"num_agents": num_agents, "penalty": penalty})


#: The algorithms of the many-agent suites (dcg's greedy maximisation on 2 n random pairs
#: runs at every team size up to 64).
MANY_AGENT_ALGOS = ("spn-ac", "meanfield-ac", "vdn", "qmix", "dcg", "ippo", "mappo")
#: Many-agent coverage: team size -> (grid side, replay rows). One agent per 16 cells (the
#: paper's 6 agents on 20x20 is one per 67): dense enough that the goals are found by a team
#: that explores, small enough to learn on CPU. Horizon: 4 grid sides, twice the longest
#: Manhattan path. Nearest observations: each agent's own cell and its 8 nearest goals and
#: agents as offsets with held flags, 52 floats at every team size, beside the absolute
#: state (5 n + 1); the relative ones repeat 2 n^2 offsets in the state and in every agent's
#: observation, which does not fit in memory at 32 and 64 agents. The replay capacity keeps
#: a buffer of states and per-agent observations at most about 2.5 GB (4 (state_dim + n
#: obs_dim) bytes per row).
_MANY_AGENTS = {16: (16, 50_000), 32: (24, 50_000), 64: (32, 25_000)}


#: spn-ac's family at many agents: the joint policy's parameters and the critics from the
#: agents' own observations, through networks shared by every agent (the state-input ones
#: need one output per agent and factor, and learn nothing per agent at 8 agents).
_SHARED_BY_AGENTS = {"param_head": "agents", "critic_input": "agents"}


#: spn-ac's and meanfield-ac's critics at many agents: each agent's 2 nearest others in each
#: state (O(n) pairs, found from the positions in the state). dcg acts by its critics'
#: maximisation on a fixed graph, so the suites' shared config keeps ``2 n`` random pairs.
_NEAREST_PAIRS = {"factor_graph": "nearest", "neighbours": 2}


def _many_agent_coverage(num_agents: int) -> Suite:
    """Coverage with ``num_agents`` agents, fixed and random goals, progress shaping with gamma
    0.9 (as coverage-paper: potential-based shaping's signal fades before these teams reach
    the goals); spn-ac's family with networks shared by the agents and critics on each
    agent's 2 nearest others, spn-ac with sibling pairs (the nearest agents placed in the
    circuit's two-agent regions); the other factored critics on ``2 n`` random pairs."""
    size, buffer_size = _MANY_AGENTS[num_agents]
    fixed = {"num_agents": num_agents, "grid_size": size, "max_steps": 4 * size,
             **_LEARNABLE, "observation": "nearest"}
    name = f"coverage-{num_agents}x{size}x{size}"
    return Suite(
        f"coverage-{num_agents}",
        f"many agents: coverage, {num_agents} agents on {size}x{size} (one agent per 16 cells), "
        f"{4 * size} steps (4 grid sides), sparse reward, fixed goals (layout_seed 0) and "
        f"random goals, nearest observations, progress shaping with gamma 0.9, spn-ac's and "
        f"meanfield-ac's critics on each agent's 2 nearest others (spn-ac with sibling "
        f"pairs), dcg's on {2 * num_agents} random pairs, replay of {buffer_size:,} rows, "
        f"3 seeds",
        (Task(f"{name}-fixed", "coverage", fixed),
         Task(f"{name}-random", "coverage", {**fixed, "layout": "random"})),
        MANY_AGENT_ALGOS, 3,
        Protocol(total_steps=1_000_000, eval_interval=50_000, eval_episodes=32,
                 checkpoint_interval=25_000),
        config={"factor_graph": "random", "num_factors": 2 * num_agents, "factor_order": 2,
                "buffer_size": buffer_size, **_PROGRESS, **_SHARED_BY_AGENTS},
        algo_config={"spn-ac": {**_NEAREST_PAIRS, "sibling_pairs": True},
                     "meanfield-ac": dict(_NEAREST_PAIRS)})


_COVERAGE_QUICK_SUITE = Suite(
    "coverage-quick", "coverage, 3 agents on 6x6, 50 steps, sparse reward, fixed goals "
    "(layout_seed 0), relative observations, potential-based shaping",
    (Task("coverage-3x6x6-fixed", "coverage", _COVERAGE_QUICK),), ALL_ALGOS, 10,
    Protocol(total_steps=100_000, eval_interval=5_000, eval_episodes=100,
             checkpoint_interval=20_000),
    config=_SHAPING)


def _return_suite(name: str, description: str, tasks: tuple[Task, ...],
                  algos: tuple[str, ...], seeds: int, total_steps: int) -> Suite:
    """A suite on another library's tasks, whose tables report the greedy return: evaluated
    every 25,000 env steps over 32 episodes, checkpointed as often."""
    return Suite(name, description, tasks, algos, seeds,
                 Protocol(total_steps=total_steps, eval_interval=25_000, eval_episodes=32,
                          checkpoint_interval=25_000),
                 metric="return_mean")


SUITES: dict[str, Suite] = {suite.name: suite for suite in (
    Suite("matrix", "the matrix games (penalty with k = 0 .. 100); greedy success = the "
          "optimal joint action", _MATRIX_TASKS, ALL_ALGOS, 10,
          Protocol(total_steps=2_000, eval_interval=250, eval_episodes=8,
                   checkpoint_interval=500)),
    Suite("coordination", "the lift task (n agents must lift together once all have "
          "arrived; a failed attempt costs the penalty p): 2 agents at p = 0, 0.5, 1 and 3 "
          "agents at p = 0.5; greedy success = the object lifted",
          (_lift(2, 0.0), _lift(2, 0.5), _lift(2, 1.0), _lift(3, 0.5)),
          COORDINATION_ALGOS, 10,
          Protocol(total_steps=30_000, eval_interval=5_000, eval_episodes=50,
                   checkpoint_interval=10_000)),
    # The README's few-minute coordination demo: the penalised 2-agent lift, where the joint
    # policy coordinates and the factored ones do not.
    Suite("coordination-quick", "the README's coordination demo: the lift task, 2 agents, "
          "penalty 0.5, 3 seeds, 20,000 steps",
          (_lift(2, 0.5),), ("spn-ac", "meanfield-ac", "dcg", "vdn", "qmix", "mappo"), 3,
          Protocol(total_steps=20_000, eval_interval=2_500, eval_episodes=50,
                   checkpoint_interval=10_000)),
    _COVERAGE_QUICK_SUITE,
    dataclasses.replace(
        _COVERAGE_QUICK_SUITE, name="coverage-random",
        description="coverage-quick with goals redrawn every episode (the generalisation "
        "track), 5 seeds, 1,000,000 steps",
        tasks=(Task("coverage-3x6x6-random", "coverage", _COVERAGE_RANDOM),),
        algos=("spn-ac", "vdn", "qmix", "dcg"), seeds=5,
        protocol=Protocol(total_steps=1_000_000, eval_interval=50_000, eval_episodes=100,
                          checkpoint_interval=50_000)),
    # The README's few-minute demo: the coverage-quick setting made small enough for every
    # algorithm and 3 seeds to finish in minutes on 2 cores.
    Suite("coverage-quick-small", "coverage-quick reduced for the README's quick start: 2 "
          "agents on 4x4, 20 steps, fixed goals, relative observations, shaping, 3 seeds",
          (Task("coverage-2x4x4-fixed", "coverage", _COVERAGE_SMALL),), ALL_ALGOS, 3,
          Protocol(total_steps=30_000, eval_interval=2_000, eval_episodes=50,
                   checkpoint_interval=10_000),
          config=_SHAPING),
    Suite("coverage-paper", "the setting of the spn-ac paper: coverage, 6 agents on "
          "20x20, 200 steps, sparse reward, fixed goals, relative observations, progress "
          "shaping with gamma 0.9, critics on 20 random pairwise factors, 3 seeds",
          (Task("coverage-6x20x20-fixed", "coverage", _COVERAGE_PAPER),), ALL_ALGOS, 3,
          Protocol(total_steps=2_000_000, eval_interval=50_000, eval_episodes=100,
                   checkpoint_interval=25_000),
          config={"factor_graph": "random", "num_factors": 20, "factor_order": 2,
                  **_PROGRESS}),
    Suite("coverage-paper-random", "coverage-paper with goals redrawn every episode: 6 "
          "agents on 20x20, 200 steps, random goals, relative observations, progress shaping "
          "with gamma 0.9, critics on 20 random pairwise factors, 3 seeds, 2,000,000 steps",
          (Task("coverage-6x20x20-random", "coverage", {**_COVERAGE_PAPER, "layout": "random"}),),
          ("spn-ac", "meanfield-ac", "vdn", "qmix", "mappo"), 3,
          Protocol(total_steps=2_000_000, eval_interval=100_000, eval_episodes=100,
                   checkpoint_interval=50_000),
          config={"factor_graph": "random", "num_factors": 20, "factor_order": 2,
                  **_PROGRESS}),
    *(_many_agent_coverage(n) for n in _MANY_AGENTS),
    # The coordination family by team size. Under independent draws every agent lifts at
    # once with probability 4**-n (1/256 at 4 agents); shared exploration (a row's agents
    # take one action together) collects coordinated attempts at rate epsilon / 4.
    Suite("coordination-sizes", "the lift task at penalty 0.5 with 4, 6 and 8 agents (all "
          "must lift together once all have arrived), shared epsilon exploration (an "
          "exploring step's agents take one action together; 0.5 to 0.05 over 30,000 steps) "
          "for every replay learner; greedy success = the object lifted, 3 seeds, 50,000 steps",
          tuple(_lift(n, 0.5) for n in (4, 6, 8)),
          ("spn-ac", "meanfield-ac", "dcg", "vdn", "qmix", "mappo"), 3,
          Protocol(total_steps=50_000, eval_interval=5_000, eval_episodes=50,
                   checkpoint_interval=10_000),
          config={"exploration": "shared", "epsilon_start": 0.5, "epsilon_finish": 0.05,
                  "epsilon_anneal_steps": 30_000}),
    # Predator-prey with punishment (the Deep Coordination Graphs paper's relative
    # overgeneralisation task, its grid, team and punishment 2, the largest it reports; and
    # 4, past the point where a sum of per-agent values stops catching). At most 4 of the 8
    # prey can be caught (each capture removes its two catchers), so success never holds:
    # tables report the greedy return (at most 40).
    _return_suite(
        "predator-prey", "predator-prey with punishment (8 predators, 8 prey, 10x10, 5x5 "
        "view, 200 steps; a capture needs two predators catching at once, +10; a lone "
        "attempt costs the punishment) at punishment 2 (the DCG paper's largest) and 4; "
        "metric: greedy return (at most 40)",
        (Task("predator-prey-p2", "predator-prey", {"punishment": 2.0}),
         Task("predator-prey-p4", "predator-prey", {"punishment": 4.0})),
        ("spn-ac", "meanfield-ac", "dcg", "vdn", "qmix"), 10, total_steps=200_000),
    # Level-based foraging (Albrecht, Christianos and Schaefer 2024), the common-reward
    # task: every agent gets the team's summed reward, which the value-factorisation
    # methods need. No success flag: tables report the greedy return (1.0 = all food
    # collected).
    _return_suite(
        "lbf", "level-based foraging 8x8, 2 players, 2 food, common reward, 50 steps; the "
        "on-policy actor-critics beside spn-ac and vdn; metric: greedy return",
        (Task("Foraging-8x8-2p-2f", "lbf/Foraging-8x8-2p-2f-v3", {"common_reward": True}),),
        (*ONPOLICY_ALGOS, "spn-ac", "vdn"), 5, total_steps=500_000),
    # A coordination task from another library: the one food needs all three players to load
    # at once (-coop), and lbforaging's penalty is charged for every load that fails, so a
    # lone attempt costs as in the lift task.
    _return_suite(
        "lbf-coop", "level-based foraging 5x5, 3 players, 1 food that needs all three to "
        "load at once (-coop), a failed load costs 0.5 (lbforaging's penalty), common reward, "
        "50 steps; metric: greedy return",
        (Task("Foraging-5x5-3p-1f-coop-p0.5", "lbf/Foraging-5x5-3p-1f-coop-v3",
              {"common_reward": True, "penalty": 0.5}),),
        ("spn-ac", "meanfield-ac", "vdn", "qmix", "dcg", "mappo"), 5, total_steps=100_000),
    # Cooperative navigation, the MA-SAC paper's comparison with MADDPG: 3 agents, episodes
    # of 25 steps, its budget of 15,000 episodes (375,000 env steps).
    _return_suite(
        "mpe-spread", "mpe2 simple_spread: 3 agents, 3 landmarks, 25 steps, shared reward, "
        "375k steps (15,000 episodes, the MA-SAC paper's budget); masac and maddpg beside "
        "spn-ac and vdn; metric: greedy return",
        (Task("simple_spread-N3", "mpe/simple_spread", {"N": 3, "max_cycles": 25}),),
        ("masac", "maddpg", "spn-ac", "vdn"), 10, total_steps=375_000),
    # VMAS dispersion (Bettini et al. 2022), the public task nearest to coverage: the team
    # starts together at the centre and must spread out over as many foods. Its return, the
    # fraction of the food eaten, compares team sizes; success (all of it eaten within 100
    # steps) is recorded beside it.
    _return_suite(
        "vmas-dispersion", "VMAS dispersion (extra vmas): 4 and 16 agents start at the "
        "centre and must eat as many foods, placed at random, within 100 steps; discrete "
        "moves; metric: greedy return = the fraction of the food eaten",
        (Task("dispersion-4", "vmas/dispersion", {"n_agents": 4}),
         Task("dispersion-16", "vmas/dispersion", {"n_agents": 16})),
        ("spn-ac", "meanfield-ac", "vdn", "qmix", "mappo"), 5, total_steps=300_000),
)}


def get_suite(name: str) -> Suite:
    """The suite ``name``; ValueError listing the valid names otherwise."""
    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r}; valid: {', '.join(SUITES)}")
    return SUITES[name]
