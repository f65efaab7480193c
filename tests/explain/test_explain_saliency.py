"""Saliency maps: post-processing by hand, mass in a region, exact placement on the source and native grids."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from vbiopsy.data.nifti import Volume, load_volume
from vbiopsy.data.phantoms import PhantomConfig, generate_patient
from vbiopsy.errors import ConfigError, InputError
from vbiopsy.explain import (abs_saliency, mass_inside, postprocess_saliency, saliency_foreground,
                             saliency_to_native, save_saliency)
from vbiopsy.preprocess import PreprocessConfig, preprocess_subject
from vbiopsy.preprocess.aslnet_roi import compute_roi, crop, resample_cube, roi_box
from vbiopsy.preprocess.sitk_bridge import transform_to_record

SOURCE_SHAPE = (20, 22, 18)
SOURCE_AFFINE = np.array([[2.0, 0, 0, -20.0], [0, 2.5, 0, -30.0], [0, 0, 3.0, 5.0], [0, 0, 0, 1]])


def _ramp() -> np.ndarray:
    """(10, 2, 2) volume whose value is x + 1 along axis 0."""
    return np.broadcast_to(np.arange(1.0, 11.0)[:, None, None], (10, 2, 2)).copy()


def test_abs_saliency_and_foreground_by_hand() -> None:
    attribution = np.zeros((2, 3, 3, 3))
    attribution[0, 1, 1, 1], attribution[1, 1, 1, 1], attribution[1, 0, 0, 0] = -2.0, 0.5, 3.0
    raw = abs_saliency(attribution)
    assert raw.shape == (3, 3, 3) and raw[1, 1, 1] == 2.5 and raw[0, 0, 0] == 3.0 and raw.sum() == 5.5
    # the 10th percentile of 40 values 1..10 (4 each) is 1.9, so only the x = 0 slab (value 1) drops out
    foreground = saliency_foreground(_ramp())
    assert not foreground[0].any() and foreground[1:].all()
    image = np.stack([_ramp(), -_ramp()])
    np.testing.assert_array_equal(saliency_foreground(image), np.zeros((10, 2, 2), bool))  # mean is 0 everywhere
    with pytest.raises(InputError, match="no voxel is above zero"):
        saliency_foreground(-_ramp())


def test_postprocess_by_hand() -> None:
    attribution = _ramp() - 1.0  # |IG| = x
    plain = postprocess_saliency(attribution, _ramp(), sigma_vox=0, clip_percentiles=(0, 100), floor_fraction=0)
    np.testing.assert_allclose(plain[:, 0, 0], [0.0] + [(x - 1) / 8 for x in range(1, 10)], atol=1e-7)
    # in-foreground mean of (x − 1)/8 for x = 1..9 is 0.5, so the floor 0.4 × 0.5 = 0.2 removes x = 1, 2
    floored = postprocess_saliency(attribution, _ramp(), sigma_vox=0, clip_percentiles=(0, 100))
    np.testing.assert_allclose(floored[:, 0, 0], [0, 0, 0] + [(x - 1) / 8 for x in range(3, 10)], atol=1e-7)
    rng = np.random.default_rng(0)
    image = np.zeros((12, 12, 12))
    image[2:10, 2:10, 2:10] = rng.uniform(1, 2, (8, 8, 8))
    shown = postprocess_saliency(rng.normal(size=(4, 12, 12, 12)), np.stack([image] * 4))
    inside = saliency_foreground(image)
    assert shown.dtype == np.float32 and shown.min() == 0 and shown.max() == 1 and not shown[~inside].any()
    with pytest.raises(ConfigError, match="clip_percentiles"):
        postprocess_saliency(attribution, _ramp(), clip_percentiles=(50, 10))
    with pytest.raises(InputError, match="keeps no voxel"):
        postprocess_saliency(attribution, np.stack([_ramp(), -_ramp()]))
    with pytest.raises(InputError, match="spatial shape"):
        postprocess_saliency(attribution[:5], _ramp())


def test_mass_inside_by_hand() -> None:
    saliency = np.zeros((9, 9, 9))
    saliency[4, 4, 4], saliency[4, 4, 6], saliency[4, 4, 7], saliency[6, 6, 4] = 1.0, -1.0, 1.0, 1.0
    tumour = np.zeros((9, 9, 9), bool)
    tumour[4, 4, 4] = True
    assert mass_inside(saliency, tumour, dilate_vox=0) == pytest.approx(1 / 4)
    assert mass_inside(saliency, tumour, dilate_vox=2) == pytest.approx(2 / 4)  # distance 2 in, 3 and √8 out
    assert mass_inside(saliency, tumour, dilate_vox=3) == pytest.approx(1.0)
    with pytest.raises(InputError, match="empty"):
        mass_inside(saliency, np.zeros((9, 9, 9)))


def _roi_near_the_edge() -> tuple[np.ndarray, object]:
    volume = np.random.default_rng(1).uniform(1, 2, SOURCE_SHAPE)
    volume[18, 2, 9] = 50.0  # brightest voxel next to the +x face: the 20 mm cube is padded there
    box = compute_roi(volume, SOURCE_AFFINE, side_mm=20.0)
    assert box.pad_after[0] > 0 and box.pad_before[1] > 0
    return volume, box


def test_cube_goes_back_exactly_where_it_was_cut() -> None:
    volume, box = _roi_near_the_edge()
    cube = crop(volume, box)
    placed = saliency_to_native(cube, box)
    inside = np.zeros(SOURCE_SHAPE, bool)
    inside[box.source_slices] = True
    np.testing.assert_array_equal(placed.array, np.where(inside, volume, 0).astype(np.float32))
    np.testing.assert_array_equal(placed.affine, SOURCE_AFFINE)
    spike = np.zeros(box.shape, np.float32)
    spike[1, 6, 3] = 1.0
    source_index = np.argwhere(saliency_to_native(spike, box).array == 1.0)[0]
    np.testing.assert_allclose(SOURCE_AFFINE @ [*source_index, 1], box.crop_affine @ [1, 6, 3, 1])
    resampled = box.with_out_shape((16, 16, 16))
    flat = saliency_to_native(np.full((16, 16, 16), 0.25, np.float32), resampled).array
    np.testing.assert_allclose(flat[inside], 0.25, rtol=1e-6)
    assert not flat[~inside].any()
    # a map linear in the box's voxel coordinates survives box → 16³ → source away from the box faces
    ramp = np.tensordot([0.3, -0.2, 0.5], np.indices(box.shape).astype(float), axes=1)
    back = saliency_to_native(resample_cube(ramp, (16, 16, 16)), resampled).array
    interior = tuple(slice(max(a, 0) + 1, min(b, n) - 1) for a, b, n in zip(box.start, box.stop, SOURCE_SHAPE))
    expected = np.tensordot([0.3, -0.2, 0.5], np.indices(SOURCE_SHAPE) - np.reshape(box.start, (3, 1, 1, 1)), axes=1)
    np.testing.assert_allclose(back[interior], expected[interior], atol=1e-5)


def _record(native_shape: tuple[int, int, int], native_affine: np.ndarray, transform: sitk.Transform) -> dict:
    """A minimal MRI-Processor record: output grid = the ROI's source grid, one native t1c scan."""
    return {"output_grid": {"shape": list(SOURCE_SHAPE), "affine": SOURCE_AFFINE.tolist()},
            "modalities": {"t1c": {"native_grid": {"shape": list(native_shape), "affine": native_affine.tolist()}}},
            "transforms": {"t1c": [transform_to_record(transform)]}}


