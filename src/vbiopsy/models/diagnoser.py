"""Adaptive-Diagnoser (paper §4.4, Fig. 4): whole-brain backbone + Masked Channel Attention + fused head.

``F = backbone(input)`` (B, C, x, y, z). With MCA, the tumour prior ``M`` (B, 1, X, Y, Z) is resized to
F's grid, ``w = σ(MLP(masked_average_pool(F, M)))`` and ``F_att = F ⊙ w``; the head is Eq. (9)::

    logits = Linear(Dropout(concat(GAP(F), GAP(F_att))))        (2C → n_classes)

Without MCA it is ``Linear(Dropout(GAP(F)))`` (C → n_classes). Softmax belongs to the loss.

``input_prior`` decides how the localisation reaches the *input* (Table 2 rows without MCA, "Loc.
only", where the prior removes background): ``"multiply"`` feeds ``image × M``, ``"channel"`` feeds
``[image, M]`` (the backbone then has in_channels + 1 inputs), ``"none"`` the whole brain unchanged.
Table 2 maps to: row ① ``mca=False, input_prior="none"``; rows ②/④ ``mca=False, input_prior="multiply"``
(coarse / refined prior); rows ③/⑤ ``mca=True`` (coarse / refined prior).

Whole-brain fallback: a missing prior (None), or a sample whose prior is all zero, is replaced by ones
(the whole brain): the input is then unchanged and the MCA pools over the whole brain (a plain
squeeze-and-excitation). Priors are probabilities on the image grid, (B, 1, X, Y, Z) in [0, 1].

The prior can only steer the MCA if F has more than one voxel: with a 1³ feature map (e.g. a
stride-32 backbone on a 32³ input) the masked average is the global one. The ``tiny``/``small``
backbone presets have stride 16 (3³ at the 48³ demo size); the ``base`` ones give 3³ at 96³.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn

from vbiopsy.errors import ConfigError, InputError
from vbiopsy.models.backbones import build_backbone
from vbiopsy.models.film import check_int, check_rate
from vbiopsy.models.masked_channel_attention import MaskedChannelAttention, check_unit_interval, resize_prior

InputPrior = Literal["none", "multiply", "channel"]
INPUT_PRIORS: tuple[str, ...] = get_args(InputPrior)


def whole_brain_fallback(prior: Tensor | None, image: Tensor) -> Tensor:
    """``prior`` (B, 1, X, Y, Z) in ``image``'s dtype, every all-zero sample replaced by ones; ones for None."""
    if prior is None:
        return image.new_ones((image.shape[0], 1, *image.shape[2:]))
    prior = prior.to(image.dtype)
    empty = prior.sum(dim=(1, 2, 3, 4)) <= 0
    return torch.where(empty[:, None, None, None, None], torch.ones_like(prior), prior)


