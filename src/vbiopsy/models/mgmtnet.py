"""MGMT-Net: multi-task glioma segmentation + molecular markers from multi-modal MRI (paper §3).

image (B, M, X, Y, Z) [+ modality mask (B, M)]
  → fusion (CMAF or concat) → fused (B, width, X, Y, Z)                    (:mod:`.cmaf`)
  → hybrid CNN ‖ Swin encoder → stage maps, bottleneck at 1/2^stages      (:mod:`.hybrid_encoder`)
  → U-Net decoder (skips: stage maps + fused) → seg logits (B, K, X, Y, Z) (:mod:`.segmentation_decoder`)
  → marker head on the tumour-gated bottleneck → marker logits (B, n)      (:mod:`.marker_head`)
    [+ the tumour composition read from the seg softmax and the image, ``marker_composition=True``]

Every block is switchable for the paper's ablations (``fusion="concat"``, ``encoder="cnn"``,
``marker_pooling="gap"``) and usable alone. Spatial sizes must be multiples of
:attr:`MGMTNet.divisor` (= 2**stages) and, with the Swin branch, at least
``window_size · 2**stages`` per axis (the Swin window must fit the bottleneck grid): 32³ for the
defaults, 16³ with ``window_size=2``. Full volumes go through MONAI's
``sliding_window_inference`` with :meth:`MGMTNet.segment` as the predictor.

Default configuration (4 modalities, 5 classes, 3 markers, width 16, 3 stages, CMAF, hybrid
encoder, attention pooling, 4 heads, window 4; also ``configs/mgmtnet.yaml``):
**1,021,916 parameters** (asserted in the tests against a count derived by hand from the layer
list). One 128³ window costs ≈ 205 GFLOP (SwinUNETR, feature size 48: ≈ 1,560 GFLOP).

Choices beyond the paper (details in the block modules): GroupNorm instead of BatchNorm
(batch 2 in training, 1 in sliding windows, missing modalities), with its statistics taken over
the brain voxels only (:func:`~vbiopsy.models.cmaf.normalise_over_brain`), so that predictions
do not depend on how much zero background or padding a window holds; Swin window 4 instead of 8
and no Swin at encoder stage 0 (memory and time at the paper's 128³ window: an 8³ window holds
512 tokens and stage 0 is a 64³ grid); Swin stages at the CNN stages' resolutions so that they
are fused per stage for the skips; the marker head's tumour gate is not detached.
``marker_composition=True`` (off by default and in ``configs/mgmtnet.yaml``, on in
``configs/mgmtnet-demo.yaml``) also feeds the marker MLPs the tumour composition of the patch — soft
region volumes and per-region modality means / spreads from the model's own, detached, softmax
segmentation (:func:`~vbiopsy.models.marker_head.composition_features`): on 150 glioma phantoms the
demo model's out-of-fold IDH / TERT AUC went from 0.51 / 0.48 (bottleneck alone) to 0.84 / 0.60, held
out from 0.75 / 0.51 to 0.96 / 0.81, with the same WT Dice (``benchmarks/bench_mgmtnet.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor, nn

from vbiopsy.errors import ConfigError
from vbiopsy.models.cmaf import (build_fusion, check_image, check_modality_mask, normalise_over_brain,
                                 use_brain_group_norm)
from vbiopsy.models.film import check_int, check_rate
from vbiopsy.models.hybrid_encoder import HybridEncoder
from vbiopsy.models.marker_head import MarkerHead
from vbiopsy.models.segmentation_decoder import SegmentationDecoder


@dataclass
class MGMTNetOutput:
    """Outputs of :class:`MGMTNet` for an image (B, M, X, Y, Z).

    Attributes:
        seg_logits: (B, seg_classes, X, Y, Z), same spatial size as the input.
        marker_logits: (B, n_markers); the marker order is the caller's business.
        modality_weights: (B, M, X, Y, Z) CMAF attention (softmax over the present modalities, 0
            for absent ones); None for concat fusion.
        deep_supervision: lower-resolution seg logits (B, seg_classes, x, y, z), coarse → fine;
            [] unless enabled.
        marker_attention: (B, 1, x, y, z) pooling weights of the marker head on the bottleneck
            grid (sum 1 per sample), for explanations; None for "gap" pooling.
    """

    seg_logits: Tensor
    marker_logits: Tensor
    modality_weights: Tensor | None
    deep_supervision: list[Tensor]
    marker_attention: Tensor | None = None


class MGMTNet(nn.Module):
    """MGMT-Net: fusion → hybrid encoder → segmentation decoder + marker head.

    Args:
        in_modalities: M, input modalities (T1, T1c, T2, FLAIR: 4).
        seg_classes: segmentation classes, background (class 0) included.
        n_markers: binary molecular markers (one logit each).
        width: C', channels after fusion; encoder stage s has width·2^s channels.
        stages: encoder stages (2 residual blocks each; 2 Swin blocks each from stage 1 on, so ≥ 2 for "hybrid").
        fusion: "cmaf" (paper) or "concat" (ablation).
        encoder: "hybrid" (CNN ‖ Swin, paper) or "cnn" (ablation).
        marker_pooling: "attention" (paper) or "gap" (ablation).
        swin_heads: attention heads in every Swin stage; 2·width must be a multiple.
        window_size: Swin window (≥ 2 tokens per side; every second block shifts by half of it).
        attention_gates: gate the decoder skips.
        deep_supervision: also return intermediate decoder logits (needs stages ≥ 2).
        cmaf_dropout: dropout inside the CMAF attention MLP.
        head_dropout: dropout before each marker MLP.
        head_hidden: hidden width of each marker MLP.
        marker_composition: also give the marker MLPs the tumour-composition features (beyond the paper;
            adds 2·(seg_classes − 1)·(in_modalities + 1) inputs to each MLP's first layer).
    """

    def __init__(self, in_modalities: int = 4, seg_classes: int = 5, n_markers: int = 3, *, width: int = 16,
                 stages: int = 3, fusion: Literal["cmaf", "concat"] = "cmaf",
                 encoder: Literal["hybrid", "cnn"] = "hybrid",
                 marker_pooling: Literal["attention", "gap"] = "attention", swin_heads: int = 4, window_size: int = 4,
                 attention_gates: bool = False, deep_supervision: bool = False, cmaf_dropout: float = 0.2,
                 head_dropout: float = 0.3, head_hidden: int = 64, marker_composition: bool = False) -> None:
        super().__init__()
        self.in_modalities = check_int("in_modalities", in_modalities)
        self.seg_classes = check_int("seg_classes", seg_classes, minimum=2)
        self.width = check_int("width", width)
        check_int("stages", stages)
        if encoder not in ("hybrid", "cnn"):
            raise ConfigError(f"encoder must be 'hybrid' or 'cnn', got {encoder!r}")
        self.fusion = build_fusion(fusion, self.in_modalities, self.width, check_rate("cmaf_dropout", cmaf_dropout))
        self.encoder = HybridEncoder(self.width, self.width, stages, swin=encoder == "hybrid", swin_heads=swin_heads,
                                     window_size=window_size)
        self.decoder = SegmentationDecoder(self.width, stages, self.seg_classes, attention_gates=attention_gates,
                                           deep_supervision=deep_supervision)
        if not isinstance(marker_composition, bool):
            raise ConfigError(f"marker_composition must be True or False, got {marker_composition!r}")
        self.marker_composition = marker_composition
        self.marker_head = MarkerHead(self.encoder.channels[-1], n_markers, pooling=marker_pooling,
                                      hidden=head_hidden, dropout=head_dropout,
                                      composition_modalities=self.in_modalities if marker_composition else 0,
                                      seg_classes=self.seg_classes if marker_composition else 0)
        use_brain_group_norm(self)  # brain-only statistics inside forward/segment (same parameters)

    @property
    def divisor(self) -> int:
        """Spatial sizes must be multiples of this (2**stages)."""
        return self.encoder.divisor

    def forward(self, image: Tensor, modality_mask: Tensor | None = None) -> MGMTNetOutput:
        """All outputs for image (B, M, X, Y, Z) and modality_mask (B, M) bool or 0/1 (None = all present).

        InputError for a bad shape, a size that is not a multiple of :attr:`divisor`, or a sample
        with no modality present; ConfigError when the Swin window exceeds the bottleneck grid.
        """
        check_image(image, self.in_modalities)
        self.encoder.check_size(tuple(image.shape[2:]))  # before any work
        with normalise_over_brain(image):
            fused, weights = self.fusion(image, modality_mask)
            features = self.encoder(fused)
            decoded = self.decoder(fused, features)
            composition_image = self._present_image(image, modality_mask)
            markers, attention = self.marker_head(features[-1], decoded.logits, composition_image)
        return MGMTNetOutput(decoded.logits, markers, weights, decoded.deep_supervision, attention)

    def _present_image(self, image: Tensor, modality_mask: Tensor | None) -> Tensor | None:
        """The image with absent modalities zeroed (their values must not matter) for the composition features;
        None without them."""
        if not self.marker_composition:
            return None
        present = check_modality_mask(modality_mask, image).to(image.dtype)
        return image * present.expand(image.shape[0], -1)[:, :, None, None, None]

    def segment(self, image: Tensor, modality_mask: Tensor | None = None) -> Tensor:
        """Segmentation logits (B, seg_classes, X, Y, Z) only, without the marker head.

        The predictor for ``monai.inferers.sliding_window_inference``; a (1, M) mask is broadcast
        to the window batch.
        """
        check_image(image, self.in_modalities)
        self.encoder.check_size(tuple(image.shape[2:]))
        with normalise_over_brain(image):
            fused, _ = self.fusion(image, modality_mask)
            return self.decoder(fused, self.encoder(fused)).logits
