"""preprocess_subject on tiny phantoms: outputs, record, skull strip quality, normalisation, bad input."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from vbiopsy.errors import ConfigError, InputError
from vbiopsy.preprocess import PreprocessConfig, preprocess_subject, to_native

from .conftest import FAST, PhantomFiles, dice

QUICK = PreprocessConfig.skull_stripped(bias={"enabled": False, "mask": "nonzero"}, resample={"spacing_mm": 7.0})


def test_raw_phantom_outputs_share_one_grid(raw_result) -> None:  # type: ignore[no-untyped-def]
    result, lines = raw_result
    shapes = {a.shape for a in result.images.values()}
    assert len(shapes) == 1 and result.brain_mask is not None and result.seg is not None
    shape = shapes.pop()
    assert result.brain_mask.shape == shape == result.seg.shape
    assert all(a.dtype == np.float32 for a in result.images.values())
    assert result.brain_mask.dtype == np.uint8 and result.seg.dtype == np.uint8
    assert result.affine.shape == (4, 4) and np.allclose(np.linalg.norm(result.affine[:3, :3], axis=0), 4.0)
    assert set(result.images) == {"t1", "t1c", "t2", "flair"}
    assert any(line.startswith("template_registration") for line in lines)


def test_record_is_json_and_lists_every_step(raw_result, raw_phantom: PhantomFiles) -> None:  # type: ignore[no-untyped-def]
    result, _ = raw_result
    record = json.loads(json.dumps(result.record))
    names = [step["name"] for step in record["steps"]]
    assert names[0] == "read" and names[-1] == "normalize"
    assert names.count("bias_correction") == 4 and names.count("coregistration") == 3
    assert {"template_registration", "resample", "skull_strip"} <= set(names)
    for step in record["steps"]:
        assert {"name", "backend", "parameters", "seconds"} <= set(step) and step["seconds"] >= 0
    template = next(s for s in record["steps"] if s["name"] == "template_registration")
    assert template["transforms"][0]["type"] == "AffineTransform"
    assert template["report"]["skull_stripped_input"] is False
    assert len(template["transforms"][0]["parameters"]) == 12 and len(template["transforms"][0]["fixed_parameters"]) == 3
    native = record["modalities"]["t1c"]
    assert native["source"] == str(raw_phantom.images["t1c"])
    canonical = raw_phantom.canonical(raw_phantom.patient.images["t1c"])
    assert tuple(native["native_grid"]["shape"]) == canonical.shape  # canonical RAS, as load_volume reads it
    assert record["reference"] == "t1c" and record["output_grid"]["space"].startswith("template")


def test_skull_strip_of_raw_phantom_matches_planted_brain(raw_result, raw_phantom: PhantomFiles) -> None:  # type: ignore[no-untyped-def]
    result, _ = raw_result
    native_mask = to_native(result.brain_mask, result.record, "t1c", is_label=True).array > 0
    # measured 0.927 at this size (7 × 7 × 11 mm voxels)
    assert dice(native_mask, raw_phantom.brain_truth()) >= 0.9


def test_brain_is_z_scored_and_background_zero(raw_result) -> None:  # type: ignore[no-untyped-def]
    result, _ = raw_result
    brain = result.brain_mask > 0
    for image in result.images.values():
        assert abs(float(image[brain].mean())) < 1e-4 and abs(float(image[brain].std()) - 1.0) < 1e-3
        assert np.all(image[~brain] == 0)


def test_to_native_round_trip_of_the_segmentation(raw_result, raw_phantom: PhantomFiles) -> None:  # type: ignore[no-untyped-def]
    result, _ = raw_result
    native = to_native(result.seg, result.record, "t1c", is_label=True)
    truth = raw_phantom.canonical(raw_phantom.patient.seg)
    assert native.array.shape == truth.shape and native.array.dtype == np.uint8
    assert dice(native.array > 0, truth > 0) >= 0.9  # measured 1.0: the 4 mm output grid is finer than native
    for label in (1, 2, 3):
        if np.any(truth == label):
            assert dice(native.array == label, truth == label) >= 0.8


def test_to_native_of_an_image_is_linear_and_checks_its_input(raw_result) -> None:  # type: ignore[no-untyped-def]
    result, _ = raw_result
    native = to_native(result.images["t2"], result.record, "t2", is_label=False)
    assert native.array.dtype == np.float32 and np.isfinite(native.array).all()
    with pytest.raises(ValueError, match="not on the output grid"):
        to_native(result.images["t2"][:-1], result.record, "t2", is_label=False)
    with pytest.raises(KeyError, match="asl"):
        to_native(result.images["t2"], result.record, "asl", is_label=False)


def test_skull_stripped_preset_keeps_nonzero_brain(stripped_phantom: PhantomFiles) -> None:
    result = preprocess_subject(stripped_phantom.images, seg=stripped_phantom.seg, config=QUICK)
    assert result.record["output_grid"]["space"] == "reference"
    assert [s["name"] for s in result.record["steps"]] == ["read", "coregistration", "coregistration",
                                                           "coregistration", "resample", "skull_strip", "normalize"]
    assert all(s["report"] == {"skipped": "already on the reference grid"}
               for s in result.record["steps"] if s["name"] == "coregistration")
    native = to_native(result.brain_mask, result.record, "t1c", is_label=True).array > 0
    truth = stripped_phantom.canonical(stripped_phantom.patient.images["t1c"]) > 0
    assert dice(native, truth) > 0.97


def _write(path: Path, array: np.ndarray, affine: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path


def test_modality_outside_the_reference_field_of_view_is_named(stripped_phantom: PhantomFiles, tmp_path: Path) -> None:
    img = nib.load(str(stripped_phantom.images["t2"]))
    shifted = img.affine.copy()
    shifted[:3, 3] += 1000.0
    far = _write(tmp_path / "t2_far.nii.gz", np.asarray(img.dataobj), shifted)
    with pytest.raises(InputError, match="field of view of t2 does not overlap the reference t1c") as err:
        preprocess_subject({**stripped_phantom.images, "t2": far}, config=QUICK)
    assert err.value.where == str(far)


def test_all_background_images_are_named(stripped_phantom: PhantomFiles, tmp_path: Path) -> None:
    affine = nib.load(str(stripped_phantom.images["t1"])).affine
    constant = _write(tmp_path / "flat.nii.gz", np.full((20, 20, 20), 7, np.int16), affine)
    with pytest.raises(InputError, match="flair image is all background") as err:
        preprocess_subject({**stripped_phantom.images, "flair": constant}, config=QUICK)
    assert err.value.where == str(constant)
    zero = _write(tmp_path / "zero.nii.gz", np.zeros((20, 20, 20), np.int16), affine)
    with pytest.raises(InputError, match="empty"):
        preprocess_subject({**stripped_phantom.images, "t1": zero}, config=QUICK)


def test_corrupt_file_and_bad_labels_are_named(stripped_phantom: PhantomFiles, tmp_path: Path) -> None:
    broken = tmp_path / "t1.nii.gz"
    broken.write_bytes(gzip.compress(stripped_phantom.images["t1"].read_bytes()[:200]))
    with pytest.raises(InputError) as err:
        preprocess_subject({**stripped_phantom.images, "t1": broken}, config=QUICK)
    assert err.value.where == str(broken)
    img = nib.load(str(stripped_phantom.seg))
    bad = _write(tmp_path / "seg.nii.gz", np.full(img.shape, 9, np.int16), img.affine)
    with pytest.raises(InputError, match="label values \\[9\\]") as err:
        preprocess_subject(stripped_phantom.images, seg=bad, config=QUICK)
    assert err.value.where == str(bad)
    with pytest.raises(ConfigError, match="seg_convention must be one of brats2024, brats2021, got 'brats2'"):
        preprocess_subject(stripped_phantom.images, seg=stripped_phantom.seg, seg_convention="brats2", config=QUICK)


def test_fast_settings_are_valid() -> None:
    assert PreprocessConfig.model_validate(FAST).resample.spacing_mm == (4.0, 4.0, 4.0)
