"""Run a per-patient processing function over a cohort: resumable, parallel, atomic.

The runner knows nothing about what the processing does (the MRI-Processor pipeline is one
such function); it owns what a week-long cohort run needs:

* a **content-hash cache**: a patient's key hashes the bytes of its input files, the settings
  (config, processor name, toolkit version); a re-run skips patients whose ``done.json`` carries
  the same key and whose outputs all exist;
* **atomic outputs**: every file is written under a temporary name and renamed, and ``done.json``
  is written last, so a killed run leaves at worst an unfinished patient that the next run redoes;
* a per-patient ``log.txt`` of steps and timings and ``record.json`` of what each step did;
* an output **manifest** (``manifest.csv``) in the toolkit's conventions that the training
  commands read directly, plus ``run_summary.json``.

Output layout: ``OUT/<subject>/<subject>_<modality>.nii.gz``, ``_brain_mask``, ``_seg``,
``record.json``, ``log.txt``, ``done.json``; ``OUT/manifest.csv``; ``OUT/run_summary.json``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from vbiopsy import __version__
from vbiopsy.atomic import ensure_writable_dir, write_text_atomic
from vbiopsy.data.manifest import Manifest, build_manifest
from vbiopsy.data.nifti import save_volume
from vbiopsy.errors import InputError, VbiopsyError
from vbiopsy.parallel import run_parallel

DONE = "done.json"
RUN_SUMMARY = "run_summary.json"
Status = Literal["done", "cached", "failed"]


class SubjectOutput(Protocol):
    """What a processing function returns for one patient (all arrays on one grid, RAS)."""

    images: Mapping[str, np.ndarray]
    brain_mask: np.ndarray | None
    seg: np.ndarray | None
    affine: np.ndarray
    record: dict[str, Any]


ProcessFn = Callable[[dict[str, Any], tuple[str, ...], Callable[[str], None]], SubjectOutput]
"""``process(row, modalities, log) -> SubjectOutput``; must be picklable for ``jobs > 1``."""


@dataclass(frozen=True)
class SubjectResult:
    """How one patient went: ``done`` (computed now), ``cached`` (skipped) or ``failed``."""

    subject_id: str
    status: Status
    key: str
    files: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    message: str | None = None


@dataclass(frozen=True)
class CohortRun:
    """The outcome of :func:`run_cohort`: per-patient results and the files describing the run."""

    results: list[SubjectResult]
    manifest: Path | None
    summary: Path

    @property
    def failed(self) -> list[SubjectResult]:
        return [r for r in self.results if r.status == "failed"]


def file_digest(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def subject_key(row: Mapping[str, Any], inputs: tuple[str, ...], settings: Mapping[str, Any]) -> str:
    """Cache key of one patient: the input files' contents and the processing settings."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for column in sorted(inputs):
        path = row.get(column)
        if path is not None and Path(path).is_file():
            digest.update(f"{column}:{file_digest(path)}".encode())
        else:
            digest.update(f"{column}:missing:{path}".encode())
    return digest.hexdigest()


