"""Adaptive-Diagnoser (paper §4.4, Fig. 4): whole-brain backbone + Masked Channel Attention + fused head.

``F = backbone(input)`` (B, C, x, y, z). With MCA, the tumour prior ``M`` (B, 1, X, Y, Z) is resized to
F's grid, ``w = σ(MLP(masked_average_pool(F, M)))`` and ``F_att = F ⊙ w``; the head is Eq. (9)::

    logits = Linear(Dropout(concat(GAP(F), GAP(F_att))))        (2C → n_classes)

Without MCA it is ``Linear(Dropout(GAP(F)))`` (C → n_classes). Softmax belongs to the loss.
The dropout acts on image features only (these and the crop branch's); the tabular additions below
(geometry, clinical values, lesion measurements: a few standardised numbers each) enter the head as they are.

Two optional additions to the head (not in the paper; off by default): ``geometry=True`` appends the
prior's position and size (:func:`vbiopsy.models.prior_geometry.prior_geometry`, 8 numbers: the
location cue that pooling discards), and ``clinical_features=k`` appends k clinical variables
(e.g. age, sex), imputed and standardised inside the model with statistics the training run sets
from its training patients (:meth:`AdaptiveDiagnoser.set_clinical_statistics`), so a checkpoint
carries them. ``crop_channels=M`` adds a crop branch
(:class:`~vbiopsy.models.lesion_crop_encoder.LesionCropEncoder`): a small CNN on a tumour-centred
crop (B, M, x, y, z) at the scan's resolution, whose pooled features join the head too. All enter
the same ``Linear``.

``whole_brain_dropout=p`` (training only, with a crop branch): each training sample's whole-brain
features (GAP(F) and GAP(F_att)) are zeroed with probability p and the kept ones scaled by 1/(1 − p),
as dropout does per unit but per branch — like modality dropout, it keeps the head from leaning on the
whole-brain branch alone (which fits 160 phantom patients long before the crop branch has learnt the
enhancement pattern) and makes the crop branch carry the diagnosis on its own. ``crop_dropout=q`` does
the same to the crop features; a sample that loses both is left with the tabular inputs (geometry,
clinical values), which then have to carry the diagnosis too. Not in the paper.

The training run also feeds the lesion measurements (:mod:`vbiopsy.localize.lesion_measurements`,
``model.lesion_measurements``) through the clinical input: ``clinical_features`` counts the clinical
variables and then the measurements, standardised alike.

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
from vbiopsy.models.lesion_crop_encoder import LesionCropEncoder
from vbiopsy.models.masked_channel_attention import MaskedChannelAttention, check_unit_interval, resize_prior
from vbiopsy.models.prior_geometry import N_GEOMETRY_FEATURES, prior_geometry

InputPrior = Literal["none", "multiply", "channel"]
INPUT_PRIORS: tuple[str, ...] = get_args(InputPrior)


def whole_brain_fallback(prior: Tensor | None, image: Tensor) -> Tensor:
    """``prior`` (B, 1, X, Y, Z) in ``image``'s dtype, every all-zero sample replaced by ones; ones for None."""
    if prior is None:
        return image.new_ones((image.shape[0], 1, *image.shape[2:]))
    prior = prior.to(image.dtype)
    empty = prior.sum(dim=(1, 2, 3, 4)) <= 0
    return torch.where(empty[:, None, None, None, None], torch.ones_like(prior), prior)


