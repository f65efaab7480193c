"""MGMT-Net inference on a whole volume: sliding-window segmentation, post-processing, markers, native grid.

1. Segmentation: MONAI ``sliding_window_inference`` with Gaussian blending over the working-grid
   volume (padded by MONAI where it is smaller than the patch), softmax per voxel.
2. Post-processing (minimal): tumour components smaller than ``min_component_ml`` are removed;
   optionally an ET smaller than ``et_min_ml`` is relabelled NETC (BraTS practice).
3. Markers: one forward pass on the patch centred on the predicted tumour (the weighted centroid of
   its largest component; the brain centre when nothing is found), because the marker head pools
   over the patch it sees; the CMAF modality weights inside the predicted tumour are summarised.
   Their Grad-CAM (:func:`marker_gradcam`) explains that same forward pass: same patch, same mask.
4. Native grid: class probabilities resampled (linear) back onto the cropped scan box, pasted into
   the scan grid (background outside), then argmax — labels on the patient's own voxels; maps go
   back the same way (:func:`working_to_native`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from vbiopsy.data.nifti import Grid
from vbiopsy.errors import InputError
from vbiopsy.train.profile_config import ProfileInference
from vbiopsy.train.profile_data import ProfileCase
from vbiopsy.train.profile_patches import pad_to, patch_start


@dataclass
class CasePrediction:
    """Prediction of one patient: ``probabilities`` (C, X, Y, Z) and ``labels`` (X, Y, Z) uint8 on the
    working grid, ``markers`` (K,) P(positive), ``modality_share`` mean CMAF weight per modality
    inside the predicted tumour (empty without CMAF or tumour), ``missing`` absent modality indices,
    ``centre`` the working-grid voxel the marker patch is centred on (None if not predicted here)."""

    subject_id: str
    probabilities: np.ndarray
    labels: np.ndarray
    markers: np.ndarray
    modality_share: list[float] = field(default_factory=list)
    missing: list[int] = field(default_factory=list)
    centre: tuple[int, int, int] | None = None


def _mask(present: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.asarray(present, dtype=np.float32))[None]


@torch.no_grad()
def segment_probabilities(model: nn.Module, image: np.ndarray, present: np.ndarray, *, patch: tuple[int, int, int],
                          settings: ProfileInference) -> np.ndarray:
    """(C, X, Y, Z) softmax probabilities of ``image`` (M, X, Y, Z) by Gaussian-blended sliding windows."""
    from monai.inferers import sliding_window_inference

    model.eval()
    mask = _mask(present)

    def predictor(x: torch.Tensor) -> torch.Tensor:
        return model.segment(x, mask.expand(x.shape[0], -1))  # type: ignore[operator]

    logits = sliding_window_inference(torch.from_numpy(np.ascontiguousarray(image))[None], roi_size=patch,
                                      sw_batch_size=settings.sw_batch_size, predictor=predictor,
                                      overlap=settings.overlap, mode="gaussian")
    return torch.softmax(logits.float(), dim=1)[0].numpy()  # type: ignore[union-attr]


def postprocess(labels: np.ndarray, voxel_ml: float, settings: ProfileInference) -> np.ndarray:
    """Remove small tumour components; relabel a tiny ET as NETC (when ``et_min_ml`` > 0)."""
    out = labels.copy()
    if settings.min_component_ml > 0:
        components, n = ndimage.label(out > 0)
        if n:
            sizes = np.bincount(components.ravel())[1:] * voxel_ml
            small = np.flatnonzero(sizes < settings.min_component_ml) + 1
            out[np.isin(components, small)] = 0
    if settings.et_min_ml > 0 and 0 < np.count_nonzero(out == 3) * voxel_ml < settings.et_min_ml:
        out[out == 3] = 1
    return out


def tumour_centre(labels: np.ndarray, tumour_prob: np.ndarray, brain: np.ndarray) -> tuple[int, int, int]:
    """Probability-weighted centroid of the largest predicted tumour component (brain centre if none)."""
    components, n = ndimage.label(labels > 0)
    if n:
        largest = int(np.argmax(np.bincount(components.ravel())[1:])) + 1
        centre = ndimage.center_of_mass(tumour_prob * (components == largest))
    else:
        centre = ndimage.center_of_mass(brain) if brain.any() else tuple(s / 2 for s in labels.shape)
    return tuple(int(round(c)) for c in centre)  # type: ignore[return-value]


def marker_patch(image: np.ndarray, centre: tuple[int, int, int],
                 patch: tuple[int, int, int]) -> tuple[torch.Tensor, tuple[slice, ...]]:
    """The marker head's input ``(1, M, *patch)`` cut at ``centre`` from ``image`` (M, X, Y, Z) zero-padded at
    the end to at least ``patch``, and its box (three slices) in that padded working grid."""
    padded = pad_to(image, patch)
    start = patch_start(centre, patch, padded.shape[1:])
    box = tuple(slice(s, s + p) for s, p in zip(start, patch))
    return torch.from_numpy(np.ascontiguousarray(padded[(slice(None), *box)]))[None], box


@torch.no_grad()
def marker_probabilities(model: nn.Module, image: np.ndarray, present: np.ndarray, centre: tuple[int, int, int],
                         patch: tuple[int, int, int], labels: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """P(positive) per marker from the patch at ``centre``, and the mean CMAF weight per modality over
    the predicted tumour voxels of that patch."""
    x, box = marker_patch(image, centre, patch)
    out = model(x, _mask(present))
    markers = torch.sigmoid(out.marker_logits.float())[0].numpy()
    share: list[float] = []
    if out.modality_weights is not None:
        tumour = pad_to(labels, patch)[box] > 0
        if tumour.any():
            weights = out.modality_weights[0].float().numpy()
            share = [round(float(w[tumour].mean()), 4) for w in weights]
    return markers, share


def predict_case(model: nn.Module, case: ProfileCase, *, patch: tuple[int, int, int],
                 settings: ProfileInference) -> CasePrediction:
    """Segmentation (windows of ``settings.roi`` or ``patch``), markers (on ``patch``, as trained) and
    modality shares of one case (working grid)."""
    prob = segment_probabilities(model, case.image, case.present, patch=settings.roi or patch, settings=settings)
    voxel_ml = float(np.prod(case.spacing)) / 1000.0
    labels = postprocess(prob.argmax(axis=0).astype(np.uint8), voxel_ml, settings)
    brain = (case.image != 0).any(axis=0)
    centre = tumour_centre(labels, 1.0 - prob[0], brain)
    markers, share = marker_probabilities(model, case.image, case.present, centre, patch, labels)
    return CasePrediction(case.subject_id, prob, labels, markers, share, case.missing, centre)


def marker_gradcam(models: Sequence[nn.Module], case: ProfileCase, prediction: CasePrediction, *,
                   patch: tuple[int, int, int], markers: Sequence[str]) -> dict[str, np.ndarray]:
    """Grad-CAM of each marker's positive class, fold-model mean, ``{name: (X, Y, Z)}`` on the working grid.

    It explains the forward pass that gave ``prediction.markers``: the ``patch`` at ``prediction.centre``
    with the case's modality mask; voxels outside that patch (never seen by the marker head) are 0.
    """
    from vbiopsy.explain.marker_gradcam import marker_grad_cam

    if prediction.centre is None:
        raise InputError(f"subject {case.subject_id}", "the prediction has no marker-patch centre "
                                                       "(predict it with predict_case)")
    x, box = marker_patch(case.image, prediction.centre, patch)
    maps = marker_grad_cam(list(models), x, _mask(case.present), marker_names=markers)
    shape = case.image.shape[1:]
    out = {}
    for name, cam in maps.items():
        padded = np.zeros(pad_to(case.image[0], patch).shape, dtype=np.float32)
        padded[box] = cam[0]
        out[name] = np.ascontiguousarray(padded[tuple(slice(0, n) for n in shape)])
    return out


def working_to_native(volume: np.ndarray, case: ProfileCase, *, fill: float = 0.0) -> np.ndarray:
    """A working-grid map (X, Y, Z) resampled (linear) onto the brain box of the patient's scan grid, ``fill``
    elsewhere: float32 (native X, Y, Z), affine ``case.native.affine``."""
    from vbiopsy.preprocess.resample import resample_array

    native = case.native
    crop_grid = Grid(tuple(b - a for a, b in native.crop), native.crop_affine())  # type: ignore[arg-type]
    out = np.full(native.shape, fill, dtype=np.float32)
    out[tuple(slice(a, b) for a, b in native.crop)] = resample_array(volume, case.affine, crop_grid)
    return out


def to_native(prediction: CasePrediction, case: ProfileCase, settings: ProfileInference) -> np.ndarray:
    """Labels (uint8, BraTS 2024) on the patient's scan grid (canonical RAS, ``case.native.affine``)."""
    prob = np.stack([working_to_native(channel, case, fill=1.0 if c == 0 else 0.0)
                     for c, channel in enumerate(prediction.probabilities)])
    labels = prob.argmax(axis=0).astype(np.uint8)
    voxel_ml = float(np.prod(np.linalg.norm(case.native.affine[:3, :3], axis=0))) / 1000.0
    return postprocess(labels, voxel_ml, settings)
