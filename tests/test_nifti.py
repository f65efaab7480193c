from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import brain, write_nifti
from vbiopsy.data.nifti import load_volume, read_grid, save_volume
from vbiopsy.errors import InputError


def lps_affine() -> np.ndarray:
    return np.array([[-1.0, 0, 0, 90], [0, -1.0, 0, 120], [0, 0, 2.5, -60], [0, 0, 0, 1]])


def test_load_reorients_to_ras_and_keeps_world_coordinates(tmp_path: Path) -> None:
    data = brain(0)
    path = write_nifti(tmp_path / "lps.nii.gz", data, lps_affine())
    vol = load_volume(path)
    assert nib.aff2axcodes(vol.affine) == ("R", "A", "S")
    # the voxel at native index (0, 0, 0) sits at the same world point after reorientation
    world = lps_affine() @ np.array([0, 0, 0, 1.0])
    ijk = np.linalg.solve(vol.affine, world)[:3].round().astype(int)
    assert vol.array[tuple(ijk)] == pytest.approx(data[0, 0, 0])
    assert vol.grid.spacing == pytest.approx((1.0, 1.0, 2.5))


def test_read_grid_matches_loaded_grid_without_loading(tmp_path: Path) -> None:
    affine = np.array([[0, 0, 2.0, -10], [-1.0, 0, 0, 40], [0, 1.5, 0, -20], [0, 0, 0, 1]])
    path = write_nifti(tmp_path / "oblique_axes.nii.gz", brain(1), affine)
    header_grid = read_grid(path)
    loaded = load_volume(path).grid
    assert header_grid.shape == loaded.shape
    assert header_grid.mismatch(loaded) is None


def test_trailing_singleton_dimension_is_accepted(tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "x.nii.gz", brain(2)[..., None])
    assert load_volume(path).array.ndim == 3


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (np.ones((8, 8), np.float32), "expected a 3-D image, got a 2-D image"),
        (np.ones((8, 8, 8, 3), np.float32), "got a 4-D image"),
        (np.zeros((8, 8, 8), np.float32), "all voxels are zero"),
    ],
)
def test_bad_images_are_rejected_with_the_file_named(tmp_path: Path, data: np.ndarray, message: str) -> None:
    path = write_nifti(tmp_path / "bad.nii.gz", data)
    with pytest.raises(InputError, match=message) as err:
        load_volume(path)
    assert str(path) in str(err.value)


def test_nan_voxels_are_counted(tmp_path: Path) -> None:
    data = brain(3)
    data[0, 0, :3] = np.nan
    path = write_nifti(tmp_path / "nan.nii.gz", data)
    with pytest.raises(InputError, match="3 voxels are NaN or infinite"):
        load_volume(path)


def test_truncated_gzip_is_reported_not_raised_raw(tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "full.nii.gz", brain(4))
    raw = path.read_bytes()
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputError, match="truncated|corrupt|not a readable") as err:
        load_volume(cut)
    assert "cut.nii.gz" in str(err.value)


def test_not_a_nifti_and_missing_file(tmp_path: Path) -> None:
    junk = tmp_path / "junk.nii.gz"
    junk.write_bytes(gzip.compress(b"hello"))
    with pytest.raises(InputError, match="not a readable NIfTI"):
        load_volume(junk)
    with pytest.raises(InputError, match="file not found"):
        load_volume(tmp_path / "absent.nii.gz")


def test_labels_must_be_integers(tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "seg.nii.gz", np.full((6, 6, 6), 1.5, np.float32))
    with pytest.raises(InputError, match="non-integer"):
        load_volume(path, dtype=np.int16)


def test_save_volume_round_trip_is_atomic(tmp_path: Path) -> None:
    data = brain(5)
    out = save_volume(data, np.diag([1.0, 1.0, 1.0, 1.0]), tmp_path / "out.nii.gz")
    assert np.array_equal(load_volume(out).array, data)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.nii.gz"]  # no temp file left behind