def drop_branch(features: Tensor, rate: float) -> Tensor:
    """``features`` (B, C) with each sample's row zeroed with probability ``rate``, kept rows × 1/(1 − rate)."""
    keep = (torch.rand(features.shape[0], 1, device=features.device) >= rate).to(features.dtype)
    return features * keep / (1.0 - rate)


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
        geometry: append the prior's geometry (8 features) to the head's input.
        clinical_features: number k ≥ 0 of clinical inputs (B, k) appended to the head's input.
        crop_channels: channels M ≥ 0 of a tumour-centred crop input (0: no crop branch).
        crop_width: first-stage width of the crop branch.
        whole_brain_dropout: probability in [0, 1) of dropping a training sample's whole-brain features
            (needs a crop branch; see the module docstring).
        crop_dropout: the same for the crop features (needs a crop branch).
    """

    def __init__(self, backbone: str | nn.Module = "densenet", in_channels: int = 1, n_classes: int = 4, *,
                 mca: bool = True, input_prior: InputPrior = "none", reduction: int = 4, dropout: float = 0.2,
                 backbone_options: dict[str, Any] | None = None, geometry: bool = False,
                 clinical_features: int = 0, crop_channels: int = 0, crop_width: int = 16,
                 whole_brain_dropout: float = 0.0, crop_dropout: float = 0.0) -> None:
        super().__init__()
        self.in_channels = check_int("in_channels", in_channels)
        self.n_classes = check_int("n_classes", n_classes, minimum=2)
        if not isinstance(mca, bool):
            raise ConfigError(f"mca must be True or False, got {mca!r}")
        if input_prior not in INPUT_PRIORS:
            raise ConfigError(f"input_prior must be one of {list(INPUT_PRIORS)}, got {input_prior!r}")
        if not isinstance(geometry, bool):
            raise ConfigError(f"geometry must be True or False, got {geometry!r}")
        self.use_mca = mca
        self.input_prior = input_prior
        self.use_geometry = geometry
        self.clinical_features = check_int("clinical_features", clinical_features, minimum=0)
        self.reduction = check_int("reduction", reduction)
        rate = check_rate("dropout", dropout)
        self.backbone = self._make_backbone(backbone, backbone_options)
        channels = self.backbone.out_channels
        self.mca = MaskedChannelAttention(channels, self.reduction) if mca else None
        self.dropout = nn.Dropout(rate) if rate > 0 else nn.Identity()
        k = self.clinical_features
        if k:  # only then: a model without clinical inputs keeps the paper model's state-dict keys
            self.register_buffer("clinical_fill", torch.zeros(k))
            self.register_buffer("clinical_mean", torch.zeros(k))
            self.register_buffer("clinical_std", torch.ones(k))
        crop_channels = check_int("crop_channels", crop_channels, minimum=0)
        self.crop_encoder = LesionCropEncoder(crop_channels, crop_width) if crop_channels else None
        crop_features = self.crop_encoder.out_channels if self.crop_encoder is not None else 0
        self.whole_brain_dropout = check_rate("whole_brain_dropout", whole_brain_dropout)
        if self.whole_brain_dropout > 0 and self.crop_encoder is None:
            raise ConfigError(f"whole_brain_dropout={whole_brain_dropout!r} needs a crop branch (crop_channels > 0): "
                              "without one a dropped sample has no image features left")
        self.crop_dropout = check_rate("crop_dropout", crop_dropout)
        if self.crop_dropout > 0 and self.crop_encoder is None:
            raise ConfigError(f"crop_dropout={crop_dropout!r} needs a crop branch (crop_channels > 0)")
        head = (2 * channels if mca else channels) + (N_GEOMETRY_FEATURES if geometry else 0) + k + crop_features
        self.classifier = nn.Linear(head, self.n_classes)

    def set_clinical_statistics(self, fill: Any, mean: Any, std: Any) -> None:
        """Imputation values and standardisation (mean, std > 0) of the k clinical inputs (training patients)."""
        if not self.clinical_features:
            raise ConfigError("this model has no clinical inputs (clinical_features=0)")
        values = [torch.as_tensor(v, dtype=torch.float32).reshape(-1) for v in (fill, mean, std)]
        for name, v in zip(("fill", "mean", "std"), values):
            if v.numel() != self.clinical_features or not torch.isfinite(v).all():
                raise ConfigError(f"clinical {name} must be {self.clinical_features} finite values, got {v.tolist()}")
        if (values[2] <= 0).any():
            raise ConfigError(f"clinical std must be positive, got {values[2].tolist()}")
        for buffer, v in zip((self.clinical_fill, self.clinical_mean, self.clinical_std), values):
            buffer.copy_(v)

    def clinical_inputs(self, clinical: Tensor | None, batch: int, like: Tensor) -> Tensor:
        """(B, k) standardised clinical inputs; NaN (missing) → the training fill value before scaling."""
        if clinical is None or not isinstance(clinical, Tensor) or tuple(clinical.shape) != (batch, self.clinical_features):
            got = tuple(clinical.shape) if isinstance(clinical, Tensor) else type(clinical).__name__
            raise InputError("clinical", f"expected a tensor (B={batch}, {self.clinical_features}), got {got}")
        clinical = clinical.to(like.dtype)
        filled = torch.where(torch.isnan(clinical), self.clinical_fill.to(like.dtype), clinical)
        if not torch.isfinite(filled).all():
            raise InputError("clinical", "values must be finite or NaN (missing)")
        return (filled - self.clinical_mean.to(like.dtype)) / self.clinical_std.to(like.dtype)

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

    def forward_with_weights(self, image: Tensor, prior: Tensor | None = None, clinical: Tensor | None = None,
                             crop: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Logits (B, n_classes) and the MCA channel weights w (B, C) in (0, 1) (None without MCA)."""
        self._check_inputs(image, prior)
        needs_prior = self.mca is not None or self.input_prior != "none" or self.use_geometry
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
        if self.training and self.whole_brain_dropout > 0:
            pooled = drop_branch(pooled, self.whole_brain_dropout)
        pooled = self.dropout(pooled)
        extra = []
        if self.use_geometry and mask is not None:
            extra.append(prior_geometry(mask).to(pooled.dtype))
        if self.clinical_features:
            extra.append(self.clinical_inputs(clinical, image.shape[0], pooled))
        if self.crop_encoder is not None:
            if not isinstance(crop, Tensor) or crop.shape[0] != image.shape[0]:
                got = tuple(crop.shape) if isinstance(crop, Tensor) else type(crop).__name__
                raise InputError("crop", f"this model needs a lesion crop (B={image.shape[0]}, "
                                         f"{self.crop_encoder.in_channels}, x, y, z), got {got}")
            crop_features = self.crop_encoder(crop.to(pooled.dtype))
            if self.training and self.crop_dropout > 0:
                crop_features = drop_branch(crop_features, self.crop_dropout)
            extra.append(self.dropout(crop_features))
        return self.classifier(torch.cat([pooled, *extra], dim=1)), weights

    def forward(self, image: Tensor, prior: Tensor | None = None, clinical: Tensor | None = None,
                crop: Tensor | None = None) -> Tensor:
        """Logits (B, n_classes) for image (B, in_channels, X, Y, Z), prior (B, 1, X, Y, Z) in [0, 1] or None,
        with ``clinical_features`` = k > 0 clinical values (B, k) in raw units (NaN = missing) and with a crop
        branch the lesion crop (B, crop_channels, x, y, z)."""
        return self.forward_with_weights(image, prior, clinical, crop)[0]

    def extra_repr(self) -> str:
        return (f"n_classes={self.n_classes}, mca={self.use_mca}, input_prior={self.input_prior!r}, "
                f"geometry={self.use_geometry}, clinical_features={self.clinical_features}, "
                f"crop_branch={self.crop_encoder is not None}, whole_brain_dropout={self.whole_brain_dropout}, "
                f"crop_dropout={self.crop_dropout}")
