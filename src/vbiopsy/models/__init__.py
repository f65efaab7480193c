"""Neural networks (``nn.Module`` only; no files, no losses): ASLNet backbone, FiLM, tabular fusion;
MGMT-Net blocks; the Virtual Biopsy Adaptive-Diagnoser with its backbone registry.

:func:`build_aslnet` makes the two ASLNet models with the paper's final settings:

- ``"grade"``: :class:`ResNet3D` (4 → 3 logits, f = 32, basic blocks [2, 2, 2, 2], GN 32,
  spatial dropout 0.3): 8,331,587 parameters;
- ``"survival"``: :class:`ASLNetSurvival` (f = 32, dropout 0.1, one logit, FiLM on stages 2 and 3
  conditioned on [age, sex, EOR]): 8,480,969 trainable parameters plus the normaliser buffers.
"""

from __future__ import annotations

import inspect
from typing import Any, Literal

from torch import nn

from vbiopsy.errors import ConfigError
from vbiopsy.models.cmaf import ConcatFusion, CrossModalityAttentionFusion
from vbiopsy.models.hybrid_encoder import HybridEncoder
from vbiopsy.models.marker_head import MarkerHead
from vbiopsy.models.mgmtnet import MGMTNet, MGMTNetOutput
from vbiopsy.models.segmentation_decoder import AttentionGate, SegmentationDecoder
from vbiopsy.models.backbones import BACKBONES, build_backbone, register_backbone
from vbiopsy.models.diagnoser import AdaptiveDiagnoser
from vbiopsy.models.film import FiLMGenerator, modulate
from vbiopsy.models.masked_channel_attention import MaskedChannelAttention, masked_average_pool, resize_prior
from vbiopsy.models.resnet3d import GroupNorm3d, ResidualBlock3D, ResNet3D, group_norm
from vbiopsy.models.tabular import ASLNetSurvival, NonFiniteTabularError, TabularEncoder

__all__ = ["AttentionGate", "ConcatFusion", "CrossModalityAttentionFusion", "HybridEncoder", "MGMTNet", "MGMTNetOutput",
           "MarkerHead", "SegmentationDecoder",
           "AdaptiveDiagnoser", "BACKBONES", "MaskedChannelAttention", "build_backbone", "masked_average_pool",
           "register_backbone", "resize_prior",
           "ASLNetSurvival", "FiLMGenerator", "GroupNorm3d", "NonFiniteTabularError", "ResNet3D", "ResidualBlock3D",
           "TabularEncoder", "build_aslnet", "group_norm", "modulate"]

#: output logits of the grade model: WHO grade II, III, IV.
GRADE_CLASSES = 3


def build_aslnet(task: Literal["grade", "survival"], *, in_channels: int = 4, tabular_features: int = 3,
                 **kwargs: Any) -> nn.Module:
    """The ASLNet network for ``task`` with the paper's defaults; ``kwargs`` override constructor options.

    ``tabular_features`` is used by the survival model only. Unknown options raise ConfigError.
    """
    if task not in ("grade", "survival"):
        raise ConfigError(f"task must be 'grade' or 'survival', got {task!r}")
    model_class = ResNet3D if task == "grade" else ASLNetSurvival
    known = set(inspect.signature(model_class).parameters) - {"in_channels", "tabular_features"}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise ConfigError(f"unknown option(s) {unknown} for the ASLNet {task} model; known: {sorted(known)}")
    if task == "grade":
        options: dict[str, Any] = {"out_channels": GRADE_CLASSES, "base_width": 32, "dropout": 0.3, **kwargs}
        return ResNet3D(in_channels, **options)
    options = {"base_width": 32, "dropout": 0.1, **kwargs}
    return ASLNetSurvival(in_channels, tabular_features, **options)
