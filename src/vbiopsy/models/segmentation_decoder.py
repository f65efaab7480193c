"""U-Net segmentation decoder of MGMT-Net (paper §3.3).

Inputs: the full-resolution fused features ``stem`` (B, width, X, Y, Z) and the encoder's stage
maps ``features[s]`` (B, width·2^s, X/2^(s+1), …), the last being the bottleneck. One up block
per skip, coarse to fine (skips: features[S−2], …, features[0], then ``stem``):

    up = ReLU(GN(Conv3³(trilinear×2(x))))          (to the skip's channels)
    skip' = skip · AttentionGate(skip, up)          (optional, ``attention_gates``)
    x = ResidualBlock3D(concat(up, skip'))          (2c → c, 1³ projection shortcut)

then a squeeze-and-excitation block (MONAI ``ChannelSELayer``, reduction 2) at full resolution
and a 1³ conv to ``seg_classes`` logits. With ``deep_supervision`` every up block but the last
also feeds a 1³ conv head: extra logits at 1/2^(S−1), …, 1/2 of the input (coarse → fine).

The attention gate is the additive gate of Attention U-Net (Oktay et al. 2018) with GroupNorm;
MONAI's ``AttentionBlock`` is not reused because it hard-codes BatchNorm (see
:mod:`vbiopsy.models.cmaf` for why MGMT-Net uses GroupNorm) and resamples the gating signal,
which here already has the skip's resolution.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from monai.networks.blocks import ChannelSELayer
from torch import Tensor, nn
from torch.nn import functional as F

from vbiopsy.errors import ConfigError, InputError
from vbiopsy.models.cmaf import GN_GROUPS
from vbiopsy.models.film import check_int
from vbiopsy.models.resnet3d import ResidualBlock3D, conv3d, group_norm

#: channel reduction of the squeeze-and-excitation block.
SE_REDUCTION = 2


@dataclass
class DecoderOutput:
    """Full-resolution logits (B, K, X, Y, Z) and the deep-supervision logits, coarse → fine."""

    logits: Tensor
    deep_supervision: list[Tensor]


class AttentionGate(nn.Module):
    """Additive attention gate: skip (B, C_s, …) · σ(ψ(ReLU(W_s·skip + W_g·gate))), gate (B, C_g, …) same size."""

    def __init__(self, skip_channels: int, gate_channels: int, inter_channels: int) -> None:
        super().__init__()
        check_int("skip_channels", skip_channels)
        check_int("gate_channels", gate_channels)
        inter = check_int("inter_channels", inter_channels)
        self.skip_proj = nn.Sequential(nn.Conv3d(skip_channels, inter, 1, bias=False), group_norm(inter, GN_GROUPS))
        self.gate_proj = nn.Sequential(nn.Conv3d(gate_channels, inter, 1, bias=False), group_norm(inter, GN_GROUPS))
        self.psi = nn.Conv3d(inter, 1, 1)

    def coefficients(self, skip: Tensor, gate: Tensor) -> Tensor:
        """Gate values (B, 1, X, Y, Z) in (0, 1)."""
        if skip.shape[0] != gate.shape[0] or skip.shape[2:] != gate.shape[2:]:
            raise InputError("attention gate", f"skip {tuple(skip.shape)} and gate {tuple(gate.shape)} must share "
                                               f"batch and spatial size")
        return torch.sigmoid(self.psi(torch.relu(self.skip_proj(skip) + self.gate_proj(gate))))

    def forward(self, skip: Tensor, gate: Tensor) -> Tensor:
        """The gated skip features, same shape as ``skip``."""
        return skip * self.coefficients(skip, gate)


class UpBlock(nn.Module):
    """Trilinear ×2 → 3³ conv + GN + ReLU → [gate] → concat skip → residual block; C_in → C_out, size ×2."""

    def __init__(self, in_channels: int, out_channels: int, *, attention_gate: bool) -> None:
        super().__init__()
        self.refine = nn.Sequential(conv3d(in_channels, out_channels, 3), group_norm(out_channels, GN_GROUPS),
                                    nn.ReLU(inplace=True))
        self.gate = AttentionGate(out_channels, out_channels, max(1, out_channels // 2)) if attention_gate else None
        self.block = ResidualBlock3D(2 * out_channels, out_channels, stride=1, kind="basic", gn_groups=GN_GROUPS,
                                     dropout=0.0)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        up = self.refine(F.interpolate(x, size=skip.shape[2:], mode="trilinear", align_corners=False))
        if self.gate is not None:
            skip = self.gate(skip, up)
        return self.block(torch.cat((up, skip), dim=1))


class SegmentationDecoder(nn.Module):
    """Encoder maps + full-resolution stem → seg logits (B, seg_classes, X, Y, Z) [+ deep supervision].

    Args:
        width: channels of the stem and of encoder stage 0 (stage s has width·2^s).
        stages: number of encoder stages (S ≥ 1).
        seg_classes: output classes (≥ 2, background included).
        attention_gates: gate every skip with an :class:`AttentionGate`.
        deep_supervision: add 1³ heads on the S−1 intermediate up blocks (needs S ≥ 2).
    """

    def __init__(self, width: int, stages: int, seg_classes: int, *, attention_gates: bool = False,
                 deep_supervision: bool = False) -> None:
        super().__init__()
        self.width = check_int("width", width)
        self.stages = check_int("stages", stages)
        self.seg_classes = check_int("seg_classes", seg_classes, minimum=2)
        for name, flag in (("attention_gates", attention_gates), ("deep_supervision", deep_supervision)):
            if not isinstance(flag, bool):
                raise ConfigError(f"{name} must be True or False, got {flag!r}")
        if deep_supervision and self.stages < 2:
            raise ConfigError(f"deep_supervision needs stages >= 2 (an intermediate decoder level), got {stages}")
        self.channels = [self.width * 2 ** s for s in range(self.stages)]
        targets = [*reversed(self.channels[:-1]), self.width]  # skips: stage S−2 … 0, then the stem
        sources = [self.channels[-1], *targets[:-1]]
        self.ups = nn.ModuleList([UpBlock(cin, cout, attention_gate=attention_gates)
                                  for cin, cout in zip(sources, targets)])
        self.se = ChannelSELayer(spatial_dims=3, in_channels=self.width, r=SE_REDUCTION)
        self.head = nn.Conv3d(self.width, self.seg_classes, 1)
        self.aux_heads = nn.ModuleList([nn.Conv3d(c, self.seg_classes, 1) for c in targets[:-1]]) \
            if deep_supervision else nn.ModuleList()

    def forward(self, stem: Tensor, features: Sequence[Tensor]) -> DecoderOutput:
        """Logits for stem (B, width, X, Y, Z) and ``stages`` encoder maps, fine → coarse."""
        if len(features) != self.stages:
            raise InputError("features", f"expected {self.stages} encoder maps, got {len(features)}")
        expected = [self.width, *self.channels]
        got = [stem.shape[1], *(f.shape[1] for f in features)]
        if got != expected:
            raise InputError("features", f"expected channels {expected} (stem, stage 0, …), got {got}")
        skips = [*reversed(features[:-1]), stem]
        x = features[-1]
        extra = []
        for index, (up, skip) in enumerate(zip(self.ups, skips)):
            x = up(x, skip)
            if index < len(self.aux_heads):
                extra.append(self.aux_heads[index](x))
        return DecoderOutput(self.head(self.se(x)), extra)
