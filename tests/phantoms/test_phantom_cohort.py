"""Cohorts on disk: layouts, tables, raw geometry, determinism across jobs, ground truth and oracles."""

from __future__ import annotations

import csv
import json
import threading
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from vbiopsy.data.nifti import load_volume
from vbiopsy.data.phantoms import PhantomCohort, generate_cohort
from vbiopsy.data.phantoms.layout import BRATS_TABLE_COLUMNS, UCSF_TABLE_COLUMNS
from vbiopsy.data.phantoms.truth import TASKS
from vbiopsy.errors import ConfigError, InputError

from .conftest import tiny

UCSF_FILES = ("T1", "T1c", "T2", "FLAIR", "ASL", "tumor_segmentation")


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _header(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()[0].split(",")


@pytest.fixture(scope="module")
def ucsf(tmp_path_factory: pytest.TempPathFactory) -> PhantomCohort:
    calls: list[tuple[int, int]] = []
    cohort = generate_cohort(tiny(n_patients=40, seed=3), tmp_path_factory.mktemp("ucsf"),
                             progress=lambda d, n: calls.append((d, n)))
    assert calls[0] == (0, 40) and calls[-1] == (40, 40) and [d for d, _ in calls] == sorted(d for d, _ in calls)
    return cohort


@pytest.fixture(scope="module")
def truth(ucsf: PhantomCohort) -> dict:
    return json.loads(ucsf.ground_truth.read_text())


def test_ucsf_layout_files(ucsf: PhantomCohort) -> None:
    assert ucsf.layout == "ucsf-pdgm" and ucsf.subject_ids[:2] == ["UCSF-PDGM-0001", "UCSF-PDGM-0002"]
    expected = {f"{sid}_nifti" for sid in ucsf.subject_ids} | {"UCSF-PDGM-metadata.csv", "ground_truth.json"}
    assert {p.name for p in ucsf.root.iterdir()} == expected  # no temporary files left
    for sid in ucsf.subject_ids:
        files = {p.name for p in (ucsf.root / f"{sid}_nifti").iterdir()}
        assert files == {f"{sid}_{suffix}.nii.gz" for suffix in UCSF_FILES}
    seg = load_volume(ucsf.root / "UCSF-PDGM-0001_nifti" / "UCSF-PDGM-0001_tumor_segmentation.nii.gz", dtype=np.uint8)
    assert set(np.unique(seg.array)) <= {0, 1, 2, 4} and seg.array.any()
    t1 = nib.load(ucsf.root / "UCSF-PDGM-0001_nifti" / "UCSF-PDGM-0001_T1.nii.gz")
    assert t1.get_data_dtype() == np.int16 and t1.shape == (28, 32, 28)


def test_ucsf_metadata_table(ucsf: PhantomCohort, truth: dict) -> None:
    assert ucsf.clinical_table.name == "UCSF-PDGM-metadata.csv"
    assert _header(ucsf.clinical_table) == list(UCSF_TABLE_COLUMNS)
    rows = _rows(ucsf.clinical_table)
    assert [r["ID"] for r in rows] == [f"UCSF-PDGM-{i:03d}" for i in range(1, 41)]
    for row, sid in zip(rows, ucsf.subject_ids):
        clinical = truth["patients"][sid]["clinical"]
        assert row["Sex"] == clinical["sex"] and int(row["Age at MRI"]) == clinical["age"]
        assert row["WHO CNS Grade"] == ("" if clinical["grade"] is None else str(clinical["grade"]))
        assert row["TERT"] == {None: "", 1: "mutant", 0: "wildtype"}[clinical["tert"]]
        if clinical["diagnosis"] != "glioma":
            assert row["IDH"] == row["1p/19q"] == row["MGMT status"] == ""


def test_the_project_reader_sees_the_planted_truth(ucsf: PhantomCohort, truth: dict) -> None:
    from vbiopsy.data.layouts import read_cohort_with_problems

    manifest, problems = read_cohort_with_problems(ucsf.root)
    assert problems == [] and manifest.subjects == ucsf.subject_ids
    for sid in ucsf.subject_ids:
        row, clinical = manifest.row(sid), truth["patients"][sid]["clinical"]
        for key in ("grade", "idh", "codel_1p19q", "tert", "mgmt", "diagnosis", "os_event", "eor", "sex"):
            assert row.get(key) == clinical[key], (sid, key)


def test_ground_truth_document(ucsf: PhantomCohort, truth: dict) -> None:
    assert truth["generator_version"] and truth["seed"] == 3 and truth["config"]["n_patients"] == 40
    assert truth["label_convention"] == "brats2021" and list(truth["patients"]) == ucsf.subject_ids
    latent = truth["patients"]["UCSF-PDGM-0001"]["latent"]
    for key in ("centre_mm", "radius_mm", "enhancement", "necrosis_fraction", "oedema_extent", "cbf_tumour_ratio",
                "cbf_peri_ratio", "mismatch", "heterogeneity", "volumes_ml"):
        assert key in latent
    assert set(truth["tasks"]) == set(TASKS) == {"grade", "survival_12m", "idh", "codel_1p19q", "tert", "diagnosis"}
    for name, task in truth["tasks"].items():
        metrics = task["metrics"]
        if metrics["auc"] is None:
            assert metrics["reason"]
            continue
        for key in ("auc", "accuracy", "balanced_accuracy", "majority_accuracy"):
            assert 0.0 <= metrics[key] <= 1.0, (name, key)
        assert set(task["oracle"]) <= set(task["labels"])
    diagnosis = truth["tasks"]["diagnosis"]
    assert len(diagnosis["labels"]) == 40
    probs = next(iter(diagnosis["oracle"].values()))
    assert set(probs) <= {"glioma", "lymphoma", "germinoma", "other"}
    assert sum(probs.values()) == pytest.approx(1, abs=1e-3)
    for sid, label in truth["tasks"]["survival_12m"]["labels"].items():
        assert label == truth["patients"][sid]["survival_12m"]


def test_oracles_beat_chance_on_a_modest_cohort(truth: dict) -> None:
    for name in ("diagnosis", "grade", "idh", "survival_12m"):
        metrics = truth["tasks"][name]["metrics"]
        assert metrics["auc"] is not None and metrics["auc"] > 0.65, (name, metrics)
    diagnosis = truth["tasks"]["diagnosis"]["metrics"]
    assert diagnosis["accuracy"] > diagnosis["majority_accuracy"]


def test_brats2024_layout_with_cavities(tmp_path: Path) -> None:
    cfg = tiny(n_patients=3, layout="brats2024", resection_cavity_prob=1.0, modalities=("t1c", "flair", "asl"))
    cohort = generate_cohort(cfg, tmp_path / "b")
    assert cohort.subject_ids == [f"BraTS-GLI-{i:05d}-000" for i in (1, 2, 3)]
    truth = json.loads(cohort.ground_truth.read_text())
    assert truth["label_convention"] == "brats2024"
    cavities = []
    for sid in cohort.subject_ids:
        files = {p.name for p in (cohort.root / sid).iterdir()}
        assert files == {f"{sid}-{s}.nii.gz" for s in ("t1c", "t2f", "asl", "seg")}
        seg = load_volume(cohort.root / sid / f"{sid}-seg.nii.gz", dtype=np.uint8).array
        assert set(np.unique(seg)) <= {0, 1, 2, 3, 4} and truth["patients"][sid]["latent"]["cavity"]
        assert (truth["patients"][sid]["latent"]["volumes_ml"]["RC"] > 0) == (4 in seg)
        cavities.append(4 in seg)
    assert any(cavities)
    assert cohort.clinical_table.name == "clinical.csv"
    assert _header(cohort.clinical_table) == list(BRATS_TABLE_COLUMNS)
    for row in _rows(cohort.clinical_table):
        clinical = truth["patients"][row["subject_id"]]["clinical"]
        assert row["diagnosis"] == clinical["diagnosis"] and row["sex"] == clinical["sex"]
        assert row["idh"] == ("" if clinical["idh"] is None else str(clinical["idh"]))
        assert float(row["os_days"]) == clinical["os_days"] and int(row["os_event"]) == clinical["os_event"]


@pytest.mark.parametrize("busy_thread", [False, True], ids=["fork", "forkserver"])
def test_output_is_identical_whatever_the_number_of_jobs(tmp_path: Path, busy_thread: bool) -> None:
    cfg = tiny(n_patients=4, seed=21)
    one = generate_cohort(cfg, tmp_path / "one", jobs=1)
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)  # like a progress-bar thread: workers must not be forked
    if busy_thread:
        thread.start()
    try:
        two = generate_cohort(cfg, tmp_path / "two", jobs=2)
    finally:
        stop.set()
    files = sorted(p.relative_to(one.root) for p in one.root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(two.root) for p in two.root.rglob("*") if p.is_file())
    for rel in files:
        assert (one.root / rel).read_bytes() == (two.root / rel).read_bytes(), rel


