"""Masked Channel Attention (MCA): channel weights from the features inside the tumour prior (paper §4.4).

For backbone features ``F`` (B, C, x, y, z) and a spatial prior ``M`` (B, 1, x, y, z) in [0, 1] on
the same grid, Eq. (7) pools each channel over the prior only::

    z_c = Σ_v F_c(v)·M(v) / (Σ_v M(v) + ε)

and Eq. (8) turns the descriptor into channel weights ``w = σ(W₂ ReLU(W₁ z))`` (C → C/r → C) that
rescale the whole map, ``F_att = F ⊙ w``. The map keeps its whole-brain extent ("soft" attention):
only the statistic that chooses the channels is restricted to the tumour.

Empty prior → whole brain: a sample whose mask sums to 0 has no tumour evidence, so its descriptor is
the plain global average of ``F`` (the MCA then acts as a squeeze-and-excitation block) instead of
``0 / ε = 0``. The prior usually lives on the image grid; :func:`resize_prior` brings it onto the
coarser feature grid by area averaging, so each feature voxel gets the tumour fraction of its footprint.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vbiopsy.errors import ConfigError, InputError
from vbiopsy.models.film import check_int


def _check_volume(name: str, value: object, channels: int | None = None) -> Tensor:
    """``value`` if it is a floating (B, C, x, y, z) tensor (C = ``channels`` when given), else InputError."""
    if not isinstance(value, Tensor):
        raise InputError(name, f"expected a torch.Tensor, got {type(value).__name__}")
    if value.dim() != 5 or value.shape[0] < 1 or (channels is not None and value.shape[1] != channels):
        expected = "(B, C, x, y, z)" if channels is None else f"(B, {channels}, x, y, z)"
        raise InputError(name, f"expected shape {expected}, got {tuple(value.shape)}")
    if not value.is_floating_point():
        raise InputError(name, f"expected a floating-point tensor, got dtype {value.dtype}")
    return value


def check_unit_interval(name: str, values: Tensor) -> None:
    """InputError naming ``name`` if any value is NaN or outside [0, 1] (one device sync)."""
    if bool((~((values >= 0) & (values <= 1))).any()):
        bad = values[~((values >= 0) & (values <= 1))][0].item()
        raise InputError(name, f"values must lie in [0, 1], found {bad!r}")


def masked_average_pool(features: Tensor, mask: Tensor, eps: float = 1e-6) -> Tensor:
    """Per-channel mean of ``features`` (B, C, x, y, z) weighted by ``mask`` (B, 1, x, y, z) → (B, C).

    ``mask`` values in [0, 1]; soft values weight voxels proportionally (Eq. 7). A sample whose mask
    sums to 0 gets the plain global average (empty prior → whole brain). ``eps`` ≥ 0 is the paper's
    stabiliser in the denominator.
    """
    _check_volume("features", features)
    _check_volume("mask", mask, channels=1)
    if mask.shape[0] != features.shape[0] or mask.shape[2:] != features.shape[2:]:
        raise InputError("mask", f"expected shape ({features.shape[0]}, 1, {', '.join(map(str, features.shape[2:]))})"
                                 f" to match the features {tuple(features.shape)}, got {tuple(mask.shape)}")
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not math.isfinite(eps) or eps < 0:
        raise ConfigError(f"eps must be a finite number >= 0, got {eps!r}")
    check_unit_interval("mask", mask)
    weights = mask.to(features.dtype)
    total = weights.sum(dim=(2, 3, 4))  # (B, 1)
    masked = (features * weights).sum(dim=(2, 3, 4)) / (total + eps)
    return torch.where(total > 0, masked, features.mean(dim=(2, 3, 4)))


def resize_prior(prior: Tensor, size: Sequence[int]) -> Tensor:
    """Prior (B, 1, X, Y, Z) resized to the grid ``size`` (x, y, z), clamped to [0, 1].

    Area averaging (the mean of the prior over each target voxel's footprint) when no axis grows, which
    keeps the tumour fraction and never misses a small tumour; trilinear (``align_corners=False``) when
    any axis grows. The input grid is returned unchanged (clamped) when it already matches.
    """
    _check_volume("prior", prior, channels=1)
    target = tuple(size) if isinstance(size, Sequence) and not isinstance(size, str) else None
    if target is None or len(target) != 3:
        raise ConfigError(f"size must be 3 positive integers (x, y, z), got {size!r}")
    # under ONNX / TorchScript tracing the sizes arrive as 0-d tensors: the grid is fixed, so take their values
    target = tuple(check_int("size entries", int(n) if isinstance(n, Tensor) and n.dim() == 0 else n) for n in target)
    if bool(torch.isnan(prior).any()):
        raise InputError("prior", "contains NaN values")
    if target == tuple(prior.shape[2:]):
        resized = prior
    elif all(t <= s for t, s in zip(target, prior.shape[2:])):
        resized = F.interpolate(prior, size=target, mode="area")
    else:
        resized = F.interpolate(prior, size=target, mode="trilinear", align_corners=False)
    return resized.clamp(0.0, 1.0)


class MaskedChannelAttention(nn.Module):
    """MCA block: ``(F, M) → (F ⊙ w, w)`` with ``w = σ(MLP(masked_average_pool(F, M)))`` in (0, 1)^C.

    Args:
        in_channels: C, channels of the feature map.
        reduction: r; the MLP is Linear(C, max(1, C // r)) → ReLU → Linear(·, C).
        eps: stabiliser of the masked average (Eq. 7).
    """

    def __init__(self, in_channels: int, reduction: int = 4, *, eps: float = 1e-6) -> None:
        super().__init__()
        self.in_channels = check_int("in_channels", in_channels)
        self.reduction = check_int("reduction", reduction)
        if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not math.isfinite(eps) or eps < 0:
            raise ConfigError(f"eps must be a finite number >= 0, got {eps!r}")
        self.eps = float(eps)
        hidden = max(1, self.in_channels // self.reduction)
        self.mlp = nn.Sequential(nn.Linear(self.in_channels, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, self.in_channels))

    def weights(self, features: Tensor, mask: Tensor) -> Tensor:
        """Channel weights w (B, C) in (0, 1) for features (B, C, x, y, z) and mask (B, 1, x, y, z)."""
        _check_volume("features", features, channels=self.in_channels)
        return torch.sigmoid(self.mlp(masked_average_pool(features, mask, self.eps)))

    def forward(self, features: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """``(F ⊙ w, w)``: recalibrated features (B, C, x, y, z) and the weights (B, C)."""
        w = self.weights(features, mask)
        return features * w[:, :, None, None, None], w

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, reduction={self.reduction}"
