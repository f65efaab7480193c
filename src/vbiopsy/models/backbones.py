"""Backbone registry of the Adaptive-Diagnoser: 3D feature extractors by name (paper Table 3).

Each factory returns an ``nn.Module`` mapping (B, in_channels, X, Y, Z) to a feature map
(B, C, x, y, z) and carrying ``out_channels`` (C) and ``reduction`` (the grid stride X / x). All are
built from well-kept implementations, MONAI's where it has one; only the feature-map plumbing is ours.

``width`` picks a preset: ``"tiny"`` (unit tests, CPU demo), ``"small"`` or ``"base"`` (the standard
architecture, as in the paper), or an int: the ``"small"`` layout with that base width. Keyword
``options`` override single settings; an unknown option is a ConfigError listing the known ones.

Names (``base`` preset; stride of the base grid; smallest input for tiny / base):

- ``densenet`` (default): MONAI ``DenseNet`` features + ReLU; DenseNet-121; 32; 13³ / 29³.
- ``resnet``: our :class:`~vbiopsy.models.resnet3d.ResNet3D` trunk (GroupNorm); f = 32, ResNet-18 layout; 32; 1³.
- ``swin``: MONAI ``SwinTransformer`` (the SwinUNETR encoder), its deepest state; 32; 1³ (pads).
- ``vit``: MONAI ``ViT``, tokens put back on the patch grid; ViT-B/16; 16; exactly ``img_size``.
- ``efficient3d``: MONAI ``EfficientNet`` in 3D (MBConv + SE), its head map; B0; 32; 16³ / 32³.

``tiny`` and ``small`` drop the last down-sampling stage (stride 16, a 3³ map at the 48³ demo size) so
that the masked attention has more than one feature voxel to choose from: at a 1³ map the masked average
equals the global one and the prior cannot matter. ``swin`` and ``vit`` need MONAI's optional ``einops``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from typing import Any

import torch.nn.functional as F
from monai.networks.nets import DenseNet, EfficientNet
from torch import Tensor, nn

from vbiopsy.errors import ConfigError, InputError
from vbiopsy.models.film import check_int, check_int_sequence
from vbiopsy.models.resnet3d import ResNet3D

BackboneFactory = Callable[..., nn.Module]
WIDTHS: tuple[str, ...] = ("tiny", "small", "base")
#: EfficientNet-B0 stacks (repeats r, kernel k, stride s, expansion e, in/out filters i/o, SE ratio).
EFFICIENTNET_B0_STACKS: tuple[str, ...] = (
    "r1_k3_s11_e1_i32_o16_se0.25", "r2_k3_s22_e6_i16_o24_se0.25", "r2_k5_s22_e6_i24_o40_se0.25",
    "r3_k3_s22_e6_i40_o80_se0.25", "r3_k5_s11_e6_i80_o112_se0.25", "r4_k5_s22_e6_i112_o192_se0.25",
    "r1_k3_s11_e6_i192_o320_se0.25")


def resolve_options(name: str, width: str | int, presets: dict[str, dict[str, Any]],
                    scale: Callable[[int], dict[str, Any]], options: dict[str, Any]) -> dict[str, Any]:
    """Preset for ``width`` (a name, or the ``"small"`` layout re-widened by ``scale(int)``) updated by ``options``."""
    if isinstance(width, str):
        if width not in presets:
            raise ConfigError(f"width of backbone {name!r} must be one of {list(WIDTHS)} or an integer, got {width!r}")
        base = dict(presets[width])
    else:
        base = {**presets["small"], **scale(check_int(f"width of backbone {name!r}", width))}
    unknown = sorted(set(options) - set(base))
    if unknown:
        raise ConfigError(f"unknown option(s) {unknown} for backbone {name!r}; known: {sorted(base)}")
    return {**base, **options}


def _require_einops(name: str) -> None:
    """ConfigError if MONAI's optional ``einops`` (used by its transformer blocks) is not installed."""
    if importlib.util.find_spec("einops") is None:
        raise ConfigError(f"backbone {name!r} needs the 'einops' package (a MONAI optional dependency): "
                          f"pip install einops")


