"""3D ResNet with per-sample GroupNorm: the ASLNet backbone (reference code notes §3.1, App. A).

Layout for input (B, C_in, X, Y, Z) and base width f, at the paper's 70³ input:

- stem: Conv 7³ stride 2 pad 3 (no bias) → GN → ReLU → MaxPool 3³ stride 2 pad 1 (70 → 35 → 18);
- stage i (i = 0…3): ``blocks[i]`` residual blocks of width f·2^i; the first block of stage 0 has
  stride 1, the first block of every later stage stride 2 (18 → 18 → 9 → 5 → 3);
- head: global average pool → Dropout → Linear (logits; the loss applies softmax/sigmoid).

Basic block: conv3³(s)-GN-ReLU-conv3³-GN [→ FiLM] + shortcut → ReLU → Dropout3d. Bottleneck block
(option): conv1³-GN-ReLU-conv3³(s)-GN-ReLU-conv1³(×4)-GN [→ FiLM] + shortcut → ReLU → Dropout3d,
with the normal ×2 width growth per stage, i.e. outputs 4f, 8f, 16f, 32f. (The reference code
grew the width ×4 per stage on top of the ×4 expansion, 8,192 channels at f = 32: fixed here.)
The stride sits on the 3³ conv of the bottleneck (ResNet v1.5), not on the first 1³ conv, so no
input voxel is skipped. The shortcut is identity, or conv1³(s) + GN when stride or width changes.

GroupNorm uses ``gcd(min(G, C), C)`` groups and per-sample statistics (``nn.GroupNorm``); the
reference OS model pooled statistics over the batch, which is only equivalent at batch size 1.

Initialisation: every conv He-normal, ``kaiming_normal_(mode="fan_in", nonlinearity="relu")``,
i.e. std = sqrt(2 / (C_in·k³)) like Keras ``he_normal`` (untruncated); the reference grade
model left the second conv of each block and the projection at Glorot, the OS model used He
everywhere — we use He everywhere. GN γ = 1, β = 0; head Linear Glorot-uniform, zero bias.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from vbiopsy.errors import ConfigError, InputError
from vbiopsy.models.film import FiLMGenerator, check_int, check_int_sequence, check_rate, modulate

BlockKind = Literal["basic", "bottleneck"]
#: channel multiplier of each block's output over its stage width.
EXPANSION: dict[str, int] = {"basic": 1, "bottleneck": 4}


def check_block_kind(kind: object) -> BlockKind:
    """``kind`` if it is a known block kind, else ConfigError naming it."""
    if not isinstance(kind, str) or kind not in EXPANSION:
        raise ConfigError(f"block must be one of {sorted(EXPANSION)}, got {kind!r}")
    return kind  # type: ignore[return-value]


class GroupNorm3d(nn.GroupNorm):
    """``nn.GroupNorm`` that also accepts a group holding a single value (tiny inputs, training).

    ``F.group_norm`` refuses training batches where every group has one value (batch 1, one
    channel per group, a 1³ map: reached by 16³ inputs with small widths). The normalised value
    is then exactly β (zero gradient to the input), as in the TF reference; we allow it so that
    tiny test volumes train, and call the same ATen kernel directly. Identical otherwise.
    """

    def forward(self, x: Tensor) -> Tensor:
        return torch.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    """Per-sample GroupNorm over ``channels`` with ``gcd(min(groups, channels), channels)`` groups."""
    return GroupNorm3d(math.gcd(min(groups, channels), channels), channels, eps=1e-5)


def conv3d(in_channels: int, out_channels: int, kernel: int, stride: int = 1) -> nn.Conv3d:
    """Bias-free cubic convolution with "same"-style padding ``kernel // 2``."""
    return nn.Conv3d(in_channels, out_channels, kernel, stride=stride, padding=kernel // 2, bias=False)


def _main_path(kind: BlockKind, in_channels: int, width: int, stride: int, groups: int) -> nn.Sequential:
    """Residual branch up to (and including) its last GroupNorm; output ``width·EXPANSION[kind]`` channels."""
    if kind == "basic":
        return nn.Sequential(conv3d(in_channels, width, 3, stride), group_norm(width, groups), nn.ReLU(inplace=True),
                             conv3d(width, width, 3), group_norm(width, groups))
    out = width * EXPANSION["bottleneck"]
    return nn.Sequential(conv3d(in_channels, width, 1), group_norm(width, groups), nn.ReLU(inplace=True),
                         conv3d(width, width, 3, stride), group_norm(width, groups), nn.ReLU(inplace=True),
                         conv3d(width, out, 1), group_norm(out, groups))


class ResidualBlock3D(nn.Module):
    """One basic or bottleneck residual block, optionally FiLM-conditioned before the add.

    Maps (B, in_channels, X, Y, Z) to (B, width·expansion, ⌈X/stride⌉, …).
    """

    def __init__(self, in_channels: int, width: int, *, stride: int, kind: BlockKind, gn_groups: int,
                 dropout: float, film: FiLMGenerator | None = None) -> None:
        super().__init__()
        self.out_channels = width * EXPANSION[check_block_kind(kind)]
        self.main = _main_path(kind, in_channels, width, stride, gn_groups)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != self.out_channels:
            self.shortcut = nn.Sequential(conv3d(in_channels, self.out_channels, 1, stride),
                                          group_norm(self.out_channels, gn_groups))
        if film is not None and film.channels != self.out_channels:
            raise ConfigError(f"FiLM generator makes {film.channels} channels, block has {self.out_channels}")
        self.film = film
        self.dropout = nn.Dropout3d(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: Tensor, condition: Tensor | None = None) -> Tensor:
        out = self.main(x)
        if self.film is not None:
            if condition is None:
                raise InputError("condition", "this block is FiLM-conditioned but no condition was given")
            out = modulate(out, *self.film(condition))
        return self.dropout(torch.relu(out + self.shortcut(x)))


class ResNet3D(nn.Module):
    """3D ResNet with GroupNorm (ASLNet backbone): (B, C_in, X, Y, Z) → logits (B, out_channels).

    Args:
        in_channels: input channels (ASLNet: 4 = [raw, zg, zl, log]).
        out_channels: number of logits.
        base_width: f, width of stage 0; stage i has f·2^i (×4 for bottleneck outputs).
        blocks: residual blocks per stage; its length is the number of stages.
        block: "basic" (both paper models) or "bottleneck".
        gn_groups: G, the GroupNorm group budget (groups = gcd(min(G, C), C)).
        dropout: channel dropout (Dropout3d) after every block; 0 disables it.
        head_dropout: dropout before the Linear head; None means ``dropout``.
        film_stages: 0-based stages whose every block is FiLM-conditioned.
        film_dim: length D of the condition vector (> 0 when ``film_stages`` is non-empty).
        film_hidden: hidden width of each FiLM generator.
        film_dropout: dropout inside each FiLM generator.
    """

    def __init__(self, in_channels: int, out_channels: int, *, base_width: int = 32,
                 blocks: Sequence[int] = (2, 2, 2, 2), block: BlockKind = "basic",
                 gn_groups: int = 32, dropout: float = 0.3, head_dropout: float | None = None,
                 film_stages: Sequence[int] = (), film_dim: int = 0, film_hidden: int = 64,
                 film_dropout: float = 0.1) -> None:
        super().__init__()
        self.in_channels = check_int("in_channels", in_channels)
        self.out_channels = check_int("out_channels", out_channels)
        self.base_width = check_int("base_width", base_width)
        self.blocks = check_int_sequence("blocks", blocks, allow_empty=False, minimum=1)
        self.block = check_block_kind(block)
        self.gn_groups = check_int("gn_groups", gn_groups)
        dropout = check_rate("dropout", dropout)
        head_rate = dropout if head_dropout is None else check_rate("head_dropout", head_dropout)
        self.film_dim = check_int("film_dim", film_dim, minimum=0)
        self.film_stages = self._check_film_stages(film_stages)
        film_hidden = check_int("film_hidden", film_hidden)
        film_dropout = check_rate("film_dropout", film_dropout)

        stem_width = self.base_width
        self.stem = nn.Sequential(conv3d(self.in_channels, stem_width, 7, stride=2), group_norm(stem_width, gn_groups),
                                  nn.ReLU(inplace=True), nn.MaxPool3d(3, stride=2, padding=1))
        self.stages = nn.ModuleList()
        channels = stem_width
        for index, count in enumerate(self.blocks):
            width = self.base_width * 2 ** index
            stage = nn.ModuleList()
            for position in range(count):
                stride = 2 if index > 0 and position == 0 else 1
                film = None
                if index in self.film_stages:
                    film = FiLMGenerator(self.film_dim, width * EXPANSION[block], hidden=film_hidden, dropout=film_dropout)
                stage.append(ResidualBlock3D(channels, width, stride=stride, kind=block, gn_groups=gn_groups,
                                             dropout=dropout, film=film))
                channels = width * EXPANSION[block]
            self.stages.append(stage)
        self.out_features = channels
        self.head_dropout = nn.Dropout(head_rate) if head_rate > 0 else nn.Identity()
        self.fc = nn.Linear(channels, self.out_channels)
        self.reset_parameters()

    def _check_film_stages(self, film_stages: Sequence[int]) -> tuple[int, ...]:
        stages = check_int_sequence("film_stages", film_stages, allow_empty=True, minimum=0)
        out_of_range = [s for s in stages if s >= len(self.blocks)]
        if out_of_range or len(set(stages)) != len(stages):
            raise ConfigError(f"film_stages must be distinct stage indices in [0, {len(self.blocks) - 1}], "
                              f"got {list(stages)!r}")
        if stages and self.film_dim == 0:
            raise ConfigError(f"film_dim must be > 0 when film_stages is non-empty ({list(stages)!r}), got 0")
        return tuple(sorted(stages))

    def reset_parameters(self) -> None:
        """He-normal (fan_in) convs, GN γ = 1 β = 0, Glorot head with zero bias (FiLM keeps its own)."""
        for module in self.modules():
            if isinstance(module, nn.Conv3d):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
            elif isinstance(module, nn.GroupNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.xavier_uniform_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    @property
    def target_layer(self) -> nn.Module:
        """The last block: its output is what :meth:`feature_maps` returns (hook it for Grad-CAM)."""
        return self.stages[-1][-1]

    def _check_inputs(self, x: Tensor, condition: Tensor | None) -> None:
        if x.dim() != 5 or x.shape[1] != self.in_channels or x.shape[0] < 1:
            raise InputError("image", f"expected shape (batch, {self.in_channels}, X, Y, Z), got {tuple(x.shape)}")
        if self.film_stages and condition is None:
            raise InputError("condition", f"stages {list(self.film_stages)} are FiLM-conditioned: pass a "
                                          f"(batch, {self.film_dim}) condition")
        if condition is not None:
            if not self.film_stages:
                raise InputError("condition", "a condition was given but the network has no FiLM stages")
            if condition.dim() != 2 or condition.shape != (x.shape[0], self.film_dim):
                raise InputError("condition", f"expected shape ({x.shape[0]}, {self.film_dim}), "
                                              f"got {tuple(condition.shape)}")

    def feature_maps(self, x: Tensor, condition: Tensor | None = None) -> Tensor:
        """Last-stage output (B, 8f, x', y', z') for basic blocks (32f for bottleneck); 3³ at 70³ input."""
        self._check_inputs(x, condition)
        out = self.stem(x)
        for stage in self.stages:
            for residual in stage:
                out = residual(out, condition)
        return out

    def forward(self, x: Tensor, condition: Tensor | None = None) -> Tensor:
        """Logits (B, out_channels) for x (B, in_channels, X, Y, Z) and optional condition (B, film_dim)."""
        pooled = self.feature_maps(x, condition).mean(dim=(2, 3, 4))
        return self.fc(self.head_dropout(pooled))
