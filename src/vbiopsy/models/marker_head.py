"""Molecular-marker head of MGMT-Net (paper §3.4): tumour-gated bottleneck → pooling → one MLP per marker.

1. Gate: the bottleneck features (B, C, x, y, z) are multiplied by the predicted tumour
   probability ``1 − softmax(seg_logits)[:, 0]`` average-pooled from (X, Y, Z) down to (x, y, z),
   so background voxels contribute (almost) nothing. The gate is not detached: the marker loss
   also trains the segmentation path, as in the paper's end-to-end training.
2. Pool: ``"attention"`` = the paper's attention-based global pooling,
   ``w = softmax_voxels(W_a · tanh(W_f · F))``, ``z = Σ w · F`` (W_f: 1³ conv C → C with bias,
   W_a: 1³ conv C → 1 without bias, as a shared bias cannot change a softmax); ``"gap"`` = plain
   global average pooling (the paper's ablation).
3. Per marker: Dropout(0.3) → Linear(C, hidden) → ReLU → Linear(hidden, 1), a logit (the loss or
   the caller applies the sigmoid).

The attention map (B, 1, x, y, z), summing to 1 per sample, is returned for explanations.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from vbiopsy.errors import ConfigError, InputError
from vbiopsy.models.film import check_int, check_rate

Pooling = Literal["attention", "gap"]


def tumour_gate(seg_logits: Tensor, grid: tuple[int, ...]) -> Tensor:
    """Tumour probability 1 − softmax background (B, 1, X, Y, Z), average-pooled to ``grid`` → (B, 1, *grid)."""
    if seg_logits.dim() != 5 or seg_logits.shape[1] < 2:
        raise InputError("seg_logits", f"expected shape (batch, classes >= 2, X, Y, Z), got {tuple(seg_logits.shape)}")
    tumour = 1.0 - torch.softmax(seg_logits, dim=1)[:, :1]
    return F.adaptive_avg_pool3d(tumour, grid)


class AttentionPooling(nn.Module):
    """(B, C, x, y, z) → pooled (B, C) and weights (B, 1, x, y, z) = softmax over voxels of W_a·tanh(W_f·F)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        channels = check_int("channels", channels)
        self.project = nn.Conv3d(channels, channels, 1)
        self.score = nn.Conv3d(channels, 1, 1, bias=False)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        logits = self.score(torch.tanh(self.project(features)))
        weights = torch.softmax(logits.flatten(2), dim=2).reshape(logits.shape)
        return (features * weights).sum(dim=(2, 3, 4)), weights


class MarkerHead(nn.Module):
    """Tumour-gated pooling + per-marker MLPs: (features (B, C, x, y, z), seg logits) → marker logits (B, n_markers).

    Args:
        in_channels: C, channels of the bottleneck features.
        n_markers: number of binary markers (one logit each).
        pooling: "attention" (paper) or "gap" (ablation).
        hidden: hidden width of each marker MLP.
        dropout: dropout before each marker MLP (paper: 0.3).
    """

    def __init__(self, in_channels: int, n_markers: int, *, pooling: Pooling = "attention", hidden: int = 64,
                 dropout: float = 0.3) -> None:
        super().__init__()
        self.in_channels = check_int("in_channels", in_channels)
        self.n_markers = check_int("n_markers", n_markers)
        if pooling not in ("attention", "gap"):
            raise ConfigError(f"marker_pooling must be 'attention' or 'gap', got {pooling!r}")
        self.pooling = pooling
        hidden = check_int("head_hidden", hidden)
        rate = check_rate("head_dropout", dropout)
        self.attention = AttentionPooling(self.in_channels) if pooling == "attention" else None
        self.heads = nn.ModuleList([
            nn.Sequential(nn.Dropout(rate), nn.Linear(self.in_channels, hidden), nn.ReLU(inplace=True),
                          nn.Linear(hidden, 1))
            for _ in range(self.n_markers)])

    def forward(self, features: Tensor, seg_logits: Tensor) -> tuple[Tensor, Tensor | None]:
        """Marker logits (B, n_markers) and the pooling attention (B, 1, x, y, z), None for "gap"."""
        if features.dim() != 5 or features.shape[1] != self.in_channels:
            raise InputError("features", f"expected shape (batch, {self.in_channels}, x, y, z), "
                                         f"got {tuple(features.shape)}")
        if seg_logits.shape[0] != features.shape[0]:
            raise InputError("seg_logits", f"batch {seg_logits.shape[0]} differs from the features' "
                                           f"{features.shape[0]}")
        gated = features * tumour_gate(seg_logits, tuple(features.shape[2:]))
        if self.attention is None:
            pooled, weights = gated.mean(dim=(2, 3, 4)), None
        else:
            pooled, weights = self.attention(gated)
        return torch.cat([head(pooled) for head in self.heads], dim=1), weights
