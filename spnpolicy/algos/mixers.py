"""Mixing networks of value decomposition: ``Q_tot(s, u) = mix(Q_1(o_1, u_1), ..., Q_n(o_n, u_n); s)``.

- :class:`VdnMixer` (Sunehag et al. 2018): ``Q_tot = sum_i Q_i``.
- :class:`QmixMixer` (Rashid et al. 2018), as in EPyMARL's ``QMixer`` with two hypernetwork
  layers: state-conditioned weights made non-negative by ``abs``, so ``dQ_tot / dQ_i >= 0``
  (monotonic), an ELU hidden layer of ``embed_dim`` units and a state-dependent bias ``V(s)``.

Both map agent values ``q`` ``[B, n]`` and global states ``[B, state_dim]`` to ``[B]``.

```python
mixer = make_mixer("qmix", num_agents=3, state_dim=16)
q_tot = mixer(torch.randn(32, 3), torch.randn(32, 16))     # [32]
```
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["MIXERS", "QmixMixer", "VdnMixer", "make_mixer"]

#: Mixer names: ``none`` is independent learning (IQL, no mixing).
MIXERS = ("none", "vdn", "qmix")


class VdnMixer(nn.Module):
    """``Q_tot = sum_i Q_i``; the state is not used."""

    def forward(self, q: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """``q`` ``[B, n]``, ``state`` ``[B, S]`` -> ``[B]``."""
        return q.sum(-1)


class QmixMixer(nn.Module):
    """QMIX's monotonic mixer.

    ``h = elu(q W_1(s) + b_1(s))``, ``Q_tot = h w_2(s) + V(s)`` with ``W_1 = |hyper_w1(s)|``
    ``[n, embed_dim]`` and ``w_2 = |hyper_w2(s)|`` ``[embed_dim]``; ``hyper_w1``/``hyper_w2``
    are two-layer ReLU MLPs of width ``hypernet_embed``, ``b_1`` linear, ``V`` a two-layer MLP.

    Args:
        num_agents: ``n``.
        state_dim: global state size ``S``.
        embed_dim: mixing hidden units (EPyMARL ``mixing_embed_dim``, 32).
        hypernet_embed: hidden width of the weight hypernetworks (EPyMARL 64).
    """

    def __init__(self, num_agents: int, state_dim: int, embed_dim: int = 32,
                 hypernet_embed: int = 64) -> None:
        super().__init__()
        self.num_agents, self.embed_dim = num_agents, embed_dim
        self.hyper_w1 = nn.Sequential(nn.Linear(state_dim, hypernet_embed), nn.ReLU(),
                                      nn.Linear(hypernet_embed, num_agents * embed_dim))
        self.hyper_w2 = nn.Sequential(nn.Linear(state_dim, hypernet_embed), nn.ReLU(),
                                      nn.Linear(hypernet_embed, embed_dim))
        self.hyper_b1 = nn.Linear(state_dim, embed_dim)
        self.value = nn.Sequential(nn.Linear(state_dim, embed_dim), nn.ReLU(),
                                   nn.Linear(embed_dim, 1))

    def forward(self, q: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """``q`` ``[B, n]``, ``state`` ``[B, S]`` -> ``[B]``, non-decreasing in every ``q_i``."""
        w1 = self.hyper_w1(state).abs().view(-1, self.num_agents, self.embed_dim)
        hidden = F.elu(torch.bmm(q.unsqueeze(1), w1).squeeze(1) + self.hyper_b1(state))
        w2 = self.hyper_w2(state).abs()
        return (hidden * w2).sum(-1) + self.value(state).squeeze(-1)


def make_mixer(kind: str, num_agents: int, state_dim: int, embed_dim: int = 32,
               hypernet_embed: int = 64) -> nn.Module | None:
    """The mixer called ``kind`` (one of :data:`MIXERS`); ``None`` for ``none``."""
    if kind not in MIXERS:
        raise ValueError(f"mixer must be one of {MIXERS}, got {kind!r}")
    if kind == "vdn":
        return VdnMixer()
    if kind == "qmix":
        return QmixMixer(num_agents, state_dim, embed_dim, hypernet_embed)
    return None
