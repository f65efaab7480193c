"""Grad-CAM of MGMT-Net's molecular-marker logits (IDH, 1p/19q, TERT) on the encoder bottleneck.

Explained layer (:func:`marker_layer`): the module whose output is the encoder's last fused stage
map, the bottleneck ``(B, width·2^(stages−1), X/2^stages, Y/2^stages, Z/2^stages)`` —
``encoder.fuse[-1]`` for the hybrid CNN ‖ Swin encoder, ``encoder.cnn_stages[-1]`` for the CNN
ablation. It is exactly the tensor :class:`~vbiopsy.models.marker_head.MarkerHead` receives: the
head multiplies it by the pooled predicted-tumour probability (the gate), pools it (attention or
GAP) and feeds the per-marker MLPs. The gate lives inside the explained function, so it weighs the
gradients (the channel weights ``α_c``), but the activations drawn are the ungated ones: a map can
show voxels outside the predicted tumour where the channels a marker relies on are active. The
gradient also flows through the decoder (the gate depends on the segmentation logits), as captum's
``LayerGradCam`` differentiates the whole model. With ``marker_composition`` on, the head also reads the
tumour-composition features (region volumes and intensities from the detached segmentation and the
image, :func:`~vbiopsy.models.marker_head.composition_features`); they do not pass through the
bottleneck, so the map explains only the pooled-feature part of the logit.

Explained class: **positive** (IDH mutant, 1p/19q co-deleted, TERT promoter mutant), whatever the
predicted probability. The score is the marker's logit ``z_k`` (Grad-CAM's usual choice); since
``∂σ(z)/∂A = σ'(z)·∂z/∂A`` with ``σ'(z) > 0`` the same for every voxel of a sample, the map of
P(positive) would be identical after the ReLU and the division by the maximum.

Maps are upsampled (trilinear) to the model-input grid and divided by their maximum
(:func:`vbiopsy.explain.gradcam.grad_cam`): values in ``[0, 1]``, 1 = strongest evidence for the
positive class. Several models (a fold ensemble) give the mean of their maps, rescaled to peak 1,
as the Adaptive-Diagnoser's fold ensemble does.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from vbiopsy.errors import ConfigError, InputError
from vbiopsy.explain.attribution import check_model
from vbiopsy.explain.gradcam import grad_cam, normalise_by_max
from vbiopsy.models.cmaf import check_image, check_modality_mask
from vbiopsy.models.hybrid_encoder import HybridEncoder
from vbiopsy.train.profile_data import MARKERS

POSITIVE = 1
"""Class index of ``grad_cam`` for a one-column logit ``z``: class 1 is scored by ``z`` (positive)."""


def marker_layer(model: nn.Module) -> nn.Module:
    """The module of an MGMT-Net whose output is the bottleneck the marker head gates and pools (see module doc)."""
    encoder = getattr(model, "encoder", None)
    if not isinstance(encoder, HybridEncoder) or not hasattr(model, "marker_head"):
        raise ConfigError(f"{type(model).__name__} is not an MGMT-Net (no encoder / marker_head); "
                          "pass the explained layer explicitly")
    return encoder.fuse[-1] if len(encoder.fuse) else encoder.cnn_stages[-1]


class MarkerLogit(nn.Module):
    """One marker's logit of an MGMT-Net-like ``model`` as a ``(B, 1)`` output: ``z_k`` for ``(image, mask)``.

    ``model(image, modality_mask)`` must return an object with ``marker_logits`` ``(B, n_markers)``
    (:class:`~vbiopsy.models.mgmtnet.MGMTNetOutput`). The one-column output makes
    :func:`~vbiopsy.explain.gradcam.grad_cam`'s class :data:`POSITIVE` the marker's positive class.
    """

    def __init__(self, model: nn.Module, index: int, n_markers: int) -> None:
        super().__init__()
        self.model = check_model(model)
        if not 0 <= index < n_markers:
            raise ConfigError(f"marker index {index} is outside 0 … {n_markers - 1}")
        self.index = index
        self.n_markers = n_markers

    def forward(self, image: Tensor, modality_mask: Tensor | None = None) -> Tensor:
        """``(B, 1)`` logit of marker ``index``."""
        logits = getattr(self.model(image, modality_mask), "marker_logits", None)
        if not isinstance(logits, Tensor) or logits.ndim != 2 or logits.shape[1] != self.n_markers:
            shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
            raise ConfigError(f"the model's marker_logits must have shape (B, {self.n_markers}) — one per marker "
                              f"name — got {shape}")
        return logits[:, self.index:self.index + 1]


def _check_names(marker_names: Sequence[str], markers: Sequence[str] | None) -> list[str]:
    """The explained markers (default: all), each a known name; ConfigError names the bad value."""
    if isinstance(marker_names, str) or not marker_names or len(set(marker_names)) != len(marker_names) \
            or not all(isinstance(n, str) and n for n in marker_names):
        raise ConfigError(f"marker_names must be distinct non-empty names, got {marker_names!r}")
    chosen = list(marker_names) if markers is None else markers
    if isinstance(chosen, str) or not chosen:
        raise ConfigError(f"markers must be a non-empty list of marker names, got {markers!r}")
    unknown = [m for m in chosen if m not in marker_names]
    if unknown:
        raise ConfigError(f"unknown marker {unknown[0]!r}; the model's markers are {', '.join(marker_names)}")
    return list(dict.fromkeys(chosen))


def _as_models(models: nn.Module | Sequence[nn.Module]) -> list[nn.Module]:
    items = [models] if isinstance(models, nn.Module) else list(models)
    if not items:
        raise ConfigError("models must be a model or a non-empty list of models")
    return [check_model(m) for m in items]


def marker_grad_cam(models: nn.Module | Sequence[nn.Module], image: Tensor, modality_mask: Tensor | None = None,
                    *, marker_names: Sequence[str] = MARKERS, markers: Sequence[str] | None = None,
                    layers: Sequence[nn.Module] | None = None) -> dict[str, np.ndarray]:
    """Grad-CAM of each marker's **positive** class (mutant / co-deleted), ``{name: (B, X, Y, Z)}`` in ``[0, 1]``.

    Args:
        models: an MGMT-Net, or the fold models of a run (maps averaged, then rescaled to peak 1).
        image: the model input ``(B, M, X, Y, Z)`` exactly as the marker probability was computed
            from (for ``vbiopsy predict``: the tumour-centred patch); maps are on its grid.
        modality_mask: ``(B, M)`` or ``(1, M)`` 0/1 present modalities, as given to the model (None = all).
        marker_names: the model's marker logits in order (the run's ``data.markers``).
        markers: the markers to explain (default: all of ``marker_names``).
        layers: the explained layer of each model (default: :func:`marker_layer`, the bottleneck).

    Each model runs in eval mode (dropout off); its modes are restored afterwards.
    """
    members = _as_models(models)
    chosen = _check_names(marker_names, markers)
    if not isinstance(image, Tensor) or image.ndim != 5:
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise InputError("image", f"expected shape (batch, modalities, X, Y, Z), got {shape}")
    check_image(image, int(getattr(members[0], "in_modalities", image.shape[1])))
    mask = check_modality_mask(modality_mask, image)
    explained = [marker_layer(m) for m in members] if layers is None else list(layers)
    if len(explained) != len(members):
        raise ConfigError(f"layers must give one layer per model ({len(members)}), got {len(explained)}")
    maps: dict[str, np.ndarray] = {}
    for name in chosen:
        index = list(marker_names).index(name)
        with torch.enable_grad():
            per_model = [grad_cam(MarkerLogit(m, index, len(marker_names)), layer, image, POSITIVE,
                                  additional_forward_args=(mask,)) for m, layer in zip(members, explained)]
        maps[name] = per_model[0] if len(per_model) == 1 else normalise_by_max(np.mean(per_model, axis=0))
    return maps
