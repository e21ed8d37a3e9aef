"""spn-ac's TorchRL loss module against brute-force enumeration of all joint actions."""

import itertools
import math

import pytest
import torch

pytest.importorskip("torchrl")

from tensordict import TensorDict  # noqa: E402
from torchrl.objectives import SoftUpdate  # noqa: E402

from factor_q import AgentFactorQ  # noqa: E402
from spnpolicy.algos.critics import TwinFactorQ, build_factor_graph  # noqa: E402
from spnpolicy.algos.policies import JointPolicy  # noqa: E402
from spnpolicy.integrations.spn_ac_loss import SpnAcLoss  # noqa: E402

N, K, OBS, B = 3, 3, 2, 6
GAMMA, ALPHA = 0.9, 0.3
TABLE = torch.tensor(list(itertools.product(range(K), repeat=N)))   # [27, N]


def _loss(mode_guidance=0.0, autotune_alpha=False, regulariser="entropy", seed=0,
          mode_floor=1.0, agents=False) -> SpnAcLoss:
    """``agents``: the policy's agents head and ``AgentFactorQ`` critics, both on the
    observations ``[B, N, OBS]``; else both on their concatenation."""
    torch.manual_seed(seed)
    graph = build_factor_graph("complete", N)
    if agents:
        policy = JointPolicy(N * OBS, N, K, "selective", width=4, hidden=(8,),
                             param_head="agents", obs_dim=OBS)
        with torch.no_grad():             # away from the near-uniform initialisation
            for param in policy.encoder.parameters():
                param.mul_(10.0)
        critic = AgentFactorQ(graph, OBS, K, (8,), payoff_hidden=4, ensemble=2)
    else:
        policy = JointPolicy(N * OBS, N, K, "selective", width=4, hidden=(8,))
        with torch.no_grad():             # away from the near-uniform initialisation
            policy.encoder[-1].weight.mul_(100.0)
        critic = TwinFactorQ(graph, N * OBS, K, (8,))
    loss = SpnAcLoss(policy, critic, gamma=GAMMA, alpha=ALPHA, autotune_alpha=autotune_alpha,
                     target_entropy_scale=0.3, regulariser=regulariser,
                     mode_guidance=mode_guidance, mode_floor=mode_floor, group="team")
    SoftUpdate(loss, tau=0.5)
    _perturb_targets(loss)                # targets that differ from the critics
    return loss


def _perturb_targets(loss: SpnAcLoss) -> None:
    with torch.no_grad():
        for target in loss.target_critic_params.values(True, True):
            if target.is_floating_point():          # not the graph's index buffers
                target.add_(torch.randn_like(target))


def _batch(seed=1) -> TensorDict:
    g = torch.Generator().manual_seed(seed)
    terminated = torch.zeros(B, N, 1, dtype=torch.bool)
    terminated[:2, 1] = True                                   # one agent's end ends it
    return TensorDict({
        "team": TensorDict({"observation": torch.randn(B, N, OBS, generator=g),
                            "action": torch.randint(0, K, (B, N), generator=g)}, [B, N]),
        "next": TensorDict({"team": TensorDict({
            "observation": torch.randn(B, N, OBS, generator=g),
            "reward": torch.randn(B, N, 1, generator=g),
            "terminated": terminated}, [B, N])}, [B]),
    }, [B])


def _probs(policy: JointPolicy, states: torch.Tensor) -> torch.Tensor:
    """``pi(u | s)`` ``[B, 27]`` for every joint action, from the circuit engine."""
    dist = policy.distribution(states)
    return dist.log_prob(TABLE[:, None, :].expand(-1, states.shape[0], -1)).exp().T


def _tables(critic: TwinFactorQ, states: torch.Tensor) -> torch.Tensor:
    """Both critics' ``Q(s, u)`` ``[2, B, 27]`` for every joint action."""
    values = critic(states)
    return torch.stack([torch.stack([v.evaluate(u.expand(states.shape[0], -1))
                                     for u in TABLE], -1) for v in values])


