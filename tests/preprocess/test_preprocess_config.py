"""PreprocessConfig: defaults, presets, and errors that name the bad key and value."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from vbiopsy.config import build_config
from vbiopsy.errors import ConfigError
from vbiopsy.preprocess import PreprocessConfig


def test_defaults_run_every_step_for_raw_scans() -> None:
    config = PreprocessConfig()
    assert config.bias.enabled and config.coregistration.enabled and config.registration.enabled
    assert config.skull_strip.backend == "template" and config.normalize.enabled
    assert config.resample.spacing_mm == (1.0, 1.0, 1.0)
    assert config.coregistration.reference == "t1c"


def test_skull_stripped_preset_turns_off_template_steps() -> None:
    config = PreprocessConfig.skull_stripped()
    assert not config.registration.enabled
    assert config.skull_strip.backend == "nonzero" and config.bias.mask == "nonzero"


def test_scalar_spacing_means_isotropic() -> None:
    assert PreprocessConfig.model_validate({"resample": {"spacing_mm": 2}}).resample.spacing_mm == (2.0, 2.0, 2.0)


@pytest.mark.parametrize(("data", "key", "value"), [
    ({"resample": {"spacing_mm": [1, 1, 0]}}, "resample.spacing_mm", "0"),
    ({"bias": {"shrink_factor": 0}}, "bias.shrink_factor", "0"),
    ({"bias": {"iterations": [50, -1]}}, "bias.iterations", "-1"),
    ({"coregistration": {"reference": "dwi"}}, "coregistration.reference", "'dwi'"),
    ({"registration": {"backend": "bspline"}}, "registration.backend", "'bspline'"),
    ({"normalize": {"upper_percentile": 101}}, "normalize.upper_percentile", "101"),
    ({"skull_strip": {"backend": "bet"}}, "skull_strip.backend", "'bet'"),
    ({"min_fov_overlap": 0}, "min_fov_overlap", "0"),
])
def test_bad_values_are_named_with_key_and_value(data: dict, key: str, value: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_config(PreprocessConfig, data, "pre.yaml")
    message = str(err.value)
    assert f"pre.yaml: {key}" in message and value in message


def test_unknown_key_is_rejected() -> None:
    with pytest.raises(ValidationError, match="n4_iterations"):
        PreprocessConfig.model_validate({"n4_iterations": 3})


def test_mask_file_backend_needs_a_mask_path() -> None:
    with pytest.raises(ValidationError, match="mask_path"):
        PreprocessConfig.model_validate({"skull_strip": {"backend": "mask-file"}})


def test_weights_only_for_external_tools() -> None:
    with pytest.raises(ValidationError, match="weights_path/command are only used by hd-bet or synthstrip"):
        PreprocessConfig.model_validate({"skull_strip": {"backend": "template", "weights_path": "w.pt"}})


def test_template_mask_needs_a_template() -> None:
    with pytest.raises(ValidationError, match="template_mask='m.nii.gz' needs template"):
        PreprocessConfig.model_validate({"registration": {"template_mask": "m.nii.gz"}})
