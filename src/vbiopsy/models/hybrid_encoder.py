"""Hybrid CNN + 3D Swin Transformer encoder of MGMT-Net (paper §3.2).

Input: fused features (B, C_in, X, Y, Z) from CMAF, with X, Y, Z multiples of ``2**stages``.
Stage s (s = 0 … stages−1) works at 1/2^(s+1) of the input size with ``c_s = width·2^s``
channels; the last stage output is the bottleneck (1/8 of the input at the paper's 3 stages).

- CNN branch, per stage: 2³ stride-2 conv + GN + ReLU (down-sampling), then 2 basic residual
  blocks (:class:`~vbiopsy.models.resnet3d.ResidualBlock3D`, 3³ convs, GN, ReLU).
- Swin branch, MONAI's building blocks (``monai.networks.nets.swin_unetr``), for stages
  ``SWIN_FIRST_STAGE`` (= 1) … stages−1: ``PatchEmbed`` (4³ stride-4 conv, C_in → c_1) straight
  to the stage-1 grid, ``PatchMerging`` (2³ neighbourhood → 2× channels) before each later stage,
  and per stage one ``BasicLayer`` of 2 ``SwinTransformerBlock``s (window attention with relative
  position bias; the second block shifts the windows by ``window_size // 2``) with ``swin_heads``
  heads, then a LayerNorm over channels (as MONAI's ``SwinTransformer`` normalises its stage outputs).
- Fusion, per Swin stage: concat(CNN, Swin) → 1³ conv + GN + ReLU → c_s channels. The two
  branches run in parallel (each feeds only itself); the fused maps (stage 0: the CNN map) are
  the encoder's outputs.

Why no Swin at stage 0: at the paper's 128³ window, stage 0 is a 64³ grid; with width 16 and
4 heads of 4 channels its attention matrices (16× the size of the features) and the
shifted-window masks took ~0.5 GB and more time than the whole CNN branch. The paper itself
credits the Transformer's global context to "the latter stages of the encoder".

``swin=False`` (``encoder="cnn"``, the paper's ablation) drops the Swin branch and the fusion
convs: the outputs are the CNN stage maps.

MONAI's ``BasicLayer.forward`` needs the optional ``einops`` package (not installed here), so
:func:`run_swin_layer` runs a layer's MONAI blocks with the same steps using MONAI's own
``get_window_size`` and ``compute_mask``; the tests check it against ``BasicLayer.forward``.
With autograd off, recent MONAI versions compute the window attention with
``scaled_dot_product_attention`` (``use_flash_attention``; same result, faster); older ones
lack the option and use the plain path.
"""

from __future__ import annotations

import inspect
import math

import torch
from monai.networks.blocks import PatchEmbed
from monai.networks.nets.swin_unetr import BasicLayer, PatchMerging, compute_mask, get_window_size
from torch import Tensor, nn

from vbiopsy.errors import ConfigError, InputError
from vbiopsy.models.cmaf import GN_GROUPS
from vbiopsy.models.film import check_int
from vbiopsy.models.resnet3d import ResidualBlock3D, group_norm

#: residual blocks per CNN stage and Swin blocks per Swin stage (paper: 3 stages × 2 blocks).
BLOCKS_PER_STAGE = 2
#: the Swin branch starts at this encoder stage (stage 0 is CNN only; see the module docs).
SWIN_FIRST_STAGE = 1
#: recent MONAI: fused attention kernel when autograd is off (older versions lack the option).
_FAST_ATTENTION = {"use_flash_attention": True} if "use_flash_attention" in inspect.signature(BasicLayer).parameters \
    else {}


def channels_last(x: Tensor) -> Tensor:
    """(B, C, X, Y, Z) → (B, X, Y, Z, C), contiguous (the token layout of MONAI's Swin blocks)."""
    return x.permute(0, 2, 3, 4, 1).contiguous()


def channels_first(x: Tensor) -> Tensor:
    """(B, X, Y, Z, C) → (B, C, X, Y, Z)."""
    return x.permute(0, 4, 1, 2, 3)


#: the 5D ``einops.rearrange`` patterns MONAI's Swin code uses, as permutations.
_MONAI_5D_PATTERNS = {"b c d h w -> b d h w c": (0, 2, 3, 4, 1), "n c d h w -> n d h w c": (0, 2, 3, 4, 1),
                      "b d h w c -> b c d h w": (0, 4, 1, 2, 3), "n d h w c -> n c d h w": (0, 4, 1, 2, 3)}