def _cached(folder: Path, key: str) -> SubjectResult | None:
    done = folder / DONE
    if not done.is_file():
        return None
    try:
        info = json.loads(done.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    files = info.get("files", {})
    if info.get("key") != key or not all((folder / name).is_file() for name in files.values()):
        return None
    return SubjectResult(info["subject_id"], "cached", key, files, float(info.get("seconds", 0.0)))


def _clear(folder: Path) -> None:
    """Remove what an earlier, unfinished or outdated run of this patient left behind."""
    for path in folder.iterdir():
        if path.is_file():
            path.unlink()


def _check_finite(output: SubjectOutput) -> None:
    """Refuse to write NaN/Inf images: a processing step failed silently."""
    for name, array in output.images.items():
        bad = int(np.count_nonzero(~np.isfinite(array)))
        if bad:
            raise VbiopsyError(f"processing produced {bad} non-finite voxels in {name}")


def run_subject(row: dict[str, Any], modalities: tuple[str, ...], out: Path, settings: dict[str, Any],
                process: ProcessFn) -> SubjectResult:
    """Process one patient unless its cached outputs are current; never leaves partial outputs."""
    sid = str(row["subject_id"])
    folder = out / sid
    inputs = tuple(c for c in (*modalities, "seg") if row.get(c) is not None)
    key = subject_key(row, inputs, settings)
    folder.mkdir(parents=True, exist_ok=True)
    hit = _cached(folder, key)
    if hit is not None:
        return hit
    _clear(folder)
    lines: list[str] = []
    start = time.perf_counter()

    def log(message: str) -> None:
        lines.append(f"{time.perf_counter() - start:8.2f} s  {message}")

    try:
        output = process(row, modalities, log)
        _check_finite(output)
    except VbiopsyError as err:
        log(f"failed: {err}")
        write_text_atomic(folder / "log.txt", "\n".join(lines) + "\n")
        return SubjectResult(sid, "failed", key, {}, time.perf_counter() - start, str(err))
    files: dict[str, str] = {}
    for name, array in output.images.items():
        files[name] = save_volume(array.astype(np.float32, copy=False), output.affine, folder / f"{sid}_{name}.nii.gz").name
    if output.brain_mask is not None:
        files["brain_mask"] = save_volume(output.brain_mask.astype(np.uint8), output.affine,
                                          folder / f"{sid}_brain_mask.nii.gz").name
    if output.seg is not None:
        files["seg"] = save_volume(output.seg.astype(np.uint8), output.affine, folder / f"{sid}_seg.nii.gz").name
    seconds = time.perf_counter() - start
    log(f"done: {len(files)} files")
    files["record"] = write_text_atomic(folder / "record.json", json.dumps(output.record, indent=1, default=str) + "\n").name
    files["log"] = write_text_atomic(folder / "log.txt", "\n".join(lines) + "\n").name
    done = {"subject_id": sid, "key": key, "files": files, "seconds": round(seconds, 3), "vbiopsy": __version__}
    write_text_atomic(folder / DONE, json.dumps(done, indent=1) + "\n")
    return SubjectResult(sid, "done", key, files, seconds)


def output_manifest(manifest: Manifest, results: list[SubjectResult], out: Path) -> Manifest | None:
    """The manifest of the outputs (BraTS 2024 labels), keeping each patient's clinical columns."""
    rows = []
    path_columns = {*manifest.modalities, "seg", "seg_convention"}
    for result in results:
        if result.status == "failed":
            continue
        source = manifest.row(result.subject_id)
        row = {k: v for k, v in source.items() if k not in path_columns}
        for name, filename in result.files.items():
            if name not in ("record", "log"):
                row[name] = str(out / result.subject_id / filename)
        if "seg" in result.files:
            row["seg_convention"] = "brats2024"
        rows.append(row)
    if not rows:
        return None
    built, problems = build_manifest(rows, out / "manifest.csv", base_dir=out)
    if problems:  # outputs we wrote ourselves must be valid; anything else is a bug
        raise RuntimeError("invalid output manifest: " + "; ".join(problems))
    return built


def run_cohort(manifest: Manifest, out: str | Path, process: ProcessFn, *, settings: dict[str, Any],
               jobs: int = 1, progress: Callable[[int, int], None] | None = None) -> CohortRun:
    """Process every patient of ``manifest`` into ``out`` (resuming where a previous run stopped).

    Args:
        manifest: the input cohort.
        out: output folder (created; must be writable).
        process: the per-patient function (see :data:`ProcessFn`).
        settings: JSON-able description of the processing; part of every cache key.
        jobs: worker processes.
        progress: ``progress(done, total)`` after each patient.
    """
    out = ensure_writable_dir(out).absolute()
    rows = [manifest.row(s) for s in manifest.subjects]
    for row in rows:
        for column in (*manifest.modalities, "seg"):
            path = row.get(column)
            if path is not None and Path(path).absolute().is_relative_to(out):
                raise InputError(out, f"output folder holds input files (e.g. {path}); choose another --out")
    task = functools.partial(run_subject, modalities=manifest.modalities, out=out, settings=settings, process=process)
    results: dict[int, SubjectResult] = {}
    if progress:
        progress(0, len(rows))
    for index, result in run_parallel(task, rows, jobs=jobs):
        results[index] = result
        if progress:
            progress(len(results), len(rows))
    ordered = [results[i] for i in range(len(rows))]
    built = output_manifest(manifest, ordered, out)
    manifest_path = built.to_csv(out / "manifest.csv") if built is not None else None
    counts = {s: sum(r.status == s for r in ordered) for s in ("done", "cached", "failed")}
    summary = {"vbiopsy": __version__, "settings": settings, "counts": counts,
               "subjects": [asdict(r) for r in ordered], "manifest": str(manifest_path) if manifest_path else None}
    summary_path = write_text_atomic(out / RUN_SUMMARY, json.dumps(summary, indent=1, default=str) + "\n")
    return CohortRun(ordered, manifest_path, summary_path)