def test_record_carries_the_map_to_the_native_grid() -> None:
    volume, box = _roi_near_the_edge()
    cube = crop(volume, box)
    same = _record(SOURCE_SHAPE, SOURCE_AFFINE, sitk.Transform(3, sitk.sitkIdentity))
    np.testing.assert_allclose(saliency_to_native(cube, box, record=same, modality="t1c").array,
                               saliency_to_native(cube, box).array, atol=1e-5)
    # a smooth blob in the cube; the chain maps output → native, so output point p is native p + shift
    grid = np.indices(box.shape).astype(float)
    centre = np.array([2.5, 4.0, 3.0])
    blob = np.exp(-((grid - centre[:, None, None, None]) ** 2).sum(axis=0) / 2).astype(np.float32)
    source_centroid = (SOURCE_AFFINE @ [*ndimage.center_of_mass(saliency_to_native(blob, box).array), 1])[:3]
    kept = np.zeros(box.shape, bool)
    kept[box.crop_slices] = True  # paste_back keeps the in-volume part of the cube, voxel for voxel
    np.testing.assert_allclose(source_centroid, (box.crop_affine @ [*ndimage.center_of_mass(blob * kept), 1])[:3],
                               atol=1e-6)
    shift_lps = np.array([3.0, -4.5, 6.0])  # SimpleITK transforms act in LPS mm
    shift_ras = shift_lps * [-1, -1, 1]
    native_affine = np.diag([1.5, 1.5, 1.5, 1.0])
    native_affine[:3, 3] = [-25.0, -35.0, 0.0]
    record = _record((36, 40, 44), native_affine, sitk.TranslationTransform(3, shift_lps.tolist()))
    native = saliency_to_native(blob, box, record=record, modality="t1c")
    assert native.array.shape == (36, 40, 44) and native.array.dtype == np.float32
    np.testing.assert_array_equal(native.affine, native_affine)
    native_centroid = (native_affine @ [*ndimage.center_of_mass(native.array), 1])[:3]
    np.testing.assert_allclose(native_centroid, source_centroid + shift_ras, atol=0.1)  # < 1/15 native voxel
    assert native.array.sum() * 1.5**3 == pytest.approx((blob * kept).sum() * 2.0 * 2.5 * 3.0, rel=0.02)
    with pytest.raises(ConfigError, match="'flair' is not in the preprocessing record"):
        saliency_to_native(blob, box, record=record, modality="flair")
    with pytest.raises(ConfigError, match="modality must name"):
        saliency_to_native(blob, box, record=record)
    with pytest.raises(ConfigError, match="needs the preprocessing record"):
        saliency_to_native(blob, box, modality="t1c")
    moved = roi_box((20, 22, 19), SOURCE_AFFINE, box.centre_vox, 20.0)
    with pytest.raises(InputError, match="ROI box was cut from grid"):
        saliency_to_native(crop(np.zeros((20, 22, 19)), moved), moved, record=record, modality="t1c")
    with pytest.raises(InputError, match="matches neither the box"):
        saliency_to_native(blob[:-1], box)