def monai_rearrange(x: Tensor, pattern: str) -> Tensor:
    """Stand-in for ``einops.rearrange`` for the 5D patterns of ``monai.networks.nets.swin_unetr``.

    Lets MONAI's own ``BasicLayer.forward`` and ``SwinUNETR`` run where the optional einops
    package is missing (the tests' reference and the inference benchmark patch it in); raises
    ValueError for any other pattern.
    """
    if pattern not in _MONAI_5D_PATTERNS:
        raise ValueError(f"unsupported rearrange pattern {pattern!r}")
    return x.permute(*_MONAI_5D_PATTERNS[pattern])


def run_swin_layer(layer: BasicLayer, tokens: Tensor) -> Tensor:
    """Apply MONAI ``layer``'s blocks (and its down-sampling, if any) to channels-last ``tokens`` (B, X, Y, Z, C).

    The same steps as ``BasicLayer.forward`` for 3D input, without its einops transposes: the
    window is shrunk to the grid where the grid is smaller (and the shift dropped there), and
    the shifted-window attention mask is built for the grid padded to whole windows.
    """
    size = tuple(tokens.shape[1:4])
    window, shift = get_window_size(size, layer.window_size, layer.shift_size)
    padded = [int(math.ceil(s / w)) * w for s, w in zip(size, window)]
    mask = compute_mask(padded, window, shift, tokens.device)
    for block in layer.blocks:
        tokens = block(tokens, mask)
    if layer.downsample is not None:
        tokens = layer.downsample(tokens)
    return tokens


def _down(in_channels: int, out_channels: int) -> nn.Sequential:
    """2³ stride-2 conv + GN + ReLU: halves each spatial size."""
    return nn.Sequential(nn.Conv3d(in_channels, out_channels, 2, stride=2, bias=False),
                         group_norm(out_channels, GN_GROUPS), nn.ReLU(inplace=True))


def _cnn_stage(channels: int) -> nn.Sequential:
    """``BLOCKS_PER_STAGE`` basic residual blocks at constant width, GN, no dropout."""
    return nn.Sequential(*[ResidualBlock3D(channels, channels, stride=1, kind="basic", gn_groups=GN_GROUPS, dropout=0.0)
                           for _ in range(BLOCKS_PER_STAGE)])


class SwinBranch(nn.Module):
    """MONAI Swin stages ``first`` … ``stages``−1: (B, C_in, X, Y, Z) → list of (B, width·2^s, X/2^(s+1), …).

    Args:
        in_channels: channels of the input features.
        width: channels of encoder stage 0; stage s has width·2^s.
        stages: number of encoder stages.
        first: first Swin stage; ``PatchEmbed`` with patch 2^(first+1) maps the input straight to its grid.
        heads: attention heads in every stage (width·2^first must be a multiple).
        window_size: cubic attention window (tokens per side); blocks 1, 3, … shift by window_size // 2.
    """

    def __init__(self, in_channels: int, width: int, stages: int, *, first: int, heads: int, window_size: int) -> None:
        super().__init__()
        self.first = first
        self.window_size = window_size
        self.patch_embed = PatchEmbed(patch_size=2 ** (first + 1), in_chans=in_channels, embed_dim=width * 2 ** first,
                                      norm_layer=None, spatial_dims=3)
        self.merges = nn.ModuleList([PatchMerging(dim=width * 2 ** (s - 1), spatial_dims=3)
                                     for s in range(first + 1, stages)])
        self.layers = nn.ModuleList([
            BasicLayer(dim=width * 2 ** s, depth=BLOCKS_PER_STAGE, num_heads=heads, window_size=(window_size,) * 3,
                       drop_path=[0.0] * BLOCKS_PER_STAGE, qkv_bias=True, downsample=None, **_FAST_ATTENTION)
            for s in range(first, stages)])
        self.norms = nn.ModuleList([nn.LayerNorm(width * 2 ** s) for s in range(first, stages)])

    def forward(self, x: Tensor) -> list[Tensor]:
        """Normalised stage outputs, channels first, for stages ``first`` … ``stages``−1."""
        tokens = channels_last(self.patch_embed(x))
        outputs = []
        for index, (layer, norm) in enumerate(zip(self.layers, self.norms)):
            if index > 0:
                tokens = self.merges[index - 1](tokens)
            tokens = run_swin_layer(layer, tokens)
            outputs.append(channels_first(norm(tokens)))
        return outputs


