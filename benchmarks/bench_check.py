"""Benchmark: `cohort check` on real BraTS'18 cases against the I/O floor measured in the same run.

The reference is what any checker must pay: nibabel reading every voxel of every file once. The
check adds reorientation to RAS, NaN/empty/grid/label checks and label conversion on top.

    python benchmarks/bench_check.py [COHORT] [--jobs 2]

COHORT defaults to ../shared/data/brats18 (10 cases, 5 files each, 240×240×155).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from vbiopsy.data.check import check_cohort
from vbiopsy.data.layouts import read_cohort

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "brats18"


def io_floor(paths: list[str]) -> float:
    start = time.perf_counter()
    for path in paths:
        np.asanyarray(nib.load(path).dataobj).sum()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cohort", nargs="?", type=Path, default=DEFAULT)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    if not args.cohort.exists():
        print(f"cohort {args.cohort} not found; pass a cohort folder", file=sys.stderr)
        return 2
    manifest = read_cohort(args.cohort)
    paths = [p for s in manifest.subjects for c in (*manifest.modalities, "seg")
             if (p := manifest.row(s).get(c)) is not None]
    floor = io_floor(paths)
    start = time.perf_counter()
    serial = check_cohort(manifest, jobs=1)
    t_serial = time.perf_counter() - start
    start = time.perf_counter()
    check_cohort(manifest, jobs=args.jobs)
    t_parallel = time.perf_counter() - start
    peak_mb = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
    n = len(manifest)
    print(f"cohort: {args.cohort} ({n} subjects, {len(paths)} files, problems: {len(serial.problems)})")
    print(f"reference, nibabel read of every voxel once: {floor:.2f} s ({floor / n:.3f} s/subject)")
    print(f"cohort check, 1 process:  {t_serial:.2f} s ({t_serial / n:.3f} s/subject, {t_serial / floor:.2f}x the I/O floor)")
    print(f"cohort check, {args.jobs} processes: {t_parallel:.2f} s ({t_parallel / n:.3f} s/subject, {t_parallel / floor:.2f}x the I/O floor)")
    print(f"peak memory (largest process): {peak_mb:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
