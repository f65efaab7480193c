"""Fixtures of the MRI-Processor tests: tiny phantom patients written as NIfTI files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from vbiopsy.data.phantoms import PhantomConfig, PhantomPatient, generate_patient
from vbiopsy.preprocess import PreprocessConfig

MODALITIES = ("t1", "t1c", "t2", "flair")
RAW_SHAPE = (28, 32, 28)
"""Raw phantoms are ~7 mm in-plane with 11 mm slices at this shape: the smallest that still has anatomy."""

FAST = {"resample": {"spacing_mm": 4.0}, "registration": {"level_spacing_mm": (8.0, 4.0), "iterations": 100}}
"""Settings that keep a tiny phantom's pipeline run at a few seconds (4 mm output, two registration levels)."""


@dataclass(frozen=True)
class PhantomFiles:
    """A phantom written to disk: image paths, seg path and the in-memory patient (truth)."""

    patient: PhantomPatient
    images: dict[str, Path]
    seg: Path

    def canonical(self, array: np.ndarray) -> np.ndarray:
        """``array`` (on the patient's file grid) reoriented to canonical RAS like load_volume does."""
        ornt = nib.orientations.io_orientation(self.patient.affine)
        return nib.orientations.apply_orientation(array, ornt)

    def brain_truth(self) -> np.ndarray:
        """Planted intracranial volume (grey + white matter + CSF, holes filled) in canonical RAS on the
        native grid: brain and the CSF around it, which is also what BraTS brain masks delineate."""
        tissue = self.patient.tissue
        return ndimage.binary_fill_holes(self.canonical((tissue["gm"] + tissue["wm"] + tissue["csf"]) > 0.5))


def write_patient(patient: PhantomPatient, folder: Path) -> PhantomFiles:
    folder.mkdir(parents=True, exist_ok=True)
    images = {}
    for modality, array in patient.images.items():
        images[modality] = folder / f"{modality}.nii.gz"
        nib.save(nib.Nifti1Image(array, patient.affine), str(images[modality]))
    seg = folder / "seg.nii.gz"
    nib.save(nib.Nifti1Image(patient.seg, patient.affine), str(seg))
    return PhantomFiles(patient, images, seg)


@pytest.fixture(scope="session")
def raw_phantom(tmp_path_factory: pytest.TempPathFactory) -> PhantomFiles:
    """Skull-on, thick-slice, obliquely stored phantom (BraTS 2024 labels)."""
    config = PhantomConfig(n_patients=1, shape=RAW_SHAPE, raw=True, modalities=MODALITIES)
    return write_patient(generate_patient(config, 0), tmp_path_factory.mktemp("raw_phantom"))


@pytest.fixture(scope="session")
def stripped_phantom(tmp_path_factory: pytest.TempPathFactory) -> PhantomFiles:
    """Skull-stripped phantom on a canonical 7 mm grid in template space."""
    config = PhantomConfig(n_patients=1, shape=RAW_SHAPE, modalities=MODALITIES)
    return write_patient(generate_patient(config, 1), tmp_path_factory.mktemp("stripped_phantom"))


@pytest.fixture(scope="session")
def raw_result(raw_phantom: PhantomFiles):  # type: ignore[no-untyped-def]
    """The default (raw) pipeline run once on the raw phantom, shared by several tests."""
    from vbiopsy.preprocess import preprocess_subject

    lines: list[str] = []
    result = preprocess_subject(raw_phantom.images, seg=raw_phantom.seg, config=PreprocessConfig.model_validate(FAST),
                                log=lines.append)
    return result, lines


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return float(2.0 * np.count_nonzero(a & b) / max(np.count_nonzero(a) + np.count_nonzero(b), 1))
