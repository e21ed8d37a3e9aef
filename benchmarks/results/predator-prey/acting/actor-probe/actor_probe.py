"""Study code (not part of the package): the actor of a trained spn-ac run alone, on its frozen
critics. Collects 6,400 states by playing the critics' max-plus argmax with 20% uniform actions,
then steps only the policy on the actor loss (batch 128, Adam lr 1e-3) and plays its mode.

    python actor_probe.py RUN_DIR LR GUIDANCE_WEIGHT MODE_FLOOR   (MODE_FLOOR 1 or inf)
"""
import sys, json, time, torch, numpy as np
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[4]))
from predator_prey_diagnosis import load_algorithm
from spnpolicy.training.evaluation import evaluate
from spnpolicy.algos.spn_ac import critics_factor_modes
torch.set_num_threads(1)
run, lr, guide, floor = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
alg, envs, saved = load_algorithm(run, 16, 7)
alg.guidance.weight = guide
if floor == float("inf"):
    alg.guidance.log_floor = torch.zeros_like(alg.guidance.log_floor)
g = torch.Generator().manual_seed(0)
def mode(s, o):
    return alg.policy.distribution(torch.as_tensor(s)).mode.numpy()
def crit(s, o):
    v = alg._values(alg.critic, torch.as_tensor(s), torch.as_tensor(o))
    return critics_factor_modes(v)[0].numpy()
# states from the critics' greedy play with 20% uniform actions
S, O = [], []
state, obs = envs.reset(seed=3)
rng = np.random.default_rng(0)
with torch.no_grad():
    for t in range(400):
        a = crit(state, obs)
        flip = rng.random(a.shape) < 0.2
        a = np.where(flip, rng.integers(0, 6, a.shape), a)
        S.append(state.copy()); O.append(obs.copy())
        state, obs, *_ = envs.step(a)
S = torch.as_tensor(np.concatenate(S)); O = torch.as_tensor(np.concatenate(O))
print("states", S.shape, flush=True)
opt = torch.optim.Adam(alg.policy.encoder.parameters(), lr=lr)
alpha = alg.temperature.value
t0 = time.time()
for it in range(3001):
    if it % 750 == 0:
        with torch.no_grad():
            r = evaluate(mode, envs, 16, seed=555)["return_mean"]
            ent = alg.policy.distribution(S[:512]).entropy().mean().item()
        print(json.dumps({"it": it, "mode_return": r, "entropy": ent, "s": round(time.time()-t0)}), flush=True)
    idx = torch.randint(len(S), (128,))
    loss, _, _ = alg._actor_loss(S[idx], O[idx], alpha)
    opt.zero_grad(); loss.backward()
    torch.nn.utils.clip_grad_norm_(alg.policy.encoder.parameters(), 10.0)
    opt.step()
