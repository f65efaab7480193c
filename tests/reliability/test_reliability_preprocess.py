"""Preprocessing resumes at the first unfinished patient: ``vbiopsy preprocess`` killed with SIGKILL
after a patient finished, then run again, keeps that patient and gives the outputs of an
uninterrupted run (the runner's ``done.json`` is written last, keyed by input contents and settings)."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import nibabel as nib
import numpy as np
from reliability_helpers import run_cli, watch

from vbiopsy.data.phantoms import PhantomConfig, generate_cohort


def test_kill_9_during_preprocessing_then_rerun_equals_the_uninterrupted_run(tmp_path: Path) -> None:
    generate_cohort(PhantomConfig(n_patients=3, shape=(24, 28, 24), modalities=("t1c", "flair")), tmp_path / "in")
    config = tmp_path / "pp.yaml"
    config.write_text("resample:\n  spacing_mm: 6\n")

    def args(out: Path) -> list[str]:
        return ["preprocess", str(tmp_path / "in"), "--out", str(out), "--preset", "skull-stripped",
                "--config", str(config)]

    reference = run_cli(*args(tmp_path / "reference"))
    assert reference.returncode == 0, reference.stderr
    out = tmp_path / "out"
    status, _ = watch(args(out), lambda: any(out.glob("*/done.json")), kill_after=0.0)
    assert status == -signal.SIGKILL and not (out / "manifest.csv").exists()
    finished = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("*/done.json")}
    resumed = run_cli(*args(out))
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["counts"]["cached"] == len(finished) >= 1 and summary["counts"]["failed"] == 0
    assert {p.parent.name: p.stat().st_mtime_ns for p in out.glob("*/done.json") if p.parent.name in finished} \
        == finished  # finished patients were not redone
    manifest = (out / "manifest.csv").read_text()
    assert manifest == (tmp_path / "reference" / "manifest.csv").read_text().replace(str(tmp_path / "reference"),
                                                                                      str(out))
    images = sorted(p.relative_to(out) for p in out.glob("*/*.nii.gz"))
    assert images == sorted(p.relative_to(tmp_path / "reference") for p in (tmp_path / "reference").glob("*/*.nii.gz"))
    for name in images:
        a, b = nib.load(out / name), nib.load(tmp_path / "reference" / name)
        assert np.array_equal(np.asanyarray(a.dataobj), np.asanyarray(b.dataobj)) and np.array_equal(a.affine, b.affine)
