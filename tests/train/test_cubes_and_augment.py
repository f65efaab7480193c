"""ROI cubes (raw signal + margin, channels on demand) and the on-the-fly augmentation."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from vbiopsy.data.nifti import load_volume
from vbiopsy.data.roi_cubes import RoiCube, cube_key, extract_cube
from vbiopsy.errors import InputError
from vbiopsy.preprocess.aslnet_channels import aslnet_inputs
from vbiopsy.train.augment import augment_cube, deform, elastic_field, rician
from vbiopsy.train.config import AugmentSettings
from vbiopsy.train.dataset import CubeDataset

AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


def perfusion(shape: tuple[int, int, int] = (24, 26, 22), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A smooth 'brain' of CBF ~ 40 with a hot 'tumour' of ~ 120 and its mask."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=float) for s in shape], indexing="ij"))
    centre = np.array(shape) / 2
    brain = ((grid - centre[:, None, None, None]) ** 2).sum(0) < (min(shape) / 2 - 1) ** 2
    tumour = ((grid - (centre + [3, -2, 1])[:, None, None, None]) ** 2).sum(0) < 9
    image = np.where(brain, 40 + 5 * rng.standard_normal(shape), 0) + np.where(tumour, 80, 0)
    return image.astype(np.float32), tumour


def write(path: Path, array: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(array, AFFINE), str(path))
    return path


def test_cube_channels_equal_the_direct_aslnet_inputs(tmp_path: Path) -> None:
    image, _ = perfusion()
    path = write(tmp_path / "asl.nii.gz", image)
    cube = extract_cube(path, side_mm=20)
    expected, box = aslnet_inputs(load_volume(path), side_mm=20)
    assert cube.box.start == box.start and cube.box.stop == box.stop
    np.testing.assert_allclose(cube.channels(), expected, atol=1e-5)
    # margin = half the local window (15 mm at 2 mm → 7 voxels → 3 per side)
    assert cube.margin == (3, 3, 3) and cube.raw.shape == tuple(n + 6 for n in box.shape)


def test_cube_round_trips_and_cache_key_changes_with_settings(tmp_path: Path) -> None:
    image, tumour = perfusion()
    path = write(tmp_path / "asl.nii.gz", image)
    seg = write(tmp_path / "seg.nii.gz", tumour.astype(np.uint8))
    cube = extract_cube(path, side_mm=16, centre="seg", seg=seg, out_shape=(6, 6, 6))
    assert cube.channels().shape == (4, 6, 6, 6)
    # centred on the segmentation's centroid
    centroid = np.argwhere(tumour).mean(0)
    assert np.allclose(cube.box.centre_vox, centroid)
    key = cube_key({"image": path}, {"side_mm": 16})
    cube.save(tmp_path / "c.npz", key)
    again = RoiCube.load(tmp_path / "c.npz", key)
    assert again is not None
    np.testing.assert_array_equal(again.channels(), cube.channels())
    assert RoiCube.load(tmp_path / "c.npz", cube_key({"image": path}, {"side_mm": 18})) is None
    assert RoiCube.load(tmp_path / "missing.npz", key) is None


def test_seg_centre_without_a_segmentation_is_a_clear_error(tmp_path: Path) -> None:
    image, _ = perfusion()
    path = write(tmp_path / "asl.nii.gz", image)
    with pytest.raises(InputError, match="no segmentation"):
        extract_cube(path, centre="seg")
    empty = write(tmp_path / "seg.nii.gz", np.zeros(image.shape, np.uint8))
    with pytest.raises(InputError, match="segmentation is empty"):
        extract_cube(path, centre="seg", seg=empty)


def test_elastic_field_has_the_requested_rms_and_is_smooth() -> None:
    rng = np.random.default_rng(0)
    field = elastic_field((30, 30, 30), np.full(3, 4.0), np.array([1.5, 1.5, 1.5]), rng)
    rms = np.sqrt((field**2).mean(axis=(1, 2, 3)))
    np.testing.assert_allclose(rms, 1.5, rtol=1e-4)
    # smooth: neighbouring displacements differ far less than the displacement itself
    assert np.abs(np.diff(field, axis=1)).mean() < 0.2 * np.abs(field).mean()


def test_deform_with_zero_field_is_identity_and_moves_content_otherwise() -> None:
    raw, mask = perfusion()
    same, same_mask = deform(raw, mask, np.zeros((3, *raw.shape), np.float32))
    np.testing.assert_allclose(same, raw)
    np.testing.assert_array_equal(same_mask, mask)
    shift = np.zeros((3, *raw.shape), np.float32)
    shift[0] = 2.0  # sample two voxels further along x
    moved, moved_mask = deform(raw, mask, shift)
    np.testing.assert_allclose(moved[:-2], raw[2:])
    np.testing.assert_array_equal(moved_mask[:-2], mask[2:])


def test_rician_noise_has_rician_statistics_inside_the_mask_only() -> None:
    rng = np.random.default_rng(1)
    raw = np.full((40, 40, 40), 50.0, np.float32)
    mask = np.zeros(raw.shape, bool)
    mask[:20] = True
    noisy = rician(raw, mask, 5.0, rng)
    np.testing.assert_array_equal(noisy[20:], raw[20:])
    # Rician mean for signal 50, sigma 5: ≈ sqrt(50² + 5²) to first order (50.25), sd ≈ 5
    assert noisy[:20].mean() == pytest.approx(np.sqrt(50**2 + 5**2), abs=0.1)
    assert noisy[:20].std() == pytest.approx(5.0, rel=0.05)


def test_augmentation_is_seeded_recorded_and_keeps_signed_channels(tmp_path: Path) -> None:
    image, _ = perfusion()
    cube = extract_cube(write(tmp_path / "asl.nii.gz", image), side_mm=20)
    settings = AugmentSettings(flip_prob=1.0, rotate_prob=1.0, elastic_prob=1.0, rician_prob=1.0)
    runs = [augment_cube(cube.raw, cube.mask, spacing=cube.spacing, noise_scale=cube.stats.scale,
                         settings=settings, rng=np.random.default_rng(7)) for _ in range(2)]
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    assert runs[0][2] == runs[1][2]
    assert set(runs[0][2]) == {"flip_axes", "rotate_deg", "elastic_rms_mm", "rician_std"}
    channels = cube.channels(runs[0][0], runs[0][1])
    assert channels[1].min() < 0 < channels[1].max()  # zg stays signed (the reference rectified it)


def test_dataset_draws_new_augmentations_per_epoch_but_not_without_augmentation(tmp_path: Path) -> None:
    image, _ = perfusion()
    cube = extract_cube(write(tmp_path / "asl.nii.gz", image), side_mm=20)
    plain = CubeDataset([cube], targets=np.array([1]))
    np.testing.assert_array_equal(plain[0]["image"].numpy(), plain[0]["image"].numpy())
    assert plain[0]["target"].item() == 1
    augmented = CubeDataset([cube], augment=AugmentSettings(rician_prob=1.0), seed=3)
    first = augmented[0]["image"].numpy()
    np.testing.assert_array_equal(first, augmented[0]["image"].numpy())
    augmented.set_epoch(1)
    assert not np.array_equal(first, augmented[0]["image"].numpy())
    with pytest.raises(Exception, match="NaN"):
        CubeDataset([cube], tabular=np.array([[np.nan, 1.0, 0.0]]))
