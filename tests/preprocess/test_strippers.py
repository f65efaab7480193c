"""Skull-stripping plug-ins (mask file, external tools), the empty-mask error, and the SyN backend."""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path
from types import ModuleType

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from vbiopsy.errors import ConfigError, InputError
from vbiopsy.preprocess import PreprocessConfig, make_stripper, preprocess_subject, to_native
from vbiopsy.preprocess.config import SkullStripConfig

from .conftest import FAST, PhantomFiles, dice

BASE = {"bias": {"enabled": False}, "registration": {"enabled": False}, "resample": {"spacing_mm": 7.0}}


def _config(**skull_strip: object) -> PreprocessConfig:
    return PreprocessConfig.model_validate({**BASE, "skull_strip": skull_strip})


def _truth(phantom: PhantomFiles) -> np.ndarray:
    return phantom.canonical(phantom.patient.images["t1c"]) > 0


def test_mask_file_backend_uses_the_users_mask(stripped_phantom: PhantomFiles, tmp_path: Path) -> None:
    img = nib.load(str(stripped_phantom.images["t1c"]))
    mask_path = tmp_path / "brain.nii.gz"
    nib.save(nib.Nifti1Image((np.asarray(img.dataobj) > 0).astype(np.uint8), img.affine), str(mask_path))
    result = preprocess_subject(stripped_phantom.images, config=_config(backend="mask-file", mask_path=mask_path))
    step = next(s for s in result.record["steps"] if s["name"] == "skull_strip")
    assert step["backend"] == "mask-file" and step["report"]["mask_path"] == str(mask_path)
    native = to_native(result.brain_mask, result.record, "t1c", is_label=True).array > 0
    assert dice(native, _truth(stripped_phantom)) > 0.97


def test_empty_brain_mask_is_an_error_naming_the_file(stripped_phantom: PhantomFiles, tmp_path: Path) -> None:
    img = nib.load(str(stripped_phantom.images["t1c"]))
    empty = tmp_path / "empty.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(img.shape, np.uint8), img.affine), str(empty))
    with pytest.raises(InputError, match="brain mask file is empty") as err:
        preprocess_subject(stripped_phantom.images, config=_config(backend="mask-file", mask_path=empty))
    assert err.value.where == str(empty)
    # a mask that lies outside the scan: the mapped mask is empty, reported against the reference scan
    elsewhere = img.affine.copy()
    elsewhere[:3, 3] += 500.0
    far = tmp_path / "far.nii.gz"
    nib.save(nib.Nifti1Image(np.ones(img.shape, np.uint8), elsewhere), str(far))
    with pytest.raises(InputError, match="brain mask is empty") as err:
        preprocess_subject(stripped_phantom.images, config=_config(backend="mask-file", mask_path=far))
    assert err.value.where == str(stripped_phantom.images["t1c"])


FAKE_SYNTHSTRIP = """#!{python}
import json, sys
import nibabel as nib, numpy as np
args = sys.argv[1:]
get = lambda flag: args[args.index(flag) + 1]
img = nib.load(get("-i"))
data = np.asarray(img.dataobj)
nib.save(nib.Nifti1Image((data > 0).astype(np.uint8), img.affine), get("-m"))
open({log!r}, "w").write(json.dumps(args))
"""


def test_synthstrip_backend_runs_the_installed_tool_with_weights(stripped_phantom: PhantomFiles, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "argv.json"
    tool = bin_dir / "mri_synthstrip"
    tool.write_text(FAKE_SYNTHSTRIP.format(python=sys.executable, log=str(log)))
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    weights = tmp_path / "synthstrip.1.pt"
    weights.write_bytes(b"weights")
    monkeypatch.setenv("PATH", f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin")
    result = preprocess_subject(stripped_phantom.images, config=_config(backend="synthstrip", weights_path=weights))
    argv = json.loads(log.read_text())
    assert argv[argv.index("--model") + 1] == str(weights)
    native = to_native(result.brain_mask, result.record, "t1c", is_label=True).array > 0
    assert dice(native, _truth(stripped_phantom)) > 0.97


def test_missing_tool_and_weights_errors(stripped_phantom: PhantomFiles, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ConfigError, match="'hd-bet', which is not installed"):
        preprocess_subject(stripped_phantom.images, config=_config(backend="hd-bet"))
    with pytest.raises(ConfigError, match="hd-bet has no command-line option for weights"):
        make_stripper(SkullStripConfig(backend="hd-bet", weights_path=Path("w")))
    custom = make_stripper(SkullStripConfig(backend="hd-bet", weights_path=Path("w"),
                                            command=("my-hdbet", "{input}", "{mask}", "--params", "{weights}")))
    argv, mask = custom.command(Path("/tmp/x"))  # type: ignore[union-attr]
    assert argv == ["my-hdbet", "/tmp/x/input.nii.gz", "/tmp/x/mask.nii.gz", "--params", "w"]
    assert mask == Path("/tmp/x/mask.nii.gz")


def test_syn_without_antspy_says_how_to_install(stripped_phantom: PhantomFiles, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ants", None)  # import ants → ImportError
    config = PreprocessConfig.model_validate({**FAST, "registration": {**FAST["registration"], "backend": "syn"}})
    with pytest.raises(ConfigError, match="pip install antspyx"):
        preprocess_subject(stripped_phantom.images, config=config)


def _fake_ants(shift_mm: float) -> ModuleType:
    """A stand-in for ANTsPy whose SyN is a constant displacement of ``shift_mm`` (x) and its inverse."""
    module = ModuleType("ants")

    def registration(fixed: str, moving: str, type_of_transform: str, outprefix: str) -> dict:
        assert type_of_transform == "SyNOnly"
        ref = sitk.ReadImage(fixed)
        paths = []
        for name, value in (("1Warp.nii.gz", shift_mm), ("1InverseWarp.nii.gz", -shift_mm)):
            field = np.zeros(ref.GetSize()[::-1] + (3,), dtype=np.float64)
            field[..., 0] = value
            image = sitk.GetImageFromArray(field, isVector=True)
            image.CopyInformation(ref)
            sitk.WriteImage(image, outprefix + name)
            paths.append(outprefix + name)
        return {"fwdtransforms": [paths[0]], "invtransforms": [paths[1]]}

    module.image_read = lambda path: path  # type: ignore[attr-defined]
    module.registration = registration  # type: ignore[attr-defined]
    return module


def test_syn_backend_records_fields_and_maps_back(raw_phantom: PhantomFiles, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ants", _fake_ants(10.0))
    config = PreprocessConfig.model_validate({**FAST, "registration": {**FAST["registration"], "backend": "syn",
                                                                       "syn_field_spacing_mm": 8.0},
                                              "bias": {"enabled": False}, "skull_strip": {"backend": "none"}})
    result = preprocess_subject(raw_phantom.images, seg=raw_phantom.seg, config=config)
    assert result.brain_mask is None
    chain = result.record["transforms"]["t1c"]
    assert [t["type"] for t in chain] == ["DisplacementFieldTransform", "AffineTransform", "IdentityTransform"]
    assert chain[0]["inverse"]["type"] == "DisplacementFieldTransform"
    json.dumps(result.record)
    native = to_native(result.seg, result.record, "t1c", is_label=True).array
    truth = raw_phantom.canonical(raw_phantom.patient.seg)
    assert dice(native > 0, truth > 0) >= 0.9
