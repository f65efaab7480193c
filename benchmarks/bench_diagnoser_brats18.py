"""Benchmark: the phantom-trained Adaptive-Diagnoser end to end on the 10 real BraTS'18 cases.

Issue 6: the pipeline trained on phantoms only (a finished ``task: diagnosis`` run, e.g. the one
``benchmarks/bench_diagnoser.py`` writes) runs on real scans — MRI-Processor (``skull-stripped``
preset: N4, resampling to the working spacing, normalisation) → Tumor-Localizer → Adaptive-Diagnoser →
Grad-CAM — and the Grad-CAM peak is checked against the manual tumour mask (never used for training).

Printed per case: predicted type and probability (every BraTS'18 case is a glioma), whether the Grad-CAM
peak lies inside the tumour mask (and inside it dilated by 5 mm), the share of Grad-CAM mass inside the
mask, and the same for the localiser's refined prior (Dice with the mask): a peak inside the tumour
could come from the prior alone, so both are shown. For a run with lesion measurements, their enhancing,
core and FLAIR-abnormality volumes against the manual labels cut into the same crop (Spearman ρ).
Figure: ``--out/gradcam_brats18.png``.

    python benchmarks/bench_diagnoser_brats18.py --run RUN_DIR [--data ../shared/data/brats18] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


COMPARTMENTS = {"enhancing": ("enhancing_log_ml", (3,)), "core": ("core_log_ml", (1, 3)),
                "FLAIR abnormality": ("flair_abnormal_log_ml", (1, 2, 3))}
"""Lesion measurement → the manual labels (BraTS 2024: 1 NETC, 2 SNFH, 3 ET) it estimates."""


def measured_against_manual(case, seg_path: str, config) -> tuple[dict[str, float], dict[str, float]]:
    """(measured, manual) volumes in ml per compartment, the manual ones counted inside the same lesion crop
    (the crop is 64 mm wide: a bigger abnormality is cut off in both)."""
    from vbiopsy.data.nifti import load_volume
    from vbiopsy.train.diagnosis_crop import cut_crop

    crop = config.data.lesion_crop
    labels = load_volume(seg_path, dtype=np.int16, allow_empty=True).array
    spacing = np.linalg.norm(case.affine[:3, :3], axis=0)
    centre = case.record["crop_centres"][config.model.prior]
    voxel_ml = crop.spacing_mm ** 3 / 1000.0
    measured, manual = {}, {}
    for name, (key, values) in COMPARTMENTS.items():
        measured[name] = round(float(np.expm1(case.measurements[key])), 2)
        inside = cut_crop(np.isin(labels, values).astype(np.float32), centre, spacing, crop.shape, crop.spacing_mm)
        manual[name] = round(float((inside >= 0.5).sum() * voxel_ml), 2)
    return measured, manual


def print_measurement_agreement(rows: list[dict]) -> None:
    """Spearman ρ and median measured / manual ratio per compartment over the cases."""
    from scipy.stats import spearmanr

    rows = [r for r in rows if "measured_ml" in r]
    if len(rows) < 3:
        return
    print("lesion measurements vs the manual segmentation in the same crop (Spearman rho; median measured / manual):")
    for name in COMPARTMENTS:
        measured = np.array([r["measured_ml"][name] for r in rows])
        manual = np.array([r["manual_ml"][name] for r in rows])
        rho = spearmanr(measured, manual).statistic
        ratio = np.median(measured / np.maximum(manual, 1e-3))
        print(f"    {name}: rho {rho:.2f}, ratio {ratio:.2f} (manual median {np.median(manual):.1f} ml)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a finished diagnosis run (phantom-trained)")
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/brats18")
    parser.add_argument("--out", type=Path, default=Path("bench-diagnoser-brats18"))
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    if not args.data.is_dir():
        print(f"skipped: no BraTS'18 data at {args.data}")
        return 0
    import torch
    from scipy import ndimage

    from vbiopsy.commands import preprocess_cohort
    from vbiopsy.data.layouts import read_cohort
    from vbiopsy.data.nifti import load_volume
    from vbiopsy.explain import mass_inside
    from vbiopsy.preprocess.config import PreprocessConfig
    from vbiopsy.report.figures import saliency_panels
    from vbiopsy.train.diagnosis_config import load_diagnosis_config
    from vbiopsy.train.diagnosis_predict import diagnose_case

    config = load_diagnosis_config(args.run / "config.yaml")

    torch.set_num_threads(1)
    started = time.perf_counter()
    processed = args.out / "preprocessed"
    preprocess_cohort(args.data, processed, PreprocessConfig.skull_stripped(), jobs=args.jobs)
    print(f"MRI-Processor (skull-stripped preset) on {args.data}: {time.perf_counter() - started:.0f} s")
    manifest = read_cohort(processed / "manifest.csv")
    rows, panels = [], []
    started = time.perf_counter()
    for sid in manifest.subjects:
        row = manifest.row(sid)
        others = {m: row[m] for m in ("t1", "t2", "flair") if isinstance(row.get(m), str) and row[m]}
        case = diagnose_case(row["t1c"], args.run, images=others, subject_id=sid)  # the run takes what it needs
        seg = load_volume(row["seg"], dtype=np.int16, allow_empty=True).array > 0
        image = load_volume(row["t1c"]).array
        spacing = np.linalg.norm(case.affine[:3, :3], axis=0)
        peak = np.unravel_index(int(np.argmax(case.gradcam)), case.gradcam.shape)
        near = ndimage.distance_transform_edt(~seg, sampling=spacing) <= 5.0
        prior = case.localisation.refined_mask
        dice = 2 * float((prior & seg).sum()) / max(float(prior.sum() + seg.sum()), 1.0)
        rows.append({"subject_id": sid, "predicted": case.predicted, "p_glioma": round(case.probabilities["glioma"], 3),
                     "peak_in_tumour": bool(seg[peak]), "peak_within_5mm": bool(near[peak]),
                     "cam_mass_in_tumour": round(mass_inside(case.gradcam, seg, dilate_vox=0.0), 3), "prior_dice": round(dice, 3),
                     "warnings": case.record.get("warnings", [])})
        if case.measurements:
            rows[-1]["measured_ml"], rows[-1]["manual_ml"] = measured_against_manual(case, row["seg"], config)
        panels.append((f"{sid.replace('Brats18_', '')}\n{case.predicted} {case.probabilities[case.predicted]:.2f}",
                       image, case.gradcam, seg))
        print(json.dumps(rows[-1]))
    seconds = time.perf_counter() - started
    figure = saliency_panels(panels, args.out / "gradcam_brats18.png",
                             title="Phantom-trained Adaptive-Diagnoser on BraTS'18: Grad-CAM, manual tumour outlined")
    n = len(rows)
    inside = sum(r["peak_in_tumour"] for r in rows)
    print(f"\n{n} cases, localise + diagnose + Grad-CAM {seconds:.0f} s ({seconds / max(n, 1):.1f} s/case)")
    print(f"Grad-CAM peak inside the manual tumour mask: {inside}/{n} (within 5 mm: "
          f"{sum(r['peak_within_5mm'] for r in rows)}/{n}); goal: most cases "
          f"({'met' if inside > n / 2 else 'NOT met'})")
    print(f"predicted glioma: {sum(r['predicted'] == 'glioma' for r in rows)}/{n}; median Grad-CAM mass in tumour "
          f"{np.median([r['cam_mass_in_tumour'] for r in rows]):.2f}; median refined-prior Dice "
          f"{np.median([r['prior_dice'] for r in rows]):.2f}")
    print_measurement_agreement(rows)
    (args.out / "gradcam_brats18.json").write_text(json.dumps(rows, indent=1) + "\n")
    print(f"figure: {figure}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
