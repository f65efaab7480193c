"""Benchmark: Tumor-Localizer on the BraTS 2018 cases vs the ASLNet brightest-voxel ROI, same run.

Per case (T1c + FLAIR, full 240×240×155 at 1 mm — no downsampling: the localiser works on the
brain's bounding box plus 20 mm; only the mid-plane search runs on a 4 mm copy):

- wall time of :func:`vbiopsy.localize.localize` (and its stages) and the process's peak
  resident memory, each case in a fresh process (``--one``) so peaks do not carry over;
- recall (share of manual whole-tumour voxels inside), precision and volume ratio (prior
  volume / tumour volume) of the coarse prior mask and of the refined prior;
- the reference localiser of the ASLNet paper: the 0.01 % brightest FLAIR voxels → centroid →
  70 mm cube (``vbiopsy.preprocess.aslnet_roi.compute_roi``, whole-volume search as in the
  paper): share of tumour voxels inside the cube, its volume ratio, and whether the centroid
  falls in the tumour.

Targets (issue 3): refined recall ≥ 0.90 in every case with volume ratio ≤ 3.

    python benchmarks/bench_localize.py [COHORT]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "brats18"


def _rss_mb() -> float:
    """Peak resident set size of this process so far (MB, Linux ru_maxrss is in kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _score(mask: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    hit = float(np.count_nonzero(mask & truth))
    return {"recall": hit / truth.sum(), "precision": hit / max(np.count_nonzero(mask), 1),
            "ratio": float(np.count_nonzero(mask)) / truth.sum()}


def run_one(folder: Path) -> dict:
    """Measure one case (called in a fresh process)."""
    from vbiopsy.data.nifti import load_volume
    from vbiopsy.localize import localize
    from vbiopsy.preprocess.aslnet_roi import compute_roi

    baseline = _rss_mb()
    case = folder.name
    started = time.perf_counter()
    t1c = load_volume(folder / f"{case}_t1ce.nii.gz")
    flair = load_volume(folder / f"{case}_flair.nii.gz")
    truth = load_volume(folder / f"{case}_seg.nii.gz", dtype=np.uint8, allow_empty=True).array > 0
    load_s = time.perf_counter() - started
    brain = (t1c.array != 0) | (flair.array != 0)

    started = time.perf_counter()
    result = localize({"t1c": t1c.array, "flair": flair.array}, spacing_mm=t1c.grid.spacing, brain_mask=brain)
    localize_s = time.perf_counter() - started
    peak = _rss_mb()

    started = time.perf_counter()
    box = compute_roi(flair.array, flair.affine, side_mm=70.0, top_pct=0.01)
    roi_s = time.perf_counter() - started
    cube = np.zeros(truth.shape, dtype=bool)
    cube[box.source_slices] = True
    centre = tuple(round(c) for c in box.centre_vox)
    return {
        "case": case, "tumour_ml": float(truth.sum()) / 1000.0, "load_s": load_s, "localize_s": localize_s,
        "stages_s": result.record["timings_s"], "rss_baseline_mb": baseline, "rss_peak_mb": peak,
        "coarse": _score(result.coarse_mask, truth), "refined": _score(result.refined_mask, truth),
        "aslnet": {**_score(cube, truth), "centroid_in_tumour": bool(truth[centre]), "seconds": roi_s},
        "fallback": result.record["fallback"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cohort", nargs="?", type=Path, default=DEFAULT)
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one)))
        return 0
    cases = sorted(p for p in args.cohort.iterdir() if p.is_dir()) if args.cohort.is_dir() else []
    if not cases:
        print(f"no cases under {args.cohort}", file=sys.stderr)
        return 1
    rows = []
    print(f"{'case':22s} {'tumour':>7s} {'time':>6s} {'peak':>7s} | {'coarse rec/prec/ratio':>22s} | "
          f"{'refined rec/prec/ratio':>22s} | {'ASLNet cube rec/prec/ratio':>26s} centroid")
    for folder in cases:
        out = subprocess.run([sys.executable, __file__, "--one", str(folder)], capture_output=True, text=True,
                             check=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        fmt = lambda s: f"{s['recall']:.3f}/{s['precision']:.3f}/{s['ratio']:.2f}"  # noqa: E731
        print(f"{row['case']:22s} {row['tumour_ml']:6.1f}ml {row['localize_s']:5.1f}s {row['rss_peak_mb']:6.0f}MB | "
              f"{fmt(row['coarse']):>22s} | {fmt(row['refined']):>22s} | {fmt(row['aslnet']):>26s} "
              f"{'inside' if row['aslnet']['centroid_in_tumour'] else 'OUTSIDE'}", flush=True)
    refined = [r["refined"] for r in rows]
    ok = all(s["recall"] >= 0.90 and s["ratio"] <= 3.0 for s in refined)
    print()
    print(f"localize: mean {np.mean([r['localize_s'] for r in rows]):.1f} s/case "
          f"(max {max(r['localize_s'] for r in rows):.1f} s), I/O {np.mean([r['load_s'] for r in rows]):.1f} s/case; "
          f"peak RSS max {max(r['rss_peak_mb'] for r in rows):.0f} MB "
          f"(after imports {np.mean([r['rss_baseline_mb'] for r in rows]):.0f} MB)")
    for name in ("coarse", "refined", "aslnet"):
        scores = [r[name] for r in rows]
        recall, precision, ratio = ([s[k] for s in scores] for k in ("recall", "precision", "ratio"))
        print(f"{name:8s}: recall min {min(recall):.3f} mean {np.mean(recall):.3f}; precision mean "
              f"{np.mean(precision):.3f}; volume ratio max {max(ratio):.2f} mean {np.mean(ratio):.2f}")
    print(f"ASLNet centroid inside the tumour: {sum(r['aslnet']['centroid_in_tumour'] for r in rows)}/{len(rows)}")
    print(f"target (refined recall >= 0.90 and ratio <= 3 in every case): {'MET' if ok else 'NOT MET'}")
    return 0 if ok else 2


if __name__ == "__main__":
    raise SystemExit(main())