def test_raw_cohort_loads_to_canonical_ras_on_one_grid(tmp_path: Path) -> None:
    cohort = generate_cohort(tiny(n_patients=2, raw=True, seed=5), tmp_path / "raw")
    for sid in cohort.subject_ids:
        paths = sorted((cohort.root / f"{sid}_nifti").iterdir())
        headers = [nib.load(p) for p in paths]
        assert len({nib.aff2axcodes(h.affine) for h in headers}) == 1
        assert nib.aff2axcodes(headers[0].affine) != ("R", "A", "S")
        zooms = headers[0].header.get_zooms()
        assert max(zooms) / min(zooms) > 1.4
        volumes = [load_volume(p, allow_empty=True) for p in paths]
        assert all(volumes[0].grid.mismatch(v.grid) is None for v in volumes)
        assert nib.aff2axcodes(volumes[0].affine) == ("R", "A", "S")
        seg = next(v for p, v in zip(paths, volumes) if "segmentation" in p.name).array
        t1 = next(v for p, v in zip(paths, volumes) if p.name.endswith("_T1.nii.gz")).array
        assert t1[seg > 0].mean() > 0  # the tumour lies inside the head on the canonical grid too


def test_bad_output_folder_and_jobs(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError) as info:
        generate_cohort(tiny(n_patients=1), blocker / "cohort")
    assert str(blocker / "cohort") in str(info.value)
    with pytest.raises(ConfigError, match="got 0"):
        generate_cohort(tiny(n_patients=1), tmp_path / "ok", jobs=0)