def _build(name: str, constructor: Callable[..., nn.Module], **kwargs: Any) -> nn.Module:
    """``constructor(**kwargs)`` with the library's ValueError/TypeError turned into a ConfigError."""
    try:
        return constructor(**kwargs)
    except (ValueError, TypeError, AssertionError, ZeroDivisionError) as error:
        raise ConfigError(f"backbone {name!r}: invalid options {kwargs}: {error}") from error


class DenseNetFeatures(nn.Module):
    """MONAI DenseNet ``features`` (stem, dense blocks, transitions, final norm) + ReLU: (B, C, X/32, …)."""

    def __init__(self, in_channels: int, **options: Any) -> None:
        super().__init__()
        net = _build("densenet", DenseNet, spatial_dims=3, in_channels=in_channels, out_channels=1, **options)
        self.features = net.features  # same keys as MONAI's DenseNet: its weights load with strict=False
        self.relu = nn.ReLU()
        self.out_channels = int(net.class_layers.out.in_features)
        self.reduction = 2 ** (len(options["block_config"]) + 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.features(x))


def densenet_backbone(in_channels: int, *, width: str | int = "base", **options: Any) -> nn.Module:
    """MONAI DenseNet trunk. Options: init_features, growth_rate, block_config, bn_size, norm, dropout_prob.

    tiny: 8/4/(2, 2, 2)/bn 2; small: 32/16/(4, 8, 12); base: DenseNet-121 64/32/(6, 12, 24, 16).
    An int width w sets init_features = w and growth_rate = w // 2 on the small layout.
    """
    presets = {"tiny": {"init_features": 8, "growth_rate": 4, "block_config": (2, 2, 2), "bn_size": 2},
               "small": {"init_features": 32, "growth_rate": 16, "block_config": (4, 8, 12), "bn_size": 4},
               "base": {"init_features": 64, "growth_rate": 32, "block_config": (6, 12, 24, 16), "bn_size": 4}}
    for preset in presets.values():
        preset.update(norm="batch", dropout_prob=0.0)
    opts = resolve_options("densenet", width, presets, lambda w: {"init_features": w, "growth_rate": max(1, w // 2)},
                           options)
    for key in ("init_features", "growth_rate", "bn_size"):
        check_int(key, opts[key])
    opts["block_config"] = check_int_sequence("block_config", opts["block_config"], allow_empty=False, minimum=1)
    return DenseNetFeatures(check_int("in_channels", in_channels), **opts)


class ResNet3DFeatures(nn.Module):
    """Our GroupNorm :class:`ResNet3D` without its head: its last-stage map (B, C, X/2^(1+stages), …)."""

    def __init__(self, in_channels: int, **options: Any) -> None:
        super().__init__()
        self.trunk = ResNet3D(in_channels, 1, **options)
        self.trunk.head_dropout = nn.Identity()  # head unused: no dead parameters
        self.trunk.fc = nn.Identity()
        self.out_channels = int(self.trunk.out_features)
        self.reduction = 2 ** (len(self.trunk.blocks) + 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.trunk.feature_maps(x)


def resnet_backbone(in_channels: int, *, width: str | int = "base", **options: Any) -> nn.Module:
    """ResNet3D-GN trunk (per-sample GroupNorm: safe at batch 2).

    Options: base_width, blocks, block, gn_groups, dropout (Dropout3d after every block).

    tiny: f = 8, blocks (1, 1, 1); small: f = 16, (2, 2, 2); base: f = 32, (2, 2, 2, 2) (the ASLNet
    trunk, a ResNet-18 layout). An int width sets ``base_width`` on the small layout.
    """
    presets = {"tiny": {"base_width": 8, "blocks": (1, 1, 1), "gn_groups": 8},
               "small": {"base_width": 16, "blocks": (2, 2, 2), "gn_groups": 16},
               "base": {"base_width": 32, "blocks": (2, 2, 2, 2), "gn_groups": 32}}
    for preset in presets.values():
        preset.update(block="basic", dropout=0.0)
    opts = resolve_options("resnet", width, presets, lambda w: {"base_width": w}, options)
    return ResNet3DFeatures(in_channels, **opts)


class SwinFeatures(nn.Module):
    """MONAI SwinTransformer (SwinUNETR encoder) run stage by stage; its deepest state, layer-normed.

    MONAI's own ``forward`` is hard-wired to four stages, so the stages are called here in turn
    (``use_v2`` is not supported); as in SwinUNETR (``normalize=True``) the output is layer-normalised
    over channels without affine parameters. Output (B, feature_size·2^stages, X/(patch·2^stages), …).
    """

    def __init__(self, in_channels: int, *, feature_size: int, depths: Sequence[int], num_heads: Sequence[int],
                 window_size: int, patch_size: int, **options: Any) -> None:
        super().__init__()
        from monai.networks.nets.swin_unetr import SwinTransformer

        self.stages = len(depths)
        self.swin = _build("swin", SwinTransformer, in_chans=in_channels, embed_dim=feature_size,
                           window_size=(window_size,) * 3, patch_size=(patch_size,) * 3, depths=tuple(depths),
                           num_heads=tuple(num_heads), spatial_dims=3, **options)
        self.out_channels = feature_size * 2 ** self.stages
        self.reduction = patch_size * 2 ** self.stages

    def forward(self, x: Tensor) -> Tensor:
        out = self.swin.pos_drop(self.swin.patch_embed(x))
        for index in range(1, self.stages + 1):
            out = getattr(self.swin, f"layers{index}")[0](out.contiguous())
        return F.layer_norm(out.movedim(1, -1), (out.shape[1],)).movedim(-1, 1)


def swin_backbone(in_channels: int, *, width: str | int = "base", **options: Any) -> nn.Module:
    """Swin encoder. Options: feature_size, depths, num_heads, window_size, patch_size, mlp_ratio, drop_rate,
    attn_drop_rate, drop_path_rate.

    tiny: 12, depths (1, 1, 1), heads (1, 2, 4); small: 24, (2, 2, 2), (3, 6, 12); base: the SwinUNETR
    encoder, 48, (2, 2, 2, 2), (3, 6, 12, 24); window 7, patch 2. An int width sets ``feature_size``
    (divisible by 3) on the small layout. At most four stages; stage i has feature_size·2^i channels,
    which ``num_heads[i]`` must divide.
    """
    _require_einops("swin")
    presets = {"tiny": {"feature_size": 12, "depths": (1, 1, 1), "num_heads": (1, 2, 4)},
               "small": {"feature_size": 24, "depths": (2, 2, 2), "num_heads": (3, 6, 12)},
               "base": {"feature_size": 48, "depths": (2, 2, 2, 2), "num_heads": (3, 6, 12, 24)}}
    for preset in presets.values():
        preset.update(window_size=7, patch_size=2, mlp_ratio=4.0, drop_rate=0.0, attn_drop_rate=0.0,
                      drop_path_rate=0.0)
    opts = resolve_options("swin", width, presets, lambda w: {"feature_size": w}, options)
    size = check_int("feature_size", opts["feature_size"])
    depths = check_int_sequence("depths", opts["depths"], allow_empty=False, minimum=1)
    heads = check_int_sequence("num_heads", opts["num_heads"], allow_empty=False, minimum=1)
    if len(depths) > 4 or len(heads) != len(depths):
        raise ConfigError(f"depths and num_heads must have the same length, 1 to 4, got {depths} and {heads}")
    if any(size * 2 ** i % h for i, h in enumerate(heads)):
        raise ConfigError(f"num_heads {heads} must divide the stage widths {[size * 2 ** i for i in range(len(heads))]}"
                          f" (feature_size {size})")
    opts.update(depths=depths, num_heads=heads, window_size=check_int("window_size", opts["window_size"]),
                patch_size=check_int("patch_size", opts["patch_size"]))
    return SwinFeatures(check_int("in_channels", in_channels), **opts)


class ViTFeatures(nn.Module):
    """MONAI ViT (no class token) with its normalised tokens put back on the patch grid: (B, hidden, X/p, …).

    The learned position embedding fixes the input size to ``img_size``; another size is an InputError.
    The unused cross-attention norms MONAI creates in every block are removed (no dead parameters).
    """

    def __init__(self, in_channels: int, *, img_size: tuple[int, int, int], patch_size: int, **options: Any) -> None:
        super().__init__()
        from monai.networks.nets import ViT

        self.img_size = img_size
        self.grid = tuple(n // patch_size for n in img_size)
        self.vit = _build("vit", ViT, in_channels=in_channels, img_size=img_size, patch_size=patch_size,
                          classification=False, spatial_dims=3, **options)
        for block in self.vit.blocks:  # MONAI builds this norm even without cross-attention: drop the dead weights
            if not getattr(block, "with_cross_attention", True):
                block.norm_cross_attn = nn.Identity()
        self.out_channels = int(options["hidden_size"])
        self.reduction = patch_size

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 5 or tuple(x.shape[2:]) != self.img_size:
            grid = ", ".join(map(str, self.img_size))
            raise InputError("image", f"the vit backbone was built for inputs (B, C, {grid}) (option img_size), "
                                      f"got {tuple(x.shape)}")
        tokens, _ = self.vit(x)
        return tokens.transpose(1, 2).reshape(x.shape[0], self.out_channels, *self.grid)


def vit_backbone(in_channels: int, *, width: str | int = "base", **options: Any) -> nn.Module:
    """ViT encoder. Options: img_size (int or 3 ints, default 96, a multiple of patch_size), patch_size,
    hidden_size, mlp_dim, num_layers, num_heads, dropout_rate.

    Patch 16; tiny: hidden 48, mlp 96, 2 layers, 3 heads; small: 192, 768, 6, 3; base: ViT-B/16 (768, 3072,
    12, 12; UNETR's encoder). An int width sets hidden_size (mlp 4×) on the small layout.
    """
    _require_einops("vit")
    presets = {"tiny": {"hidden_size": 48, "mlp_dim": 96, "num_layers": 2, "num_heads": 3},
               "small": {"hidden_size": 192, "mlp_dim": 768, "num_layers": 6, "num_heads": 3},
               "base": {"hidden_size": 768, "mlp_dim": 3072, "num_layers": 12, "num_heads": 12}}
    for preset in presets.values():
        preset.update(img_size=96, patch_size=16, dropout_rate=0.0)
    opts = resolve_options("vit", width, presets, lambda w: {"hidden_size": w, "mlp_dim": 4 * w}, options)
    raw = opts.pop("img_size")
    sizes = (raw,) * 3 if not isinstance(raw, Sequence) else tuple(raw)
    img_size = check_int_sequence("img_size", sizes, allow_empty=False, minimum=1)
    patch = check_int("patch_size", opts.pop("patch_size"))
    if len(img_size) != 3 or any(n % patch for n in img_size):
        raise ConfigError(f"img_size must be 3 multiples of patch_size {patch}, got {raw!r}")
    for key in ("hidden_size", "mlp_dim", "num_layers", "num_heads"):
        check_int(key, opts[key])
    if opts["hidden_size"] % opts["num_heads"]:
        raise ConfigError(f"num_heads {opts['num_heads']} must divide hidden_size {opts['hidden_size']}")
    return ViTFeatures(check_int("in_channels", in_channels), img_size=img_size,  # type: ignore[arg-type]
                       patch_size=patch, **opts)


class EfficientNetFeatures(EfficientNet):
    """MONAI 3D EfficientNet up to its head convolution: swish(BN(conv1³)) map (B, C_head, X/stride, …).

    The pooling, dropout and Linear classifier are removed (no dead parameters).
    """

    def __init__(self, in_channels: int, *, stacks: int, **options: Any) -> None:
        try:
            super().__init__(blocks_args_str=list(EFFICIENTNET_B0_STACKS[:stacks]), spatial_dims=3,
                             in_channels=in_channels, num_classes=1, dropout_rate=0.0, **options)
        except (ValueError, TypeError) as error:
            raise ConfigError(f"backbone 'efficient3d': invalid options {options}: {error}") from error
        del self._avg_pooling, self._dropout, self._fc
        self.out_channels = int(self._conv_head.out_channels)
        self.reduction = 2 * 2 ** sum("_s22_" in s for s in EFFICIENTNET_B0_STACKS[:stacks])

    def forward(self, inputs: Tensor) -> Tensor:
        x = self._swish(self._bn0(self._conv_stem(self._conv_stem_padding(inputs))))
        x = self._blocks(x)
        return self._swish(self._bn1(self._conv_head(self._conv_head_padding(x))))


def efficient3d_backbone(in_channels: int, *, width: str | int = "base", **options: Any) -> nn.Module:
    """3D EfficientNet (MBConv inverted residuals with squeeze-excitation, the 3D MobileNetV2 family of
    Kopuklu et al.). Options: stacks (of the 7 B0 stacks, kept from the first), width_coefficient,
    depth_coefficient, drop_connect_rate, image_size (for MONAI's static "same" padding), norm.

    tiny: width 0.25, depth 0.34, 5 stacks (stride 16); small: 0.5, 0.5, 5 stacks; base: EfficientNet-B0
    (1.0, 1.0, 7 stacks, stride 32, 1280-channel head). An int width w sets width_coefficient = w / 32
    (w = stem channels) on the small layout.
    """
    presets = {"tiny": {"width_coefficient": 0.25, "depth_coefficient": 0.34, "stacks": 5, "drop_connect_rate": 0.0},
               "small": {"width_coefficient": 0.5, "depth_coefficient": 0.5, "stacks": 5, "drop_connect_rate": 0.1},
               "base": {"width_coefficient": 1.0, "depth_coefficient": 1.0, "stacks": 7, "drop_connect_rate": 0.2}}
    for preset in presets.values():
        preset.update(image_size=96, norm=("batch", {"eps": 1e-3, "momentum": 0.01}))
    opts = resolve_options("efficient3d", width, presets, lambda w: {"width_coefficient": w / 32}, options)
    stacks = check_int("stacks", opts["stacks"])
    if stacks > len(EFFICIENTNET_B0_STACKS):
        raise ConfigError(f"stacks must be 1 to {len(EFFICIENTNET_B0_STACKS)}, got {stacks!r}")
    for key in ("width_coefficient", "depth_coefficient"):
        if isinstance(opts[key], bool) or not isinstance(opts[key], (int, float)) or opts[key] <= 0:
            raise ConfigError(f"{key} must be a positive number, got {opts[key]!r}")
    return EfficientNetFeatures(check_int("in_channels", in_channels), **opts)


BACKBONES: dict[str, BackboneFactory] = {"densenet": densenet_backbone, "resnet": resnet_backbone,
                                         "swin": swin_backbone, "vit": vit_backbone,
                                         "efficient3d": efficient3d_backbone}


def register_backbone(name: str, factory: BackboneFactory) -> None:
    """Add ``factory(in_channels, *, width, **options) -> nn.Module`` (with ``out_channels``) under a new ``name``."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"backbone name must be a non-empty string, got {name!r}")
    if name in BACKBONES:
        raise ConfigError(f"backbone {name!r} is already registered; known: {sorted(BACKBONES)}")
    if not callable(factory):
        raise ConfigError(f"backbone factory for {name!r} must be callable, got {type(factory).__name__}")
    BACKBONES[name] = factory


def build_backbone(name: str, in_channels: int, *, width: str | int = "base", **options: Any) -> nn.Module:
    """The feature extractor ``name`` for ``in_channels`` input channels; see the module table for names."""
    if name not in BACKBONES:
        raise ConfigError(f"unknown backbone {name!r}; known: {sorted(BACKBONES)}")
    check_int("in_channels", in_channels)
    if isinstance(width, bool) or not isinstance(width, (str, int)):
        raise ConfigError(f"width must be one of {list(WIDTHS)} or an integer, got {width!r}")
    module = BACKBONES[name](in_channels, width=width, **options)
    channels = getattr(module, "out_channels", None)
    if not isinstance(module, nn.Module) or isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise ConfigError(f"backbone {name!r} must return an nn.Module with an integer out_channels >= 1, "
                          f"got {type(module).__name__} with out_channels={channels!r}")
    return module
