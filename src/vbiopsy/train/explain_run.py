"""Explanations of a finished run on its test patients: IG saliency in scan space + Shapley shares.

For each test patient (up to ``explain.max_patients``): Integrated Gradients of the fold ensemble's
probability of its predicted class (zero baseline = background value of every channel), summed
|IG| over channels, placed back on the scan grid exactly (``paste_back`` of the recorded box) and
saved as NIfTI; exact Shapley values of the 4 channels (and of age/sex/EOR for survival, whose
baseline is the training-pool mean) with per-patient shares and their test-set mean. Where the
cohort has a segmentation, the share of |IG| inside the (2-voxel-dilated) tumour is recorded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from vbiopsy.atomic import ensure_writable_dir, write_text_atomic, write_with_atomic
from vbiopsy.data.layouts import read_cohort
from vbiopsy.data.manifest import Manifest
from vbiopsy.data.nifti import Volume, load_volume
from vbiopsy.data.roi_cubes import RoiCube
from vbiopsy.data.splits import Splits
from vbiopsy.errors import InputError
from vbiopsy.train.config import TrainConfig
from vbiopsy.train.ensemble import load_ensemble
from vbiopsy.train.tabular import TabularEncoding

CHANNEL_PLAYERS = ("raw", "zg", "zl", "log")
TABULAR_PLAYERS = ("age", "sex", "eor")


def predicted_target(config: TrainConfig, output: float | np.ndarray, threshold: float | None) -> int:
    """The class explained: argmax (grade), or 1 when P(event) ≥ the OOF threshold (survival)."""
    if config.task == "grade":
        return int(np.argmax(output))
    return int(float(output) >= (threshold if threshold is not None else 0.5))


def tumour_mass_fraction(saliency_scan: np.ndarray, seg_path: str | Path | None, dilation: float = 2.0) -> float | None:
    """Share of the saliency's absolute mass inside the segmentation grown by ``dilation`` voxels
    (:func:`vbiopsy.explain.mass_inside`); ``None`` without a usable segmentation."""
    from vbiopsy.explain import mass_inside

    if seg_path is None:
        return None
    seg = load_volume(seg_path, dtype=np.int16, allow_empty=True).array > 0
    if seg.shape != saliency_scan.shape or not seg.any() or not np.abs(saliency_scan).sum() > 0:
        return None
    return mass_inside(saliency_scan, seg, dilate_vox=dilation)


def pool_encoding(config: TrainConfig, manifest: Manifest, splits: Splits) -> TabularEncoding | None:
    """Clinical-input imputation/normalisation fitted on the whole training pool (the ensemble's input)."""
    if not config.uses_tabular:
        return None
    pool = [s for fold in splits.folds for s in fold.val]
    return TabularEncoding.fit(manifest.frame.set_index("subject_id", drop=False).loc[pool])


def tabular_row(encoding: TabularEncoding | None, manifest: Manifest, subject: str) -> torch.Tensor | None:
    """(1, 3) imputed clinical inputs of ``subject``, or ``None`` for image-only models."""
    if encoding is None:
        return None
    return torch.from_numpy(encoding.transform(manifest.frame[manifest.frame["subject_id"] == subject]))


def saliency_volume(model: torch.nn.Module, cube: RoiCube, image: torch.Tensor, tabular: torch.Tensor | None,
                    target: int, config: TrainConfig) -> Volume:
    """|IG| of ``image`` (1, 4, X, Y, Z: ``cube``'s channels) summed over channels for ``target``, placed
    exactly on the scan's grid through ``cube.box``."""
    from vbiopsy.explain import integrated_gradients, saliency_to_native

    inputs = (image, tabular) if tabular is not None else image
    attributions = integrated_gradients(model, inputs, target, n_steps=config.explain.ig_steps,
                                        internal_batch_size=config.explain.internal_batch_size)
    saliency = attributions[0][0].abs().sum(0).detach().numpy().astype(np.float32)
    return saliency_to_native(saliency, cube.box)


def explain_run(config: TrainConfig, run_dir: Path) -> Path:
    """Write ``explain/`` (saliency NIfTI per patient, shapley.csv, summary.json); return the summary path."""
    from vbiopsy.explain import channel_shapley, save_saliency

    torch.manual_seed(config.optim.seed)
    ensemble = load_ensemble(config, run_dir)
    manifest = read_cohort(config.data.cohort, layout=config.data.layout, clinical=config.data.clinical)
    splits = Splits.load(run_dir / "splits.json")
    test = pd.read_csv(run_dir / "test_predictions.csv", dtype={"subject_id": str})
    posthoc = json.loads((run_dir / "posthoc.json").read_text())
    columns = [c for c in test.columns if c != "subject_id"]
    out = ensure_writable_dir(run_dir / "explain")
    encoding = pool_encoding(config, manifest, splits)
    rows: list[dict[str, Any]] = []
    for _, record in test.head(config.explain.max_patients).iterrows():
        sid = str(record["subject_id"])
        cube = RoiCube.load(run_dir / "cubes" / f"{sid}.npz")
        if cube is None:
            raise InputError(run_dir / "cubes", f"no ROI cube for test subject {sid}")
        tabular = tabular_row(encoding, manifest, sid)
        output = record[columns].to_numpy(dtype=float)
        target = predicted_target(config, output if config.task == "grade" else output[0], posthoc.get("threshold"))
        image = torch.from_numpy(cube.channels())[None]
        scan = saliency_volume(ensemble, cube, image, tabular, target, config)
        path = save_saliency(scan, out / f"{sid}_saliency.nii.gz")
        baseline = torch.from_numpy(encoding.mean.astype(np.float32))[None] if encoding is not None else None
        shapley = channel_shapley(ensemble, image, target, tabular=tabular,
                                  tabular_baseline=baseline, channel_names=CHANNEL_PLAYERS,
                                  tabular_names=TABULAR_PLAYERS if tabular is not None else None)
        seg = manifest.row(sid).get("seg")
        row: dict[str, Any] = {"subject_id": sid, "target": target, "saliency": path.name,
                               "tumour_mass_fraction": tumour_mass_fraction(scan.array, seg),
                               "probability_full": shapley.full_value, "probability_baseline": shapley.base_value}
        for player, value, share in zip(shapley.players, shapley.values, shapley.shares()):
            row[f"phi_{player}"] = float(value)
            row[f"share_{player}"] = float(share)
        rows.append(row)
    frame = pd.DataFrame(rows)
    write_with_atomic(out / "shapley.csv", lambda tmp: frame.to_csv(tmp, index=False, float_format="%.6g"))
    summary = {"method": {"saliency": f"Integrated Gradients ({config.explain.ig_steps} steps, zero baseline) of the "
                                      "fold ensemble's probability of the predicted class; |IG| summed over channels",
                          "shapley": "exact, all coalitions; absent channel = 0 (background); absent clinical "
                                     "variable = training-pool mean"},
               "n_patients": len(rows)}
    if rows:
        shares = [c for c in frame.columns if c.startswith("share_")]
        summary["mean_share"] = {c[6:]: round(float(frame[c].mean()), 4) for c in shares}
        summary["std_share"] = {c[6:]: round(float(frame[c].std(ddof=0)), 4) for c in shares}
        fractions = frame["tumour_mass_fraction"].dropna()
        if len(fractions):
            summary["tumour_mass_fraction_median"] = round(float(fractions.median()), 4)
    return write_text_atomic(out / "summary.json", json.dumps(summary, indent=1) + "\n")
