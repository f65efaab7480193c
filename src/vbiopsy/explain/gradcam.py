"""3-D Grad-CAM (Selvaraju et al. 2017) through captum's ``LayerGradCam``, upsampled to the input grid.

For a convolutional ``layer`` with activations ``A_c`` (``(B, C, x, y, z)``) and the explained
class score ``y``: ``α_c = mean over voxels of ∂y/∂A_c`` and ``map = ReLU(Σ_c α_c A_c)``, upsampled
trilinearly (voxel edges of both grids aligned, ``align_corners=False``) and divided by its
maximum so that 1 is the strongest evidence and 0 none. The class score is the logit by default
(the usual Grad-CAM choice; the softmax couples classes); for ``(B, 1)`` logits class 0 uses
``−z`` (see :func:`vbiopsy.explain.class_outputs`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from captum.attr import LayerAttribution, LayerGradCam
from torch import Tensor, nn

from vbiopsy.errors import ConfigError, InputError
from vbiopsy.explain.attribution import (Output, as_tensor_tuple, check_class_count, check_count, check_model,
                                         check_targets, class_outputs, eval_mode)


def _check_out_shape(out_shape: Sequence[int] | None, inputs: tuple[Tensor, ...]) -> tuple[int, int, int]:
    """``out_shape`` as 3 positive ints; default the spatial shape of the first (image) input."""
    if out_shape is None:
        if inputs[0].ndim != 5:
            raise InputError("inputs[0]", f"expected an image (B, C, X, Y, Z) to take out_shape from, "
                                          f"got shape {tuple(inputs[0].shape)}")
        return tuple(int(n) for n in inputs[0].shape[2:])  # type: ignore[return-value]
    shape = tuple(out_shape)
    if len(shape) != 3:
        raise ConfigError(f"out_shape must have 3 entries (X, Y, Z), got {out_shape!r}")
    return tuple(check_count("out_shape entries", n) for n in shape)  # type: ignore[return-value]


def normalise_by_max(maps: np.ndarray) -> np.ndarray:
    """Each map of ``(B, ...)`` divided by its maximum (all-zero maps stay zero); float32."""
    flat = maps.reshape(len(maps), -1)
    peak = flat.max(axis=1)
    scale = np.where(peak > 0, peak, 1.0)
    return (flat / scale[:, None]).reshape(maps.shape).astype(np.float32)


def layer_grad_cam(
    model: nn.Module,
    layer: nn.Module,
    inputs: Tensor | tuple[Tensor, ...],
    target: int | Sequence[int],
    *,
    output: Output = "logit",
    additional_forward_args: tuple[Any, ...] | None = None,
) -> Tensor:
    """The signed Grad-CAM ``Σ_c α_c A_c`` (no ReLU, not normalised) on ``layer``'s own grid: (B, x, y, z).

    For a layer followed by global average pooling and a linear score, the map's sum over the layer's
    voxels is that layer's contribution to the score, so maps of several layers can be put on one
    scale (see :func:`grad_cam` for the arguments)."""
    check_model(model)
    check_model(layer)
    if not any(module is layer for module in model.modules()):
        raise ConfigError(f"layer {type(layer).__name__} is not a submodule of the model")
    items = as_tensor_tuple(inputs)
    targets = check_targets(target, int(items[0].shape[0]))
    forward = class_outputs(model, output=output)
    cam = LayerGradCam(forward, layer)
    with eval_mode(model):
        check_class_count(forward, items + tuple(additional_forward_args or ()), targets)
        maps = cam.attribute(items if len(items) > 1 else items[0], target=targets,
                             additional_forward_args=additional_forward_args, relu_attributions=False)
    if not isinstance(maps, Tensor) or maps.ndim != 5:
        got = tuple(maps.shape) if isinstance(maps, Tensor) else f"{len(maps)} outputs"
        raise ConfigError(f"Grad-CAM needs a layer with one (B, C, x, y, z) output; this one gives {got}")
    return maps.detach()[:, 0]


def upsample_map(maps: Tensor, shape: Sequence[int]) -> Tensor:
    """(B, x, y, z) maps resampled trilinearly onto ``shape`` (voxel edges aligned, ``align_corners=False``)."""
    with torch.no_grad():
        return LayerAttribution.interpolate(maps[:, None], tuple(shape), interpolate_mode="trilinear")[:, 0]


def grad_cam(
    model: nn.Module,
    layer: nn.Module,
    inputs: Tensor | tuple[Tensor, ...],
    target: int | Sequence[int],
    *,
    out_shape: Sequence[int] | None = None,
    output: Output = "logit",
    additional_forward_args: tuple[Any, ...] | None = None,
) -> np.ndarray:
    """Grad-CAM maps ``(B, X, Y, Z)`` in ``[0, 1]`` of class ``target`` on ``layer``'s output.

    Args:
        model: returns logits from ``model(*inputs, *additional_forward_args)``; run in eval mode.
        layer: a submodule of ``model`` whose output is ``(B, C, x, y, z)`` (e.g. the last stage).
        inputs: image ``(B, C, X, Y, Z)`` or ``(image, tabular)``.
        target: class index, one for all samples or one per sample.
        out_shape: grid of the returned maps (default: the image's spatial shape).
        output: class score explained, ``"logit"`` (default) or ``"probability"``.
        additional_forward_args: extra model arguments passed through unchanged.
    """
    shape = _check_out_shape(out_shape, as_tensor_tuple(inputs))
    maps = layer_grad_cam(model, layer, inputs, target, output=output, additional_forward_args=additional_forward_args)
    return normalise_by_max(upsample_map(maps.clamp_min(0), shape).cpu().numpy())
