"""Benchmark: MRI-Processor time and peak memory per patient on 2 cores, against references
measured in the same run.

Cases: a BraTS'18 case (4 modalities, 240×240×155, 1 mm, skull-stripped) through the default raw
pipeline (N4, co-registration, MNI affine registration, template skull strip, z-score at 1 mm)
and through the skull-stripped preset, and the TCGA-FG-6692 native scans (raw: skull on,
0.9 × 0.9 × 5.5 mm, modalities on different grids) through the default pipeline. References: the
nibabel floor (read the 4 files and write 4 outputs + mask) and SimpleITK's N4 with its defaults
on the full-resolution T1c alone (what a pipeline without the shrink pays for one of its four
bias corrections; stopped after REFERENCE_LIMIT_S).
Each measurement runs in a fresh process so its peak RSS is its own. Goal: ≤ 30 s and ≤ 2 GB.

Throughput: ``vbiopsy preprocess`` (skull-stripped preset) over the first ``--cases`` BraTS'18
cases with ``--jobs 1`` and ``--jobs 2``, each in a fresh output folder: patients per minute and
the peak RSS of the largest process (parent or worker).

    python benchmarks/bench_preprocess.py [--threads 2] [--cases 4] [--skip-per-case]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
BRATS_CASE = DATA / "brats18" / "Brats18_CBICA_ABM_1"
TCGA = DATA / "tcga-fg-6692" / "native"
REFERENCE_LIMIT_S = 300


def case_images(name: str) -> dict[str, str]:
    if name.startswith("brats"):
        stem = BRATS_CASE.name
        files = {"t1": "t1", "t1c": "t1ce", "t2": "t2", "flair": "flair"}
        return {m: str(BRATS_CASE / f"{stem}_{f}.nii.gz") for m, f in files.items()}
    return {m: str(TCGA / f"TCGA-FG-6692_native_{m}.nii.gz") for m in ("t1", "t1c", "t2", "flair")}


def run_one(kind: str, case: str, threads: int) -> dict[str, float]:
    """One measurement in this (fresh) process; returns seconds and peak RSS in MB."""
    import numpy as np

    images = case_images(case)
    start = time.perf_counter()
    if kind in ("pipeline", "preset"):
        from vbiopsy.preprocess import PreprocessConfig, preprocess_subject

        config = PreprocessConfig(threads=threads) if kind == "pipeline" else \
            PreprocessConfig.skull_stripped(threads=threads)
        result = preprocess_subject(images, config=config)
        steps: dict[str, float] = {}
        for step in result.record["steps"]:
            steps[step["name"]] = steps.get(step["name"], 0.0) + step["seconds"]
        extra = {"steps": steps}
    elif kind == "io_floor":
        from vbiopsy.data.nifti import load_volume, save_volume

        with tempfile.TemporaryDirectory() as tmp:
            arrays = {m: load_volume(p) for m, p in images.items()}
            for m, v in arrays.items():
                save_volume(v.array, v.affine, Path(tmp) / f"{m}.nii.gz")
            save_volume((v.array > 0).astype(np.uint8), v.affine, Path(tmp) / "mask.nii.gz")
        extra = {}
    elif kind == "sitk_n4_full_t1c":
        import SimpleITK as sitk

        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
        image = sitk.Cast(sitk.ReadImage(images["t1c"]), sitk.sitkFloat32)
        sitk.N4BiasFieldCorrection(image + 1.0, sitk.OtsuThreshold(image, 0, 1, 200))
        extra = {}
    else:
        raise ValueError(kind)
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return {"seconds": round(seconds, 2), "peak_mb": round(peak_mb, 0), **extra}


def measure(kind: str, case: str, threads: int) -> dict[str, float] | None:
    """Run one measurement in a fresh process; ``None`` if it ran past REFERENCE_LIMIT_S."""
    try:
        done = subprocess.run([sys.executable, __file__, "--one", kind, case, "--threads", str(threads)],
                              capture_output=True, text=True, check=True, timeout=REFERENCE_LIMIT_S)
    except subprocess.TimeoutExpired:
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def throughput(n_cases: int) -> None:
    """Time ``vbiopsy preprocess --preset skull-stripped`` on ``n_cases`` cases, ``--jobs`` 1 then 2."""
    cases = sorted(p for p in BRATS_CASE.parent.iterdir() if p.is_dir())[:n_cases]
    cli = Path(sys.executable).parent / "vbiopsy"
    print(f"\nthroughput: vbiopsy preprocess --preset skull-stripped, {len(cases)} BraTS'18 cases "
          f"(4 × 240×240×155 each), fresh output folder per run")
    print(f"{'jobs':>4} {'seconds':>8} {'patients/min':>13} {'speed-up':>9} {'peak MB (largest process)':>26}")
    base = None
    with tempfile.TemporaryDirectory() as tmp:
        cohort = Path(tmp) / "cohort"
        cohort.mkdir()
        for case in cases:
            (cohort / case.name).symlink_to(case)
        for jobs in (1, 2):
            out = Path(tmp) / f"out{jobs}"
            before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            start = time.perf_counter()
            subprocess.run([str(cli), "preprocess", str(cohort), "--out", str(out), "--preset", "skull-stripped",
                            "--layout", "brats2021", "--jobs", str(jobs)], check=True, capture_output=True)
            seconds = time.perf_counter() - start
            peak = max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024.0
            base = base or seconds
            print(f"{jobs:4d} {seconds:8.1f} {60 * len(cases) / seconds:13.2f} {base / seconds:8.2f}x {peak:26.0f}")
            shutil.rmtree(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cases", type=int, default=4, help="cases for the --jobs 1 vs 2 throughput run")
    parser.add_argument("--skip-per-case", action="store_true", help="only the throughput run")
    parser.add_argument("--one", nargs=2, metavar=("KIND", "CASE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], args.one[1], args.threads)))
        return 0
    if not BRATS_CASE.exists() or not TCGA.exists():
        print(f"real data not found under {DATA}", file=sys.stderr)
        return 2
    if args.skip_per_case:
        throughput(args.cases)
        return 0
    rows = [("brats18 240×240×155", "brats", k) for k in ("io_floor", "sitk_n4_full_t1c", "preset", "pipeline")]
    rows += [("tcga native 5.5 mm", "tcga", k) for k in ("io_floor", "sitk_n4_full_t1c", "pipeline")]
    print(f"MRI-Processor, 4 modalities per patient, {args.threads} threads, one fresh process per row; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (other work on the machine slows every row)")
    print(f"{'case':22} {'what':16} {'seconds':>8} {'peak MB':>8}  steps (s)")
    for label, case, kind in rows:
        out = measure(kind, case, args.threads)
        if out is None:
            print(f"{label:22} {kind:16} {'>' + str(REFERENCE_LIMIT_S):>8} {'-':>8}  stopped")
            continue
        steps = " ".join(f"{k}={v:.1f}" for k, v in out.get("steps", {}).items())
        print(f"{label:22} {kind:16} {out['seconds']:8.2f} {out['peak_mb']:8.0f}  {steps}")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    print("goal: pipeline ≤ 30 s and ≤ 2048 MB per patient without SyN")
    throughput(args.cases)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