class HybridEncoder(nn.Module):
    """CNN branch ‖ Swin branch (stages ≥ 1), fused per stage: (B, C_in, X, Y, Z) → [stage 0, …, bottleneck].

    Args:
        in_channels: channels of the input features (C' from the fusion block).
        width: channels of stage 0 (stage s has width·2^s).
        stages: number of stages; input sizes must be multiples of 2**stages; ≥ 2 with the Swin branch.
        swin: False drops the Swin branch (the "cnn" encoder).
        swin_heads: attention heads per Swin stage; ``width·2`` must be a multiple.
        window_size: Swin window (≥ 2); the last stage's grid must be at least this large.
    """

    def __init__(self, in_channels: int, width: int, stages: int = 3, *, swin: bool = True, swin_heads: int = 4,
                 window_size: int = 4) -> None:
        super().__init__()
        self.in_channels = check_int("in_channels", in_channels)
        self.width = check_int("width", width)
        self.stages = check_int("stages", stages)
        if not isinstance(swin, bool):
            raise ConfigError(f"swin must be True or False, got {swin!r}")
        self.swin_heads = check_int("swin_heads", swin_heads)
        self.window_size = check_int("window_size", window_size, minimum=2)
        if swin and self.stages <= SWIN_FIRST_STAGE:
            raise ConfigError(f"the hybrid encoder needs stages >= {SWIN_FIRST_STAGE + 1} (Swin runs from stage "
                              f"{SWIN_FIRST_STAGE} on), got stages = {stages}; use encoder='cnn' for fewer")
        swin_width = self.width * 2 ** SWIN_FIRST_STAGE
        if swin and swin_width % self.swin_heads:
            raise ConfigError(f"swin_heads {swin_heads} must divide the first Swin stage's channels "
                              f"(width·{2 ** SWIN_FIRST_STAGE} = {swin_width})")
        self.channels = [self.width * 2 ** s for s in range(self.stages)]
        inputs = [self.in_channels, *self.channels[:-1]]
        self.downs = nn.ModuleList([_down(cin, cout) for cin, cout in zip(inputs, self.channels)])
        self.cnn_stages = nn.ModuleList([_cnn_stage(c) for c in self.channels])
        self.swin: SwinBranch | None = None
        self.fuse = nn.ModuleList()
        if swin:
            self.swin = SwinBranch(self.in_channels, self.width, self.stages, first=SWIN_FIRST_STAGE,
                                   heads=self.swin_heads, window_size=self.window_size)
            self.fuse = nn.ModuleList([nn.Sequential(nn.Conv3d(2 * c, c, 1, bias=False), group_norm(c, GN_GROUPS),
                                                     nn.ReLU(inplace=True))
                                       for c in self.channels[SWIN_FIRST_STAGE:]])

    @property
    def divisor(self) -> int:
        """Input sizes must be multiples of this: one halving per stage."""
        return 2 ** self.stages

    def check_input(self, x: Tensor) -> None:
        """InputError for a bad shape or size; ConfigError if the Swin window exceeds the last stage's grid."""
        if not isinstance(x, Tensor) or x.dim() != 5 or x.shape[1] != self.in_channels:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise InputError("features", f"expected shape (batch, {self.in_channels}, X, Y, Z), got {shape}")
        self.check_size(tuple(x.shape[2:]))

    def check_size(self, size: tuple[int, ...]) -> None:
        """InputError unless every size is a multiple of :attr:`divisor`; ConfigError if the window exceeds the grid."""
        if any(s < 1 or s % self.divisor for s in size):
            raise InputError("image", f"spatial size {size} must be a positive multiple of {self.divisor} "
                                      f"(2**stages, stages = {self.stages}); pad or crop it")
        if self.swin is not None:
            grid = tuple(s // self.divisor for s in size)
            if min(grid) < self.window_size:
                raise ConfigError(f"window_size {self.window_size} is bigger than the Swin grid {grid} of the last "
                                  f"stage for input size {size}: use window_size <= {min(grid)} or a larger input "
                                  f"(at least {self.window_size * self.divisor} per axis)")

    def forward(self, x: Tensor) -> list[Tensor]:
        """Per-stage features [(B, c_0, X/2, …), …, (B, c_{S−1}, X/2^S, …)]; the last is the bottleneck."""
        self.check_input(x)
        cnn = []
        out = x
        for down, stage in zip(self.downs, self.cnn_stages):
            out = stage(down(out))
            cnn.append(out)
        if self.swin is None:
            return cnn
        swin = self.swin(x)
        fused = [fuse(torch.cat((c, t), dim=1)) for fuse, c, t in zip(self.fuse, cnn[SWIN_FIRST_STAGE:], swin)]
        return cnn[:SWIN_FIRST_STAGE] + fused
