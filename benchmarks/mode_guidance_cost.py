"""The update cost of mode guidance: spn-ac updates on coverage-quick (3 agents, 6x6) with
mode_guidance 0.1 and 0, built in one process, alternating in blocks of 40 updates over 12
rounds; median CPU ms per update. Prints one JSON line (machine-dependent; quote ratios).

    python benchmarks/mode_guidance_cost.py > benchmarks/results/coordination/mode_guidance_cost.json
"""
import time, json, numpy as np, torch
from spnpolicy.algos.spn_ac import SpnAc, SpnAcConfig
from spnpolicy.training import make_vec_env
from spnpolicy.training.buffer import ReplayBuffer
torch.set_num_threads(1)
envs = make_vec_env("coverage", 16, seed=0, num_agents=3, grid_size=6, max_steps=50, reward="sparse", layout="fixed", observation="relative")
algs = {}
for g in (0.1, 0.0):
    torch.manual_seed(0)
    algs[g] = SpnAc(SpnAcConfig(mode_guidance=g, regulariser="kl_uniform"), envs)
buf = ReplayBuffer(10000, envs.state_dim, envs.num_agents, seed=0)
from spnpolicy.training.runner import Runner
r = Runner(envs); r.reset(seed=0); rng = np.random.default_rng(0)
from spnpolicy.training.stream import TransitionStream
st = TransitionStream(envs, 1, 0.99, False, seed=0)
for _ in range(300): buf.add(st.push(r.step(rng.integers(0, 6, size=(16, 3)))))
times = {0.1: [], 0.0: []}
for rnd in range(12):
    for g, a in algs.items():
        batch = buf.sample(128)
        a.update(batch)
        t = time.process_time()
        for _ in range(40): a.update(buf.sample(128))
        times[g].append((time.process_time() - t) / 40 * 1e3)
res = {str(g): float(np.median(v)) for g, v in times.items()}
res["ratio_guided_over_plain"] = res["0.1"] / res["0.0"]
print(json.dumps(res))