def test_tumour_cube_reaches_the_native_tumour_through_a_real_record(tmp_path: Path) -> None:
    config = PhantomConfig(n_patients=1, shape=(28, 32, 28), modalities=("t1", "t1c", "t2", "flair"))
    patient = generate_patient(config, 1)
    paths = {}
    for name, array in {**patient.images, "seg": patient.seg}.items():
        paths[name] = tmp_path / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(array, patient.affine), str(paths[name]))
    seg_path = paths.pop("seg")
    config = PreprocessConfig.skull_stripped(bias={"enabled": False, "mask": "nonzero"}, resample={"spacing_mm": 5.0})
    result = preprocess_subject(paths, seg=seg_path, config=config)
    tumour = (result.seg > 0).astype(np.float32)
    box = roi_box(tumour.shape, result.affine, ndimage.center_of_mass(tumour), side_mm=120.0)
    cube = crop(tumour, box)
    assert cube.sum() == tumour.sum() > 0  # the whole tumour is in the cube
    native = saliency_to_native(cube, box, record=result.record, modality="t1c")
    truth = load_volume(seg_path, dtype=np.uint8)
    assert native.array.shape == truth.array.shape
    np.testing.assert_allclose(native.affine, truth.affine, atol=1e-4)
    found, planted = native.array > 0.5, truth.array > 0
    assert 2 * (found & planted).sum() / (found.sum() + planted.sum()) > 0.85


def test_save_saliency_round_trip(tmp_path: Path) -> None:
    volume = Volume(np.random.default_rng(2).random((5, 6, 7)), SOURCE_AFFINE)
    path = save_saliency(volume, tmp_path / "maps" / "ig.nii.gz")
    loaded = load_volume(path)
    np.testing.assert_allclose(loaded.array, volume.array.astype(np.float32))
    np.testing.assert_allclose(loaded.affine, SOURCE_AFFINE)
    assert sorted(p.name for p in path.parent.iterdir()) == ["ig.nii.gz"]
    with pytest.raises(InputError, match=r"\.nii"):
        save_saliency(volume, tmp_path / "ig.npy")
    with pytest.raises(InputError, match="3-D"):
        save_saliency(Volume(np.zeros((2, 2)), SOURCE_AFFINE), tmp_path / "flat.nii")
