"""Co-registration recovers a known rigid motion; template registration brings a phantom onto the template."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from vbiopsy.data.nifti import Volume, load_volume
from vbiopsy.errors import InputError
from vbiopsy.preprocess import CoregistrationConfig, PreprocessConfig, RegistrationConfig, grid_at_spacing, \
    preprocess_subject
from vbiopsy.preprocess.atlas import load_atlas
from vbiopsy.preprocess.coregister import coregister
from vbiopsy.preprocess.resample import resample_array
from vbiopsy.preprocess.sitk_bridge import RAS_TO_LPS, from_sitk, transform_from_record, volume_to_sitk
from vbiopsy.preprocess.template_registration import affine_to_template

from .conftest import PhantomFiles, dice


def rigid_ras(degrees: tuple[float, float, float], shift_mm: tuple[float, float, float],
              centre: np.ndarray) -> np.ndarray:
    """4×4 world (RAS) rigid motion: rotations about x, y, z (degrees) around ``centre``, then a shift."""
    rx, ry, rz = np.deg2rad(degrees)
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    rot = (np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]]) @ np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
           @ np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]]))
    motion = np.eye(4)
    motion[:3, :3] = rot
    motion[:3, 3] = centre - rot @ centre + np.asarray(shift_mm)
    return motion


def _centre(volume: Volume) -> np.ndarray:
    return volume.affine[:3, :3] @ ((np.array(volume.array.shape) - 1) / 2.0) + volume.affine[:3, 3]


def test_coregistration_recovers_a_known_rigid_motion(stripped_phantom: PhantomFiles) -> None:
    fixed = load_volume(stripped_phantom.images["t1c"])
    t2 = load_volume(stripped_phantom.images["t2"])
    motion = rigid_ras((4.0, -3.0, 6.0), (5.0, -4.0, 3.0), _centre(t2))
    moved = Volume(t2.array, motion @ t2.affine)  # the same voxels seen 6° rotated and 7 mm away
    record, report = coregister(volume_to_sitk(fixed), volume_to_sitk(moved), fixed.grid, moved.grid,
                                CoregistrationConfig())
    assert "skipped" not in report and record["type"] == "Euler3DTransform"
    found = transform_from_record(record)
    brain = np.argwhere(fixed.array > 0)[::7]
    points_ras = brain @ fixed.affine[:3, :3].T + fixed.affine[:3, 3]
    errors = []
    for p in points_ras:
        expected = RAS_TO_LPS @ (motion[:3, :3] @ p + motion[:3, 3])
        errors.append(np.linalg.norm(np.asarray(found.TransformPoint((RAS_TO_LPS @ p).tolist())) - expected))
    # voxels are 7 mm: the motion (up to ~12 mm in the brain) is recovered to a fraction of a voxel
    assert float(np.median(errors)) < 1.5 and float(np.max(errors)) < 3.0, (np.median(errors), np.max(errors))


def test_same_grid_is_verified_and_aligned_series_keep_identity(stripped_phantom: PhantomFiles) -> None:
    fixed = load_volume(stripped_phantom.images["t1c"])
    t2 = load_volume(stripped_phantom.images["t2"])
    record, report = coregister(volume_to_sitk(fixed), volume_to_sitk(t2), fixed.grid, t2.grid,
                                CoregistrationConfig())
    assert record["type"] == "IdentityTransform" and "aligned" in report["skipped"]
    assert report["motion_mm"] < 0.4 * 7.1  # registration noise between contrasts stays below 0.4 voxel
    record, report = coregister(volume_to_sitk(fixed), volume_to_sitk(t2), fixed.grid, t2.grid,
                                CoregistrationConfig(same_grid="skip"))
    assert record["type"] == "IdentityTransform" and report == {"skipped": "already on the reference grid"}


def test_same_grid_but_moved_series_is_registered(stripped_phantom: PhantomFiles) -> None:
    """Same header, different head position (as T1 vs T1c of TCGA-FG-6692): the motion is found."""
    fixed = load_volume(stripped_phantom.images["t1c"])
    t2 = load_volume(stripped_phantom.images["t2"])
    motion = rigid_ras((0.0, 0.0, 8.0), (3.0, 0.0, 0.0), _centre(t2))
    moved = Volume(t2.array, motion @ t2.affine)
    # resample the moved series back onto the reference grid: same header, moved anatomy
    on_grid = Volume(resample_array(moved.array.astype(np.float32), moved.affine, fixed.grid), fixed.affine)
    record, report = coregister(volume_to_sitk(fixed), volume_to_sitk(on_grid), fixed.grid, on_grid.grid,
                                CoregistrationConfig())
    assert record["type"] == "Euler3DTransform" and report["motion_mm"] > 3.0
    assert abs(abs(record["parameters"][2]) - np.deg2rad(8.0)) < np.deg2rad(2.0)


def test_template_registration_brings_a_tilted_phantom_onto_the_template(stripped_phantom: PhantomFiles) -> None:
    t1 = load_volume(stripped_phantom.images["t1"])
    motion = rigid_ras((25.0, 0.0, -8.0), (10.0, -20.0, 15.0), _centre(t1))
    tilted = volume_to_sitk(Volume(t1.array, motion @ t1.affine))
    atlas = load_atlas()
    template_mask = sitk.GetArrayFromImage(atlas.mask) > 0

    def overlap(transform: sitk.Transform) -> float:
        warped = sitk.Resample(sitk.Cast(tilted > 0, sitk.sitkFloat32), atlas.mask, transform, sitk.sitkLinear, 0.0)
        return dice(sitk.GetArrayFromImage(warped) > 0.5, template_mask)

    before = overlap(sitk.Transform(3, sitk.sitkIdentity))
    affine, report = affine_to_template(tilted, atlas, RegistrationConfig(level_spacing_mm=(8.0, 4.0), iterations=100))
    after = overlap(affine)
    assert after > 0.87 and after > before + 0.1, (before, after)
    assert set(report) >= {"start_search", "rigid", "affine", "template"}
    assert report["skull_stripped_input"] is True  # zero background: the affine samples the whole template brain
    assert from_sitk(atlas.image).array.shape == (197, 233, 189)


def test_a_user_template_is_accepted(stripped_phantom: PhantomFiles, tmp_path: Path) -> None:
    template = stripped_phantom.images["t1"]  # a 7 mm skull-stripped brain in MNI space
    config = PreprocessConfig.model_validate({
        "bias": {"enabled": False}, "resample": {"spacing_mm": 7.0}, "skull_strip": {"backend": "nonzero"},
        "registration": {"template": str(template), "level_spacing_mm": (8.0,), "iterations": 50}})
    result = preprocess_subject({"t1c": stripped_phantom.images["t1c"]}, config=config)
    assert result.record["output_grid"]["space"] == f"template: {template.name}"
    expected = grid_at_spacing(load_volume(template).grid, (7.0, 7.0, 7.0))
    assert next(iter(result.images.values())).shape == expected.shape
    np.testing.assert_allclose(result.affine, expected.affine, atol=1e-6)
    bad_mask = tmp_path / "mask.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((5, 5, 5), np.uint8), np.eye(4)), str(bad_mask))
    wrong = config.model_copy(update={"registration": config.registration.model_copy(
        update={"template_mask": bad_mask})})
    with pytest.raises(InputError, match="not on the grid of the template") as err:
        preprocess_subject({"t1c": stripped_phantom.images["t1c"]}, config=wrong)
    assert err.value.where == str(bad_mask)