class AdaptiveDiagnoser(nn.Module):
    """Tumour-type classifier: (image (B, in_channels, X, Y, Z), prior (B, 1, X, Y, Z) | None) → logits (B, K).

    Args:
        backbone: a registered name (see :mod:`vbiopsy.models.backbones`) or a feature extractor module
            with an int ``out_channels`` (it must accept in_channels + 1 channels with ``input_prior="channel"``).
        in_channels: image channels (the paper: 1, T1c).
        n_classes: K ≥ 2 tumour classes (the paper: 4).
        mca: use Masked Channel Attention and the fused head of Eq. (9).
        input_prior: "none", "multiply" or "channel" (see the module docstring).
        reduction: MCA MLP reduction r (hidden width C // r, at least 1).
        dropout: dropout before the Linear head (the paper: 0.2).
        backbone_options: keyword options of :func:`~vbiopsy.models.backbones.build_backbone`
            (``width`` and the backbone's own options); only with a backbone name.
    """

    def __init__(self, backbone: str | nn.Module = "densenet", in_channels: int = 1, n_classes: int = 4, *,
                 mca: bool = True, input_prior: InputPrior = "none", reduction: int = 4, dropout: float = 0.2,
                 backbone_options: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.in_channels = check_int("in_channels", in_channels)
        self.n_classes = check_int("n_classes", n_classes, minimum=2)
        if not isinstance(mca, bool):
            raise ConfigError(f"mca must be True or False, got {mca!r}")
        if input_prior not in INPUT_PRIORS:
            raise ConfigError(f"input_prior must be one of {list(INPUT_PRIORS)}, got {input_prior!r}")
        self.use_mca = mca
        self.input_prior = input_prior
        self.reduction = check_int("reduction", reduction)
        rate = check_rate("dropout", dropout)
        self.backbone = self._make_backbone(backbone, backbone_options)
        channels = self.backbone.out_channels
        self.mca = MaskedChannelAttention(channels, self.reduction) if mca else None
        self.dropout = nn.Dropout(rate) if rate > 0 else nn.Identity()
        self.classifier = nn.Linear(2 * channels if mca else channels, self.n_classes)

    def _make_backbone(self, backbone: str | nn.Module, options: dict[str, Any] | None) -> nn.Module:
        """The feature extractor, built from a name (input channels + 1 with a prior channel) or checked."""
        if options is not None and not isinstance(options, dict):
            raise ConfigError(f"backbone_options must be a dict or None, got {options!r}")
        if isinstance(backbone, str):
            inputs = self.in_channels + (1 if self.input_prior == "channel" else 0)
            return build_backbone(backbone, inputs, **(options or {}))
        if not isinstance(backbone, nn.Module):
            raise ConfigError(f"backbone must be a registered name or an nn.Module, got {type(backbone).__name__}")
        if options:
            raise ConfigError(f"backbone_options {options!r} apply to a backbone name only, not to a module")
        channels = getattr(backbone, "out_channels", None)
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ConfigError(f"backbone module {type(backbone).__name__} needs an integer out_channels >= 1, "
                              f"got {channels!r}")
        return backbone

    @property
    def feature_module(self) -> nn.Module:
        """The module whose output is F (the backbone): the Grad-CAM target layer."""
        return self.backbone

    def _check_inputs(self, image: Tensor, prior: Tensor | None) -> None:
        if not isinstance(image, Tensor) or image.dim() != 5 or image.shape[1] != self.in_channels \
                or image.shape[0] < 1 or not image.is_floating_point():
            got = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
            raise InputError("image", f"expected a float tensor (B, {self.in_channels}, X, Y, Z), got {got}")
        if prior is None:
            return
        expected = (image.shape[0], 1, *image.shape[2:])
        if not isinstance(prior, Tensor) or tuple(prior.shape) != expected or not prior.is_floating_point():
            got = tuple(prior.shape) if isinstance(prior, Tensor) else type(prior).__name__
            raise InputError("prior", f"expected a float tensor of shape {expected} (the image grid), got {got}")
        check_unit_interval("prior", prior)

    def forward_with_weights(self, image: Tensor, prior: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Logits (B, n_classes) and the MCA channel weights w (B, C) in (0, 1) (None without MCA)."""
        self._check_inputs(image, prior)
        needs_prior = self.mca is not None or self.input_prior != "none"
        mask = whole_brain_fallback(prior, image) if needs_prior else None
        if mask is not None and self.input_prior == "multiply":
            image = image * mask
        elif mask is not None and self.input_prior == "channel":
            image = torch.cat([image, mask], dim=1)
        features = self.backbone(image)
        if not isinstance(features, Tensor) or features.dim() != 5:
            got = tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
            raise ConfigError(f"the backbone must return a (B, C, x, y, z) feature map, got {got}")
        pooled = features.mean(dim=(2, 3, 4))
        weights = None
        if self.mca is not None and mask is not None:
            attended, weights = self.mca(features, resize_prior(mask, features.shape[2:]))
            pooled = torch.cat([pooled, attended.mean(dim=(2, 3, 4))], dim=1)
        return self.classifier(self.dropout(pooled)), weights

    def forward(self, image: Tensor, prior: Tensor | None = None) -> Tensor:
        """Logits (B, n_classes) for image (B, in_channels, X, Y, Z) and prior (B, 1, X, Y, Z) in [0, 1] or None."""
        return self.forward_with_weights(image, prior)[0]

    def extra_repr(self) -> str:
        return f"n_classes={self.n_classes}, mca={self.use_mca}, input_prior={self.input_prior!r}"