def _brute_force(loss: SpnAcLoss, td: TensorDict, regulariser_offset: float = 0.0):
    """``(loss_qvalue, loss_actor, entropy [B])`` by enumerating the 27 joint actions."""
    obs, next_obs = td["team", "observation"], td["next", "team", "observation"]
    policy_agents = loss.policy.param_head == "agents"
    critic_agents = isinstance(loss.critic, AgentFactorQ)
    state, next_state = (obs, next_obs) if policy_agents else \
        (obs.flatten(-2), next_obs.flatten(-2))
    critic_state, next_critic_state = (obs, next_obs) if critic_agents else \
        (obs.flatten(-2), next_obs.flatten(-2))
    with torch.no_grad():
        with loss.target_critic_params.to_module(loss.critic):
            next_q = _tables(loss.critic, next_critic_state)
        with loss.critic_params.to_module(loss.critic):
            q_all = _tables(loss.critic, critic_state)
        p_next, p = _probs(loss.policy, next_state), _probs(loss.policy, state)
        h_next, h = -(p_next * p_next.log()).sum(-1), -(p * p.log()).sum(-1)
        value = (p_next * next_q).sum(-1).min(0).values + ALPHA * (h_next - regulariser_offset)
        reward = td["next", "team", "reward"].mean((1, 2))
        alive = 1.0 - td["next", "team", "terminated"].any(1).squeeze(-1).float()
        target = reward + GAMMA * alive * value
        index = (td["team", "action"] * torch.tensor([K * K, K, 1])).sum(-1)
        q = q_all.gather(2, index.expand(2, -1)[..., None])[..., 0]
        loss_q = ((q - target) ** 2).mean(1).sum()
        loss_actor = -((p * q_all).sum(-1).min(0).values + ALPHA * h).mean()
    return loss_q, loss_actor, h, q_all, p


@pytest.mark.parametrize("agents", [False, True], ids=["concatenated", "agents"])
@pytest.mark.parametrize("regulariser", ["entropy", "kl_uniform"])
def test_losses_equal_enumeration(regulariser, agents):
    loss, td = _loss(regulariser=regulariser, agents=agents), _batch()
    out = loss(td)
    offset = N * math.log(K) if regulariser == "kl_uniform" else 0.0
    loss_q, loss_actor, h, _, _ = _brute_force(loss, td, offset)
    assert h.mean() < N * math.log(K) - 0.05         # not the uniform policy
    assert torch.allclose(out["loss_qvalue"], loss_q, rtol=1e-4)
    assert torch.allclose(out["loss_actor"], loss_actor, rtol=1e-4, atol=1e-5)
    assert torch.allclose(out["entropy"], h.mean(), rtol=1e-4)
    assert "loss_alpha" not in out.keys()


@pytest.mark.parametrize("twins", ["independent", "identical"])
@pytest.mark.parametrize("mode_floor", [1.0, 1e9])
def test_mode_guidance_adds_the_log_likelihood_of_the_critics_best_joint_action(mode_floor,
                                                                              twins):
    """Guidance ``-0.25 mean(agree * min(log pi(u*), log floor))``: ``u*`` the first critic's
    argmax, ``agree`` where both critics' argmaxes (by enumeration) are the same, the floor
    ``min(1, mode_floor * K**-N)``. Identical twins agree on every state."""
    td = _batch()
    guided = _loss(mode_guidance=0.25, mode_floor=mode_floor)
    if twins == "identical":
        with torch.no_grad():
            for params in (guided.critic_params, guided.target_critic_params):
                for param in params.values(True, True):
                    if param.is_floating_point():
                        param[1].copy_(param[0])
    out = guided(td)
    _, plain_actor, _, q_all, p = _brute_force(guided, td)
    best = q_all.argmax(-1)                                       # [2, B] index into TABLE
    agree = (best[0] == best[1]).to(p.dtype)
    assert agree.all() if twins == "identical" else not agree.all()
    log_p_best = p.gather(1, best[0][:, None]).log().squeeze(1)
    floor = min(0.0, math.log(mode_floor * K ** -N))
    assert (log_p_best < floor).any()
    expected = -0.25 * (agree * log_p_best.clamp(max=floor)).mean()
    assert torch.allclose(out["loss_actor"], plain_actor + expected, rtol=1e-4, atol=1e-5)


