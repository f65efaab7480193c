"""The cohort runner: content-hash cache, resume after a kill, atomic outputs, output manifest."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

from vbiopsy.data.check import check_cohort
from vbiopsy.data.layouts import read_cohort
from vbiopsy.data.manifest import Manifest
from vbiopsy.data.nifti import load_volume
from vbiopsy.errors import InputError
from vbiopsy.preprocess.runner import DONE, run_cohort

N_SUBJECTS = 5


@dataclass
class Output:
    images: dict[str, np.ndarray]
    brain_mask: np.ndarray | None
    seg: np.ndarray | None
    affine: np.ndarray
    record: dict[str, Any] = field(default_factory=dict)


def scale_process(row: dict[str, Any], modalities: tuple[str, ...], log) -> Output:
    """A real (tiny) processing: z-score each modality inside a threshold mask."""
    vols = {m: load_volume(row[m]) for m in modalities}
    first = next(iter(vols.values()))
    mask = (first.array > first.array.mean()).astype(np.uint8)
    images = {}
    for m, vol in vols.items():
        inside = vol.array[mask > 0]
        images[m] = np.where(mask > 0, (vol.array - inside.mean()) / inside.std(), 0).astype(np.float32)
        log(f"normalised {m}")
    if row["subject_id"] == "bad":
        raise InputError(row["t1c"], "cannot process this one")
    if row["subject_id"] == "nan":
        images["flair"][0, 0, 0] = np.nan
    return Output(images, mask, None, first.affine, {"steps": ["zscore"]})


def make_cohort(root: Path, n: int = N_SUBJECTS, bad: bool = False) -> Path:
    rng = np.random.default_rng(0)
    lines = ["subject_id,t1c,flair,age"]
    ids = [f"s{i}" for i in range(n)] + (["bad", "nan"] if bad else [])
    for sid in ids:
        for mod in ("t1c", "flair"):
            data = rng.random((10, 12, 8)).astype(np.float32) + 1
            nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0])), str(root / f"{sid}_{mod}.nii.gz"))
        lines.append(f"{sid},{sid}_t1c.nii.gz,{sid}_flair.nii.gz,50")
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return root / "manifest.csv"


@pytest.fixture
def cohort(tmp_path: Path) -> Manifest:
    (tmp_path / "in").mkdir()
    return Manifest.from_csv(make_cohort(tmp_path / "in"))


def test_outputs_manifest_and_cache(cohort: Manifest, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run = run_cohort(cohort, out, scale_process, settings={"p": 1})
    assert [r.status for r in run.results] == ["done"] * N_SUBJECTS
    produced = read_cohort(run.manifest)
    assert produced.subjects == cohort.subjects and produced.modalities == ("t1c", "flair")
    assert produced.column("age") == [50.0] * N_SUBJECTS  # clinical columns carried over
    assert check_cohort(produced).ok
    brain = load_volume(produced.row("s0")["brain_mask"], dtype=np.uint8).array
    t1c = load_volume(produced.row("s0")["t1c"]).array
    assert abs(float(t1c[brain > 0].mean())) < 1e-4
    assert "normalised t1c" in (out / "s0" / "log.txt").read_text()
    # a re-run with the same inputs and settings computes nothing
    again = run_cohort(cohort, out, scale_process, settings={"p": 1})
    assert [r.status for r in again.results] == ["cached"] * N_SUBJECTS
    # changed settings, or a changed input file, invalidate exactly what they touch
    changed = run_cohort(cohort, out, scale_process, settings={"p": 2})
    assert [r.status for r in changed.results] == ["done"] * N_SUBJECTS
    path = Path(cohort.row("s3")["flair"])
    changed_data = np.random.default_rng(9).random((10, 12, 8)).astype(np.float32) + 3
    nib.save(nib.Nifti1Image(changed_data, np.diag([2.0, 2.0, 2.0, 1.0])), str(path))
    last = run_cohort(cohort, out, scale_process, settings={"p": 2})
    assert [r.status for r in last.results] == ["cached", "cached", "cached", "done", "cached"]


def test_parallel_equals_serial(cohort: Manifest, tmp_path: Path) -> None:
    a = run_cohort(cohort, tmp_path / "a", scale_process, settings={}, jobs=1)
    b = run_cohort(cohort, tmp_path / "b", scale_process, settings={}, jobs=2)
    for sid in cohort.subjects:
        x = load_volume(tmp_path / "a" / sid / f"{sid}_flair.nii.gz").array
        y = load_volume(tmp_path / "b" / sid / f"{sid}_flair.nii.gz").array
        assert np.array_equal(x, y)
    assert [r.key for r in a.results] == [r.key for r in b.results]


def test_failed_patient_is_reported_and_others_finish(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    manifest = Manifest.from_csv(make_cohort(tmp_path / "in", n=2, bad=True))
    run = run_cohort(manifest, tmp_path / "out", scale_process, settings={})
    assert [r.status for r in run.results] == ["done", "done", "failed", "failed"]
    assert "cannot process this one" in run.failed[0].message
    assert "1 non-finite voxels in flair" in run.failed[1].message
    assert not (tmp_path / "out" / "bad" / DONE).exists() and not list((tmp_path / "out" / "nan").glob("*.nii.gz"))
    assert read_cohort(run.manifest).subjects == ["s0", "s1"]
    summary = json.loads(run.summary.read_text())
    assert summary["counts"] == {"done": 2, "cached": 0, "failed": 2}


def test_output_inside_the_input_folder_is_refused(cohort: Manifest) -> None:
    with pytest.raises(InputError, match="output folder holds input files"):
        run_cohort(cohort, cohort.source.parent, scale_process, settings={})


KILLED_RUN = textwrap.dedent('''
    import sys, time
    sys.path.insert(0, {tests!r})
    from test_runner import scale_process
    from vbiopsy.data.manifest import Manifest
    from vbiopsy.preprocess.runner import run_cohort

    def slow(row, modalities, log):
        out = scale_process(row, modalities, log)
        time.sleep(0.4)
        return out

    run_cohort(Manifest.from_csv({manifest!r}), {out!r}, slow, settings={{}})
''')


@pytest.mark.slow
def test_killed_run_resumes_without_partial_outputs(cohort: Manifest, tmp_path: Path) -> None:
    out = tmp_path / "out"
    script = KILLED_RUN.format(tests=str(Path(__file__).parent), manifest=str(cohort.source), out=str(out))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(out.glob(f"*/{DONE}"))) < 2:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {p.parent.name: p.stat().st_mtime_ns for p in out.glob(f"*/{DONE}")}
    assert 2 <= len(finished) < N_SUBJECTS, "the run should have been killed part-way"
    run = run_cohort(cohort, out, scale_process, settings={})
    assert {r.subject_id for r in run.results if r.status == "cached"} == set(finished)
    assert {r.subject_id for r in run.results if r.status == "done"} == set(cohort.subjects) - set(finished)
    assert all((out / sid / DONE).stat().st_mtime_ns == ns for sid, ns in finished.items())  # not recomputed
    assert not list(out.rglob(".tmp-*")), "no temporary file may survive"
    assert check_cohort(read_cohort(run.manifest)).ok
