"""Grad-CAM of the Adaptive-Diagnoser: the whole-brain backbone and, with a crop branch, the lesion crop on one scale.

The backbone's Grad-CAM lives on the working grid (≈ 4 mm in the demo); the crop branch's on the
tumour-centred crop (2 mm). Each is the standard Grad-CAM of its layer, ``ReLU(Σ_c α_c A_c)`` on the
layer's own grid (:func:`vbiopsy.explain.gradcam.layer_grad_cam`). Both layers are globally average
pooled into a linear head, so a map's sum over its layer's voxels is that branch's contribution to the
explained logit; dividing by the layer's voxel volume (mm³) makes the two maps densities of the same
quantity, which are then added on the working grid (the crop's map resampled into its box, zero
outside). The result, normalised to peak 1, shows where the model's evidence for the class lies,
whichever branch it came through; ``crop_share`` says how much of it came through the crop.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import ndimage

from vbiopsy.atomic import ensure_writable_dir, write_text_atomic
from vbiopsy.data.schema import DIAGNOSES
from vbiopsy.errors import ConfigError, InputError
from vbiopsy.tasks.diagnose import model_inputs
from vbiopsy.train.diagnosis_config import DiagnosisConfig, LesionCropSettings
from vbiopsy.train.diagnosis_crop import crop_box
from vbiopsy.train.diagnosis_data import DiagnosisSample, case_dataset
from vbiopsy.train.diagnosis_run import COLUMNS, clinical_inputs, load_fold_models


def scan_spacing(record: dict) -> np.ndarray:
    """The scan's voxel size (mm) from a sample record's ``scan_affine``."""
    return np.linalg.norm(np.asarray(record["scan_affine"], dtype=float)[:3, :3], axis=0)


def working_voxel_mm3(record: dict, working_shape: Sequence[int]) -> float:
    """Volume (mm³) of one working-grid voxel of the sample ``record``."""
    box = (np.asarray(record["box_stop"]) - np.asarray(record["box_start"])) * scan_spacing(record)
    return float(np.prod(box / np.asarray(working_shape, dtype=float)))


def crop_to_working_grid(crop_map: np.ndarray, record: dict, settings: LesionCropSettings, prior: str,
                         working_shape: Sequence[int]) -> np.ndarray:
    """A map on the crop's central window (``settings.shape``) put onto the sample's working grid (linear,
    0 outside the crop's box), through the scan-voxel coordinates both grids are cut from."""
    spacing = scan_spacing(record)
    stored = np.asarray(settings.shape) + 2 * settings.jitter_voxels
    start, stop = crop_box(record["crop_centres"][prior], spacing, tuple(stored), settings.spacing_mm)
    box_start, box_stop = np.asarray(record["box_start"], float), np.asarray(record["box_stop"], float)
    to_scan = (box_stop - box_start) / np.asarray(working_shape, float)  # working voxel → scan voxels
    to_crop = stored / (stop - start).astype(float)  # scan voxel → stored-crop voxels
    # scan s = box_start + (w + 0.5)·to_scan − 0.5; window j = (s + 0.5 − start)·to_crop − 0.5 − jitter
    matrix = to_scan * to_crop
    offset = (box_start + 0.5 * to_scan - start) * to_crop - 0.5 - settings.jitter_voxels
    return ndimage.affine_transform(crop_map.astype(np.float64), matrix, offset, output_shape=tuple(working_shape),
                                    order=1, mode="constant", cval=0.0).astype(np.float32)


def gradcam_branches(models: list[torch.nn.Module], sample: DiagnosisSample, config: DiagnosisConfig, target: int,
                     clinical: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per branch (``backbone``, and ``crop`` for a crop-branch model): the Grad-CAM density of class ``target``
    (logit per mm³, ≥ 0) on the working grid, averaged over ``models`` (``clinical``: the patient's (k,)
    clinical inputs when the model takes them; the crop is the sample's central window)."""
    from vbiopsy.explain.gradcam import layer_grad_cam, upsample_map

    named = {k: v[None] for k, v in model_inputs(case_dataset(sample, config, clinical)[0]).items()}
    extra = tuple(named.get(k) for k in ("prior", "clinical", "crop"))
    shape = tuple(sample.image.shape)
    voxel = working_voxel_mm3(sample.record, shape)
    crop_settings = config.data.lesion_crop
    sums: dict[str, np.ndarray] = {}
    for model in models:
        layers = {"backbone": model.feature_module}
        encoder = getattr(model, "crop_encoder", None)
        if encoder is not None and crop_settings is not None:
            layers["crop"] = encoder.features
        for name, layer in layers.items():
            raw = layer_grad_cam(model, layer, named["image"], target, additional_forward_args=extra).clamp_min(0)
            grid = shape if name == "backbone" else crop_settings.shape  # type: ignore[union-attr]
            layer_voxel_mm3 = (voxel if name == "backbone" else crop_settings.spacing_mm ** 3) \
                * float(np.prod(grid)) / float(np.prod(raw.shape[1:]))  # type: ignore[union-attr]
            density = upsample_map(raw, grid)[0].cpu().numpy() / layer_voxel_mm3
            if name == "crop":
                density = np.clip(crop_to_working_grid(density, sample.record, crop_settings, config.model.prior,
                                                       shape), 0.0, None)
            sums[name] = sums.get(name, 0.0) + density / len(models)
    return sums


def case_gradcam(models: list[torch.nn.Module], sample: DiagnosisSample, config: DiagnosisConfig, target: int,
                 clinical: np.ndarray | None = None) -> np.ndarray:
    """Grad-CAM (working grid, [0, 1]) of class ``target``: the branches' densities added, peak 1 (see the module
    docstring); for a model without a crop branch the backbone's Grad-CAM, as the paper shows it."""
    from vbiopsy.explain.gradcam import normalise_by_max

    total = sum(gradcam_branches(models, sample, config, target, clinical).values())
    return normalise_by_max(np.asarray(total, dtype=np.float32)[None])[0]


def gradcam_overlays(run_dir: str | Path, *, max_patients: int | None = None) -> Path:
    """Grad-CAM of the predicted class for the first OOF patients (each by the fold model that did not train
    on it): ``gradcam/gradcam.png`` (slices with the map and, where known, the tumour outline) and
    ``gradcam/gradcam.json`` (whether the peak lies in the 1-voxel-dilated tumour, mass inside it and, for a
    crop-branch model, the share of the evidence that came through the crop; ``empty_map`` instead when the map
    is zero everywhere — no peak to place — and such patients are left out of ``peak_in_tumour_share``)."""
    from vbiopsy.explain import mass_inside
    from vbiopsy.explain.gradcam import normalise_by_max
    from vbiopsy.report.figures import saliency_panels

    run_dir = Path(run_dir)
    config, models = load_fold_models(run_dir)
    limit = config.explain.max_patients if max_patients is None else max_patients
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ConfigError(f"max_patients must be an integer >= 0, got {limit!r}")
    samples_dir = Path(json.loads((run_dir / "run.json").read_text())["samples_dir"])
    oof = pd.read_csv(run_dir / "oof_predictions.csv", dtype={"subject_id": str}).sort_values("subject_id").head(limit)
    clinical = clinical_inputs(config, list(oof["subject_id"]))
    panels, rows = [], []
    for i, (_, row) in enumerate(oof.iterrows()):
        sample = DiagnosisSample.load(samples_dir / f"{row['subject_id']}.npz")
        if sample is None:
            raise InputError(samples_dir, f"no cached sample for {row['subject_id']}")
        predicted = int(np.argmax(row[COLUMNS].to_numpy(dtype=float)))
        branches = gradcam_branches([models[int(row["fold"])]], sample, config, predicted,
                                    None if clinical is None else clinical[i])
        total = np.asarray(sum(branches.values()), dtype=np.float32)
        cam = normalise_by_max(total[None])[0]
        tumour = sample.priors["seg"] >= 0.5 if "seg" in sample.priors else None
        peak = np.unravel_index(int(np.argmax(cam)), cam.shape)
        record = {"subject_id": row["subject_id"], "true": DIAGNOSES[int(row["target"])],
                  "predicted": DIAGNOSES[predicted]}
        if not total.sum() > 0:  # every class-weighted map negative: no evidence to place or split
            record["empty_map"] = True
        elif "crop" in branches:
            record["crop_share"] = round(float(branches["crop"].sum() / total.sum()), 4)
        if tumour is not None and tumour.any() and total.sum() > 0:
            record["peak_in_tumour"] = bool(ndimage.binary_dilation(tumour)[peak])
            record["mass_in_tumour"] = round(mass_inside(cam, tumour, dilate_vox=1.0), 4)
        rows.append(record)
        caption = f"{record['subject_id']}\n{record['true']} → {record['predicted']}"
        panels.append((caption, sample.image, cam, tumour))
    out = ensure_writable_dir(run_dir / "gradcam")
    if panels:
        saliency_panels(panels, out / "gradcam.png", title="Grad-CAM of the predicted class (out-of-fold)")
    peaks = [r["peak_in_tumour"] for r in rows if "peak_in_tumour" in r]
    summary = {"patients": rows, "peak_in_tumour_share": round(float(np.mean(peaks)), 4) if peaks else None}
    return write_text_atomic(out / "gradcam.json", json.dumps(summary, indent=1) + "\n")


