"""Benchmark: vbiopsy region_metrics vs MONAI DiceMetric + HausdorffDistanceMetric(percentile=95), real data.

Data: the five automatic segmentations of TCGA-FG-6692 against their fusion (``fusion_mav``),
240×240×155 at 1 mm, BraTS ≤2021 labels converted with ``to_brats2024``. vbiopsy is timed from the
two label maps to all six regions' Dice, HD95, sensitivity, specificity and volumes. MONAI is timed
on ready-made one-hot region tensors (1, 6, X, Y, Z) — the mask building is left out of its time —
for Dice and HD95 only. Both run single-threaded. Printed: median seconds per case of each, and
the largest absolute difference of Dice and of HD95 over the (case, region) pairs where MONAI is
finite (it is NaN/inf where a mask is empty, where vbiopsy applies the BraTS empty-mask policy).

    python benchmarks/bench_seg_metrics.py [--data ../shared/data/tcga-fg-6692/seg] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from monai.metrics import DiceMetric, HausdorffDistanceMetric

from vbiopsy.data.labels import REGIONS, to_brats2024
from vbiopsy.data.nifti import load_volume
from vbiopsy.evaluate.segmentation import region_masks, region_metrics

ALGORITHMS = ("hnfnetv1-20", "isen-20", "sanet0-20", "scan-20", "yixinmpl-20")
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "tcga-fg-6692" / "seg"


def load_labels(path: Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A BraTS 2021 segmentation as a BraTS 2024 label map and its voxel size (mm)."""
    volume = load_volume(path, dtype=np.int16, allow_empty=True)
    return to_brats2024(volume.array, "brats2021"), volume.grid.spacing


def one_hot_regions(labels: np.ndarray) -> torch.Tensor:
    """(1, R, X, Y, Z) float tensor of the region masks in :data:`REGIONS` order."""
    masks = region_masks(labels)
    return torch.from_numpy(np.stack([masks[name] for name in REGIONS]))[None].float()


def monai_scores(pred: torch.Tensor, ref: torch.Tensor, spacing: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """MONAI Dice and HD95 per region, each (R,)."""
    dice = DiceMetric(include_background=True, reduction="none")
    hd95 = HausdorffDistanceMetric(include_background=True, percentile=95, reduction="none")
    return dice(pred, ref)[0].numpy(), hd95(pred, ref, spacing=spacing)[0].numpy()


def timed(call: Callable[[], object], repeats: int) -> tuple[float, object]:
    """Median wall time over ``repeats`` calls (seconds) and the last result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = call()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not (args.data / "fusion_mav.nii.gz").is_file():
        raise SystemExit(f"error: {args.data}: fusion_mav.nii.gz not found (pass --data)")
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")  # MONAI warns about the empty RC masks
    ref, spacing = load_labels(args.data / "fusion_mav.nii.gz")
    ref_tensor = one_hot_regions(ref)
    ours_times, monai_times, dice_diffs, hd_diffs, nonfinite = [], [], [], [], 0
    print(f"{'case':<14}{'vbiopsy s':>11}{'MONAI s':>10}")
    for name in ALGORITHMS:
        pred, _ = load_labels(args.data / f"{name}.nii.gz")
        pred_tensor = one_hot_regions(pred)
        ours_s, ours = timed(lambda: region_metrics(pred, ref, spacing), args.repeats)
        monai_s, (dice, hd95) = timed(lambda: monai_scores(pred_tensor, ref_tensor, spacing), args.repeats)
        ours_times.append(ours_s)
        monai_times.append(monai_s)
        for i, region in enumerate(REGIONS):
            score = ours[region]  # type: ignore[index]
            if np.isfinite(dice[i]) and np.isfinite(hd95[i]):
                dice_diffs.append(abs(score.dice - float(dice[i])))
                hd_diffs.append(abs(score.hd95_mm - float(hd95[i])))
            else:
                nonfinite += 1
        print(f"{name:<14}{ours_s:>11.3f}{monai_s:>10.3f}")
    ours_median, monai_median = statistics.median(ours_times), statistics.median(monai_times)
    print(f"median per case: vbiopsy {ours_median:.3f} s, MONAI {monai_median:.3f} s "
          f"(MONAI/vbiopsy x{monai_median / ours_median:.1f})")
    print(f"max |Dice diff| {max(dice_diffs):.2e}, max |HD95 diff| {max(hd_diffs):.2e} mm over {len(hd_diffs)} "
          f"(case, region) pairs; {nonfinite} pairs where MONAI is NaN/inf (empty-mask policy)")


if __name__ == "__main__":
    main()
