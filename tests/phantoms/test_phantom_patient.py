"""In-memory patients: determinism, tissue contrast, skull stripping, planted phenotype, raw geometry."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from vbiopsy.data.phantoms import PhantomPatient, generate_patient
from vbiopsy.data.phantoms.patient import clinical_for

from .conftest import glioma, tiny

ORDER = {  # expected contrast order of normal tissue, brightest first
    "t1": ("wm", "gm", "csf"), "t1c": ("wm", "gm", "csf"), "t2": ("csf", "gm", "wm"),
    "flair": ("gm", "wm", "csf"), "asl": ("gm", "wm", "csf"),
}


def _tissue_means(patient: PhantomPatient, modality: str) -> dict[str, float]:
    healthy = patient.seg == 0
    masks = {"wm": patient.tissue["wm"] > 0.7, "gm": patient.tissue["gm"] > 0.6, "csf": patient.tissue["csf"] > 0.6}
    return {name: float(patient.images[modality][mask & healthy].mean()) for name, mask in masks.items()}


def test_same_seed_same_arrays_and_other_seed_differs() -> None:
    a, b = generate_patient(tiny(seed=7), 2), generate_patient(tiny(seed=7), 2)
    c = generate_patient(tiny(seed=8), 2)
    for modality in a.images:
        assert np.array_equal(a.images[modality], b.images[modality])
        assert not np.array_equal(a.images[modality], c.images[modality])
    assert np.array_equal(a.seg, b.seg) and np.array_equal(a.affine, b.affine)
    assert a.clinical == b.clinical and a.phenotype == b.phenotype


def test_clinical_for_matches_the_patient() -> None:
    cfg = tiny(seed=3)
    assert all(clinical_for(cfg, i) == generate_patient(cfg, i).clinical for i in range(3))


def test_latent_factors_do_not_depend_on_the_grid() -> None:
    coarse = generate_patient(tiny(seed=1, shape=(16, 18, 16)), 4)
    fine = generate_patient(tiny(seed=1), 4)
    assert coarse.phenotype == fine.phenotype and coarse.clinical == fine.clinical
    assert coarse.seg.shape == (16, 18, 16) and fine.seg.shape == (28, 32, 28)


def test_dtypes_labels_and_skull_stripping() -> None:
    patient = generate_patient(tiny(), 0)
    assert set(patient.images) == {"t1", "t1c", "t2", "flair", "asl"}
    for modality, image in patient.images.items():
        assert image.shape == patient.seg.shape
        assert image.dtype == (np.float32 if modality == "asl" else np.int16)
    assert patient.seg.dtype == np.uint8 and set(np.unique(patient.seg)) <= {0, 1, 2, 3} and patient.seg.any()
    outside = (patient.tissue["gm"] + patient.tissue["wm"] + patient.tissue["csf"]) < 0.05
    for image in patient.images.values():
        assert not image[outside].any() and image[~outside].any()
    assert nib.aff2axcodes(patient.affine) == ("R", "A", "S")


@pytest.mark.parametrize("modality", list(ORDER))
def test_tissue_contrast_order(modality: str) -> None:
    cfg = tiny(seed=2, bias_strength=0.0)
    for index in range(3):
        means = _tissue_means(generate_patient(cfg, index), modality)
        ordered = [means[name] for name in ORDER[modality]]
        assert ordered[0] > ordered[1] > ordered[2], (index, means)


def test_contrast_order_survives_bias_on_average() -> None:
    cfg = tiny(seed=4)
    patients = [generate_patient(cfg, i) for i in range(6)]
    for modality, order in ORDER.items():
        ratios = [_tissue_means(p, modality) for p in patients]
        first, second, third = (np.mean([r[name] / r[order[1]] for r in ratios]) for name in order)
        assert first > second > third, modality


def test_modality_subset_keeps_the_other_images_identical() -> None:
    full = generate_patient(tiny(seed=5), 1)
    subset = generate_patient(tiny(seed=5, modalities=("t1c", "flair")), 1)
    assert set(subset.images) == {"t1c", "flair"}
    assert np.array_equal(subset.seg, full.seg) and subset.phenotype == full.phenotype
    assert all(np.array_equal(subset.images[m], full.images[m]) for m in subset.images)


def _relative_tumour_signal(patient: PhantomPatient, modality: str, reference: str) -> float:
    core = np.isin(patient.seg, (1, 3))
    normal = (patient.tissue[reference] > 0.6) & (patient.seg == 0)
    return float(patient.images[modality][core].mean() / patient.images[modality][normal].mean())


def test_grade_shows_as_enhancement_and_perfusion_in_the_images() -> None:
    cfg = tiny(seed=11, shape=(32, 32, 32))
    high = [generate_patient(cfg, i, clinical=glioma(4, idh=0)) for i in range(8)]
    low = [generate_patient(cfg, i, clinical=glioma(2, idh=1)) for i in range(8, 16)]
    t1c_high = np.mean([_relative_tumour_signal(p, "t1c", "wm") for p in high])
    t1c_low = np.mean([_relative_tumour_signal(p, "t1c", "wm") for p in low])
    asl_high = np.mean([_relative_tumour_signal(p, "asl", "gm") for p in high])
    asl_low = np.mean([_relative_tumour_signal(p, "asl", "gm") for p in low])
    assert t1c_high > t1c_low + 0.1 and asl_high > asl_low + 0.3
    et_share = [np.mean(p.seg[p.seg > 0] == 3) for p in high], [np.mean(p.seg[p.seg > 0] == 3) for p in low]
    assert np.mean(et_share[0]) > np.mean(et_share[1])


def test_raw_scans_are_anisotropic_and_not_ras() -> None:
    cfg = tiny(seed=6, raw=True)
    for index in range(3):
        patient = generate_patient(cfg, index)
        spacing = np.linalg.norm(patient.affine[:3, :3], axis=0)
        assert spacing.max() / spacing.min() > 1.4
        assert nib.aff2axcodes(patient.affine) != ("R", "A", "S")
        shapes = {a.shape for a in (*patient.images.values(), patient.seg, *patient.tissue.values())}
        assert len(shapes) == 1
        assert patient.geometry["axcodes"] == "".join(nib.aff2axcodes(patient.affine))
        background = patient.images["t1"][patient.tissue["gm"] + patient.tissue["wm"] + patient.tissue["csf"] == 0]
        assert background.any()  # raw scans keep noise and the head outside the brain
