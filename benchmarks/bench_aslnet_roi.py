"""Benchmark: ASLNet ROI + feature channels per scan vs the reference code's approach, same run.

The reference approach (re-implemented here from ../shared/reference/aslnet-reference-code-notes.md
§2.1–2.3, not copied) reads the file once for the box and again for the channels, computes the
four channels over the whole 240×240×155 volume, then crops [floor(c−h), ceil(c+h)) and trims or
zero-pads each axis to 70. Ours reads once (canonical RAS) and computes the local statistics on
the cube plus the 7-voxel window margin. It also prints, per BraTS'18 case and for FLAIR and T1c,
whether each ROI rule contains the manual whole-tumour centroid (the paper's brightest voxels,
restricted to the brain, centred on the Tumor-Localizer's refined prior from T1c+FLAIR, or on the
manual centroid itself as the upper bound), and checks that our channels
equal the whole-volume formulas cropped to our box.

    python benchmarks/bench_aslnet_roi.py [COHORT] [--repeats 3]

COHORT defaults to ../shared/data/brats18 (<case>/<case>_{flair,t1ce,seg}.nii.gz, 240×240×155).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from vbiopsy.data.nifti import load_volume
from vbiopsy.localize import localize
from vbiopsy.preprocess.aslnet_channels import CHANNELS, aslnet_inputs
from vbiopsy.preprocess.aslnet_roi import background_mask, compute_roi, crop

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "brats18"
SIDE_MM, TOP_PCT, WINDOW, TARGET = 70.0, 0.01, 15, 70


def reference_box(path: Path) -> tuple[list[int], list[int]]:
    """First read: 99.99th percentile over all voxels → centroid → [floor(c−h), ceil(c+h)) clipped."""
    img = nib.load(str(path))
    data = np.asanyarray(img.dataobj).astype(np.float32)
    zooms = img.header.get_zooms()[:3]
    bright = np.argwhere(data >= np.percentile(data, 100 - TOP_PCT))
    centre = bright.mean(0) if len(bright) else np.array(np.unravel_index(np.argmax(data), data.shape), float)
    lo, hi = [], []
    for c, z, n in zip(centre, zooms, data.shape):
        a, b = max(0, math.floor(c - SIDE_MM / 2 / z)), min(n, math.ceil(c + SIDE_MM / 2 / z))
        if b - a < 2:
            a, b = max(0, round(c) - 1), min(n, round(c) + 1)
        lo.append(a)
        hi.append(b)
    return lo, hi


def reference_channels(data: np.ndarray) -> np.ndarray:
    """Whole-volume channels (X, Y, Z, 4) as the reference code computes them (kept in float32)."""
    mask = background_mask(data)
    b = data[mask]
    f32 = np.float32
    out = np.zeros((*data.shape, 4), np.float32)
    raw = np.where(mask, np.maximum(data, f32(np.percentile(b, 1))), f32(0))
    med = f32(np.median(b))
    mad = np.median(np.abs(b - med))
    scale = f32(1.4826 * mad + 1e-6 if mad > 0 else b.std() + 1e-6)
    m = mask.astype(np.float32)
    box = [ndimage.uniform_filter(x, WINDOW, mode="nearest") * f32(WINDOW**3) for x in (raw * m, raw * raw * m, m)]
    mu = box[0] / (box[2] + f32(1e-6))
    sd = np.sqrt(np.maximum(box[1] / (box[2] + f32(1e-6)) - mu * mu, f32(0)) + f32(1e-6))
    out[..., 0] = raw
    out[..., 1] = np.where(mask, (raw - med) / scale, f32(0))
    out[..., 2] = np.where(mask, (raw - mu) / sd, f32(0))
    out[..., 3] = np.where(mask, np.log1p(np.maximum(raw, f32(0))), f32(0))
    return out


def reference_fit(lo: list[int], hi: list[int]) -> tuple[tuple[slice, ...], tuple[slice, ...], list[int]]:
    """Trim (window at (len−70)//2) or zero-pad (offset (70−len)//2) each axis of the crop to 70.

    Returns the source slices of the crop, the destination slices in the 70³ cube, and the
    source index of cube voxel 0 per axis.
    """
    src, dst, starts = [], [], []
    for a, b in zip(lo, hi):
        length = b - a
        if length >= TARGET:
            off = (length - TARGET) // 2
            src.append(slice(a + off, a + off + TARGET))
            dst.append(slice(0, TARGET))
            starts.append(a + off)
        else:
            off = (TARGET - length) // 2
            src.append(slice(a, b))
            dst.append(slice(off, off + length))
            starts.append(a - off)
    return tuple(src), tuple(dst), starts


def reference_pipeline(path: Path) -> np.ndarray:
    """The reference approach end to end → (70, 70, 70, 4) cube."""
    lo, hi = reference_box(path)
    feats = reference_channels(np.asanyarray(nib.load(str(path)).dataobj).astype(np.float32))  # second read
    src, dst, _ = reference_fit(lo, hi)
    out = np.zeros((TARGET, TARGET, TARGET, 4), np.float32)
    out[dst] = feats[src]
    return out


def ours(path: Path) -> np.ndarray:
    return aslnet_inputs(load_volume(path), out_shape=(TARGET,) * 3, where=path)[0]


def time_per_scan(fn, paths: list[Path], repeats: int) -> float:
    runs = []
    for _ in range(repeats):
        for path in paths:
            start = time.perf_counter()
            fn(path)
            runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def roi_table(cases: list[Path]) -> None:
    """Per case and modality: does each ROI rule contain the manual whole-tumour centroid?"""
    rules = ["ref-code", "paper", "brain", "brain-5mm", "brain-5mm/1%", "localiser", "seg-centre"]
    totals = {(m, r): 0 for m in ("flair", "t1ce") for r in rules}
    worst_diff = np.zeros(4)
    print(f"\nROI contains the manual tumour centroid (1 = yes); rules: {', '.join(rules)}")
    print(f"{'case':24s} {'modality':8s} " + " ".join(f"{r:>12s}" for r in rules))
    for case in cases:
        seg_path = case / f"{case.name}_seg.nii.gz"
        seg_file = np.asanyarray(nib.load(str(seg_path)).dataobj) > 0
        seg = load_volume(seg_path, dtype=np.int16).array > 0
        t1c, flair = (load_volume(case / f"{case.name}_{m}.nii.gz") for m in ("t1ce", "flair"))
        prior = localize({"t1c": t1c.array, "flair": flair.array}, spacing_mm=t1c.grid.spacing,
                         brain_mask=(t1c.array != 0) | (flair.array != 0))
        prior_mm = prior.centre_mm(t1c.affine)
        for modality in ("flair", "t1ce"):
            path = case / f"{case.name}_{modality}.nii.gz"
            vol = load_volume(path)
            tumour_vox = np.argwhere(seg).mean(0)
            tumour_mm = vol.affine[:3, :3] @ tumour_vox + vol.affine[:3, 3]
            brain = vol.array != 0
            eroded = ndimage.binary_erosion(brain, iterations=5)
            boxes = {
                "paper": compute_roi(vol.array, vol.affine),
                "brain": compute_roi(vol.array, vol.affine, search_mask=brain),
                "brain-5mm": compute_roi(vol.array, vol.affine, search_mask=eroded),
                "brain-5mm/1%": compute_roi(vol.array, vol.affine, search_mask=eroded, top_pct=1.0),
                "localiser": compute_roi(vol.array, vol.affine, centre_mm=prior_mm),
                "seg-centre": compute_roi(vol.array, vol.affine, centre_mm=tumour_mm),
            }
            hit = {r: b.contains_mm(tumour_mm) for r, b in boxes.items()}
            starts = reference_fit(*reference_box(path))[2]
            file_centroid = np.argwhere(seg_file).mean(0)  # the reference works in file voxel order
            hit["ref-code"] = all(a - 0.5 <= c < a + TARGET - 0.5 for c, a in zip(file_centroid, starts))
            for r in rules:
                totals[(modality, r)] += hit[r]
            print(f"{case.name:24s} {modality:8s} " + " ".join(f"{int(hit[r]):>12d}" for r in rules))
            # our cube equals the reference's whole-volume channels cropped to our box
            chans, box = aslnet_inputs(vol)
            whole = np.moveaxis(reference_channels(vol.array), -1, 0)
            worst = np.abs(chans - crop(whole, box)).reshape(4, -1).max(1)
            worst_diff = np.maximum(worst_diff, worst)
    for modality in ("flair", "t1ce"):
        print(f"{'TOTAL /' + str(len(cases)):24s} {modality:8s} "
              + " ".join(f"{totals[(modality, r)]:>12d}" for r in rules))
    print("max |our cube − reference whole-volume channels (float32) cropped to our box| over all scans: "
          + ", ".join(f"{name} {d:.1e}" for name, d in zip(CHANNELS, worst_diff)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cohort", nargs="?", type=Path, default=DEFAULT)
    parser.add_argument("--repeats", type=int, default=3, help="passes over the FLAIR scans for timing")
    args = parser.parse_args()
    if not args.cohort.exists():
        print(f"cohort {args.cohort} not found; pass a BraTS'18-style folder", file=sys.stderr)
        return 2
    cases = sorted(p for p in args.cohort.iterdir() if p.is_dir())
    flairs = [c / f"{c.name}_flair.nii.gz" for c in cases]
    shape = nib.load(str(flairs[0])).shape
    volumes = [load_volume(p) for p in flairs]
    floor = time_per_scan(lambda p: np.asanyarray(nib.load(str(p)).dataobj), flairs, args.repeats)
    reference = time_per_scan(reference_pipeline, flairs, args.repeats)
    ours_full = time_per_scan(ours, flairs, args.repeats)
    by_path = dict(zip(flairs, volumes))
    ours_compute = time_per_scan(lambda p: aslnet_inputs(by_path[p]), flairs, args.repeats)
    print(f"{len(cases)} FLAIR scans of shape {shape}, median of {args.repeats} passes, seconds per scan")
    print(f"I/O floor (one nibabel read):                         {floor:.3f}")
    print(f"reference approach (2 reads, whole-volume channels): {reference:.3f}")
    print(f"ours (1 read + RAS, ROI + channels on cube + margin):  {ours_full:.3f}  "
          f"({reference / ours_full:.1f}x faster; goal <= 1 s)")
    print(f"ours, compute only (volume in memory):                {ours_compute:.3f}")
    roi_table(cases)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