def test_each_loss_reaches_only_its_own_parameters():
    loss, td = _loss(autotune_alpha=True), _batch()
    out = loss(td)
    critic = [p for p in loss.critic_params.values(True, True) if p.requires_grad]
    owners = {"loss_qvalue": critic, "loss_actor": list(loss.policy.encoder.parameters()),
              "loss_alpha": [loss.log_alpha]}
    everything = [p for params in owners.values() for p in params]
    for name, own in owners.items():
        grads = torch.autograd.grad(out[name], everything, allow_unused=True, retain_graph=True)
        reached = {id(p) for p, g in zip(everything, grads) if g is not None and g.abs().sum() > 0}
        assert reached == {id(p) for p in own}, name
    target = 0.3 * N * math.log(K)
    assert torch.allclose(out["loss_alpha"], ALPHA * (out["entropy"] - target), rtol=1e-4)


def test_the_target_critics_follow_by_polyak_averaging():
    loss = _loss()
    updater = SoftUpdate(loss, tau=0.25)                  # copies the critics into the targets
    _perturb_targets(loss)
    before = [t.clone() for t in loss.target_critic_params.values(True, True)]
    updater.step()
    for old, new, source in zip(before, loss.target_critic_params.values(True, True),
                                loss.critic_params.values(True, True)):
        if not source.is_floating_point():          # the graph's index buffers
            assert torch.equal(new, source)
            continue
        assert torch.allclose(new, 0.75 * old + 0.25 * source.detach(), atol=1e-6)


def test_mismatched_critic_is_named():
    policy = JointPolicy(N * OBS, N, K, "selective", width=4, hidden=(8,))
    critic = TwinFactorQ(build_factor_graph("complete", N), N * OBS, K + 1, (8,))
    with pytest.raises(ValueError, match="critic must be over the policy's 3 agents, 3 actions"):
        SpnAcLoss(policy, critic, gamma=GAMMA, alpha=ALPHA, autotune_alpha=False,
                  target_entropy_scale=0.3, regulariser="entropy", mode_guidance=0.0)


def test_agents_critics_must_be_twins_without_a_state_input():
    policy = JointPolicy(N * OBS, N, K, "selective", width=4, hidden=(8,),
                         param_head="agents", obs_dim=OBS)
    graph = build_factor_graph("complete", N)
    kwargs = dict(gamma=GAMMA, alpha=ALPHA, autotune_alpha=False, target_entropy_scale=0.3,
                  regulariser="entropy", mode_guidance=0.0)
    with pytest.raises(ValueError, match="twin critics \\(ensemble=2\\), got ensemble=None"):
        SpnAcLoss(policy, AgentFactorQ(graph, OBS, K, (8,)), **kwargs)
    with pytest.raises(ValueError, match="global state input \\(state_dim=4\\)"):
        SpnAcLoss(policy, AgentFactorQ(graph, OBS, K, (8,), state_dim=4, ensemble=2), **kwargs)
    with pytest.raises(ValueError, match="graph per state .* needs the agents' positions"):
        SpnAcLoss(policy, AgentFactorQ(build_factor_graph("nearest", N), OBS, K, (8,),
                                       ensemble=2), **kwargs)
    with pytest.raises(ValueError, match="critic must be over .* got 3, 3 and \\[3, 3\\]"):
        SpnAcLoss(policy, AgentFactorQ(graph, OBS + 1, K, (8,), ensemble=2), **kwargs)
