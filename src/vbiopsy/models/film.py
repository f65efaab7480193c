"""FiLM (feature-wise linear modulation) of 3D feature maps by a condition vector.

ASLNet's survival model conditions the late ResNet blocks on the clinical vector: each
conditioned block owns one :class:`FiLMGenerator` that maps the shared condition ``t`` (B, D) to a
per-channel scale γ and shift β (B, C), applied as ``γ ⊙ x + β`` on the block's main path after
its last GroupNorm and before the residual add.

The generator is built so that it starts as the identity and stays bounded (reference code
§3.3): both heads are zero-initialised and squashed by ``tanh``, then multiplied by their own
scalar gate ``g = 0.5·sigmoid(ℓ) ∈ (0, 0.5)``, so ``γ = 1 + g_γ·tanh(·) ∈ (0.5, 1.5)`` and
``β = g_β·tanh(·) ∈ (−0.5, 0.5)``. ℓ starts at ``logit(0.1)``, hence g starts at **0.05** (the
reference comment saying the gate starts at "0.1" is stale: 0.1 is the sigmoid, not the gate).

This module is the lowest layer of :mod:`vbiopsy.models`, so it also holds the small argument
checks shared by the other model modules.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from vbiopsy.errors import ConfigError, InputError

#: sigmoid value the gate logits start at; the gate itself starts at 0.5 × this = 0.05.
GATE_SIGMOID_INIT = 0.1
#: largest possible gate value: 0.5·sigmoid(ℓ) < 0.5, so |γ − 1| < 0.5 and |β| < 0.5.
GATE_MAX = 0.5


def _is_int(value: object) -> bool:
    """True for Python/NumPy integers, False for bools and everything else."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_int(name: str, value: object, minimum: int = 1) -> int:
    """``value`` as an int ≥ ``minimum``, else ConfigError naming ``name`` and the value (bools refused)."""
    if not _is_int(value) or value < minimum:  # type: ignore[operator]
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)  # type: ignore[call-overload]


def check_rate(name: str, value: object) -> float:
    """``value`` as a dropout probability in [0, 1), else ConfigError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) < 1.0:
        raise ConfigError(f"{name} must be a probability in [0, 1), got {value!r}")
    return float(value)


def check_int_sequence(name: str, values: object, *, allow_empty: bool, minimum: int) -> tuple[int, ...]:
    """``values`` as a tuple of ints ≥ ``minimum`` (non-empty unless allowed), else ConfigError."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ConfigError(f"{name} must be a sequence of integers, got {values!r}")
    items = tuple(values)
    bad = [v for v in items if not _is_int(v) or v < minimum]
    if bad or (not items and not allow_empty):
        raise ConfigError(f"{name} must be a {'possibly empty' if allow_empty else 'non-empty'} sequence of "
                          f"integers >= {minimum}, got {list(items)!r}")
    return tuple(int(v) for v in items)


def modulate(x: Tensor, gamma: Tensor, beta: Tensor) -> Tensor:
    """``γ ⊙ x + β`` with γ, β (B, C) broadcast over the spatial axes of x (B, C, *spatial)."""
    if gamma.shape != beta.shape or gamma.shape != x.shape[:2]:
        raise InputError("film", f"gamma {tuple(gamma.shape)} and beta {tuple(beta.shape)} must both be "
                                 f"(batch, channels) = {tuple(x.shape[:2])}")
    view = (*gamma.shape, *([1] * (x.dim() - 2)))
    return x * gamma.reshape(view) + beta.reshape(view)


class FiLMGenerator(nn.Module):
    """Condition (B, D) → (γ, β), each (B, C); exactly γ = 1, β = 0 at initialisation.

    Linear(D, hidden) → ReLU → Dropout → two zero-initialised heads Linear(hidden, C) → tanh,
    each scaled by its own gate 0.5·sigmoid(ℓ). Per block, never shared (reference §3.3).

    Args:
        condition_dim: D, length of the condition vector.
        channels: C, channels of the modulated feature map.
        hidden: width of the hidden layer.
        dropout: dropout after the hidden ReLU (omitted at 0).
    """

    def __init__(self, condition_dim: int, channels: int, *, hidden: int = 64, dropout: float = 0.1) -> None:
        super().__init__()
        self.condition_dim = check_int("film_dim", condition_dim)
        self.channels = check_int("film channels", channels)
        hidden = check_int("film_hidden", hidden)
        rate = check_rate("film_dropout", dropout)
        self.hidden = nn.Linear(condition_dim, hidden)
        self.hidden_dropout = nn.Dropout(rate) if rate > 0 else nn.Identity()
        self.gamma_head = nn.Linear(hidden, channels)
        self.beta_head = nn.Linear(hidden, channels)
        start = math.log(GATE_SIGMOID_INIT / (1.0 - GATE_SIGMOID_INIT))
        self.gamma_gate_logit = nn.Parameter(torch.tensor(start))
        self.beta_gate_logit = nn.Parameter(torch.tensor(start))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Glorot-uniform hidden layer with zero bias; zero heads (identity FiLM); gates at 0.05."""
        nn.init.xavier_uniform_(self.hidden.weight)
        nn.init.zeros_(self.hidden.bias)
        for head in (self.gamma_head, self.beta_head):
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
        start = math.log(GATE_SIGMOID_INIT / (1.0 - GATE_SIGMOID_INIT))
        with torch.no_grad():
            self.gamma_gate_logit.fill_(start)
            self.beta_gate_logit.fill_(start)

    def gates(self) -> tuple[Tensor, Tensor]:
        """Scalar gates (g_γ, g_β), each in (0, 0.5)."""
        return GATE_MAX * torch.sigmoid(self.gamma_gate_logit), GATE_MAX * torch.sigmoid(self.beta_gate_logit)

    def forward(self, condition: Tensor) -> tuple[Tensor, Tensor]:
        """γ (B, C) in (0.5, 1.5) and β (B, C) in (−0.5, 0.5) for condition (B, D)."""
        if condition.dim() != 2 or condition.shape[1] != self.condition_dim:
            raise InputError("condition", f"expected shape (batch, {self.condition_dim}), got {tuple(condition.shape)}")
        h = self.hidden_dropout(torch.relu(self.hidden(condition)))
        g_gamma, g_beta = self.gates()
        gamma = 1.0 + g_gamma * torch.tanh(self.gamma_head(h))
        beta = g_beta * torch.tanh(self.beta_head(h))
        return gamma, beta

    def extra_repr(self) -> str:
        return f"condition_dim={self.condition_dim}, channels={self.channels}"
