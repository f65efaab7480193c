"""Input validation, brain masks, robust z and the mid-sagittal plane."""

from __future__ import annotations

import numpy as np
import pytest
from localize_helpers import SPACING, synthetic_brain

from vbiopsy.errors import InputError
from vbiopsy.localize import MidPlane, prepare_scan
from vbiopsy.localize.brain import derive_brain_mask


@pytest.fixture(scope="module")
def synthetic():
    return synthetic_brain()


def test_mismatched_shapes_are_rejected_naming_the_image(synthetic) -> None:
    images = dict(synthetic.images, flair=synthetic.images["flair"][:-1])
    with pytest.raises(InputError, match=r"images\['flair'\]: shape \(31, 30, 24\) differs from"):
        prepare_scan(images, SPACING, modalities=("t1c", "flair"))


@pytest.mark.parametrize(("change", "message"), [
    (lambda a: a[..., 0], "expected a 3-D image"),
    (lambda a: np.where(a > 0, np.nan, a), "voxels are NaN or infinite"),
    (lambda a: np.zeros_like(a), "image is empty"),
])
def test_bad_images_are_rejected(synthetic, change, message) -> None:
    images = dict(synthetic.images, t1c=change(synthetic.images["t1c"]))
    with pytest.raises(InputError, match=message):
        prepare_scan(images, SPACING)


def test_missing_modality_and_bad_spacing(synthetic) -> None:
    with pytest.raises(InputError, match="missing modality 't2'; given: flair, t1c"):
        prepare_scan(synthetic.images, SPACING, modalities=("t2",))
    with pytest.raises(InputError, match="spacing_mm: expected 3 finite positive voxel sizes in mm, got"):
        prepare_scan(synthetic.images, (2.0, 0.0, 2.0))


def test_empty_or_mismatched_brain_mask_is_an_error(synthetic) -> None:
    with pytest.raises(InputError, match="brain_mask: mask is empty"):
        prepare_scan(synthetic.images, SPACING, brain_mask=np.zeros(synthetic.brain.shape, bool))
    with pytest.raises(InputError, match="brain_mask: shape"):
        prepare_scan(synthetic.images, SPACING, brain_mask=synthetic.brain[1:])


def test_all_background_image_is_an_error(synthetic) -> None:
    flat = np.where(synthetic.brain, 7.0, 0.0).astype(np.float32)
    with pytest.raises(InputError, match=r"images\['t1c'\]: image is all background: constant \(7\)"):
        prepare_scan(dict(synthetic.images, t1c=flat), SPACING, brain_mask=synthetic.brain)


def test_brain_mask_is_derived_from_zero_background_and_by_otsu(synthetic) -> None:
    assert np.array_equal(derive_brain_mask(synthetic.images, SPACING), synthetic.brain)
    rng = np.random.default_rng(1)
    unstripped = {m: (a + rng.uniform(1, 5, a.shape)).astype(np.float32) for m, a in synthetic.images.items()}
    mask = derive_brain_mask(unstripped, SPACING)
    dice = 2 * np.count_nonzero(mask & synthetic.brain) / (mask.sum() + synthetic.brain.sum())
    assert dice > 0.95


def test_robust_z_is_centred_on_the_brain_median(synthetic) -> None:
    scan = prepare_scan(synthetic.images, SPACING, brain_mask=synthetic.brain)
    z = scan.z["flair"]
    assert abs(float(np.median(z[synthetic.brain]))) < 1e-3
    assert float(np.median(np.abs(z[synthetic.brain]))) == pytest.approx(1 / 1.4826, rel=1e-3)
    assert not z[~synthetic.brain].any()
    assert scan.stats["flair"]["scale"] > 0


@pytest.mark.parametrize(("offset_mm", "yaw_deg"), [(10.0, 10.0), (-8.0, -5.0)])
def test_midplane_is_found_off_centre_and_tilted(offset_mm: float, yaw_deg: float) -> None:
    synthetic = synthetic_brain((40, 36, 26), offset_mm=offset_mm, yaw_deg=yaw_deg)
    plane = prepare_scan(synthetic.images, SPACING, brain_mask=synthetic.brain).plane
    truth = MidPlane(tuple(synthetic.normal), tuple(synthetic.point_mm), 0.0, 0.0, 0.0, 1.0)
    points = np.argwhere(synthetic.brain) * np.asarray(SPACING)
    error = np.linalg.norm(plane.reflect(points) - truth.reflect(points), axis=1)
    assert error.mean() < 2.0 and error.max() < 4.0  # mm, on a 2 mm grid
    assert abs(plane.yaw_deg) > 2.0  # the tilt is seen, not assumed away
    image_centre_x = (40 - 1) * SPACING[0] / 2
    assert abs(plane.point_mm[0] - image_centre_x - offset_mm) < 2.0


def test_crop_keeps_the_brain_and_pastes_back(synthetic) -> None:
    padded = {m: np.pad(a, 10) for m, a in synthetic.images.items()}
    scan = prepare_scan(padded, SPACING, crop_margin_mm=4.0)
    assert scan.shape[0] < padded["flair"].shape[0] and scan.full_shape == padded["flair"].shape
    assert np.array_equal(scan.paste(scan.brain, False), np.pad(synthetic.brain, 10))
