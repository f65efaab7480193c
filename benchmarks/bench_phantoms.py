"""Benchmark: phantom cohort generation against the goal and the I/O floor measured in the same run.

The goal (DESIGN.md) is 100 patients at 2 mm, all five modalities, 2 worker processes, in at most
60 s wall time and 2 GB peak memory. The reference is what any generator must pay: nibabel
writing the same number of same-shaped, same-dtype volumes (the first generated patient's, so
they compress alike) as gzipped NIfTI, in one process.

    python benchmarks/bench_phantoms.py [--patients 100] [--spacing 2] [--jobs 2] [--keep DIR]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib

from vbiopsy.data.phantoms import PhantomConfig, generate_cohort, generate_patient

GOAL_SECONDS = 60.0
GOAL_MEMORY_MB = 2048.0


def io_floor(config: PhantomConfig, folder: Path) -> float:
    """Seconds for nibabel to write ``n_patients`` × (modalities + seg) volumes like the cohort's."""
    patient = generate_patient(config, 0)
    volumes = [*patient.images.values(), patient.seg]
    start = time.perf_counter()
    for i in range(config.n_patients):
        for j, volume in enumerate(volumes):
            nib.save(nib.Nifti1Image(volume, patient.affine), str(folder / f"floor_{i}_{j}.nii.gz"))
    return time.perf_counter() - start


def peak_memory_mb(jobs: int) -> tuple[float, float]:
    """(parent peak, parent peak + jobs × largest child peak) in MB, from ``getrusage`` (Linux: KiB)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return own, own + (jobs * child if jobs > 1 else 0.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=100)
    parser.add_argument("--spacing", type=float, default=2.0)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--keep", type=Path, default=None, help="write the cohort here instead of a temp folder")
    args = parser.parse_args()
    config = PhantomConfig(n_patients=args.patients, spacing_mm=args.spacing)
    with tempfile.TemporaryDirectory(prefix="bench-phantoms-") as tmp:
        out = args.keep if args.keep is not None else Path(tmp) / "cohort"
        start = time.perf_counter()
        cohort = generate_cohort(config, out, jobs=args.jobs)
        wall = time.perf_counter() - start
        own_mb, total_mb = peak_memory_mb(args.jobs)
        floor_dir = Path(tmp) / "floor"
        floor_dir.mkdir()
        floor = io_floor(config, floor_dir)
    n = len(cohort.subject_ids)
    files = n * (len(config.modalities) + 1)
    print(f"cohort: {n} patients at {args.spacing:g} mm, {len(config.modalities)} modalities + seg, jobs {args.jobs}")
    print(f"generation: {wall:.1f} s wall ({wall / n:.3f} s/patient; {wall * args.jobs / n:.3f} s/patient/process)")
    print(f"reference, nibabel writing {files} such volumes in 1 process: {floor:.1f} s "
          f"({floor / n:.3f} s/patient); generation = {wall / floor:.2f}x that floor, "
          f"{wall * args.jobs / floor:.2f}x per process")
    print(f"peak memory: parent {own_mb:.0f} MB; parent + {args.jobs} x largest worker {total_mb:.0f} MB")
    time_ok = wall <= GOAL_SECONDS * n / 100
    memory_ok = total_mb <= GOAL_MEMORY_MB
    print(f"goal {GOAL_SECONDS:.0f} s per 100 patients: {'met' if time_ok else 'MISSED'}; "
          f"goal {GOAL_MEMORY_MB / 1024:.0f} GB: {'met' if memory_ok else 'MISSED'}")
    return 0 if time_ok and memory_ok else 1


if __name__ == "__main__":
    sys.exit(main())
