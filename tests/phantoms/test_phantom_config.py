"""PhantomConfig: defaults, normalisation and errors that name the bad value."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from vbiopsy.data.phantoms import PhantomConfig
from vbiopsy.data.schema import MODALITIES


def test_defaults() -> None:
    cfg = PhantomConfig(n_patients=3)
    assert cfg.seed == 0 and cfg.spacing_mm == 2.0 and cfg.shape is None
    assert cfg.layout == "ucsf-pdgm" and cfg.modalities == MODALITIES and not cfg.raw
    assert cfg.diagnosis_mix == {"glioma": 0.7, "lymphoma": 0.1, "germinoma": 0.1, "other": 0.1}
    assert cfg.resection_cavity_prob == 0.0


def test_modalities_are_normalised_to_canonical_order() -> None:
    assert PhantomConfig(n_patients=1, modalities="FLAIR, t1c").modalities == ("t1c", "flair")
    assert PhantomConfig(n_patients=1, diagnosis_mix={"glioma": 1.0}).diagnosis_mix["lymphoma"] == 0.0


def test_config_is_frozen_and_round_trips() -> None:
    cfg = PhantomConfig(n_patients=2, layout="brats2024", resection_cavity_prob=0.3, shape=(16, 16, 16))
    with pytest.raises(ValidationError):
        cfg.seed = 3  # type: ignore[misc]
    assert PhantomConfig.model_validate(cfg.model_dump(mode="json")) == cfg


@pytest.mark.parametrize("kwargs, needles", [
    ({"n_patients": 0}, ["n_patients", "got 0"]),
    ({"spacing_mm": 0.1}, ["spacing_mm", "0.1"]),
    ({"spacing_mm": "banana"}, ["spacing_mm", "banana"]),
    ({"shape": (4, 32, 32)}, ["shape", "(4, 32, 32)"]),
    ({"modalities": ("t1", "dwi")}, ["modalit", "'dwi'"]),
    ({"modalities": ("t1", "t1")}, ["modalities", "repeat"]),
    ({"diagnosis_mix": {"glioma": 0.5}}, ["diagnosis_mix", "0.5"]),
    ({"diagnosis_mix": {"glioma": 0.9, "meningioma": 0.1}}, ["diagnosis_mix", "'meningioma'"]),
    ({"diagnosis_mix": {"glioma": 1.5, "other": -0.5}}, ["diagnosis_mix", "-0.5"]),
    ({"layout": "nifti"}, ["layout", "nifti"]),
    ({"noise_level": 0.9}, ["noise_level", "0.9"]),
    ({"bias_strength": -1}, ["bias_strength", "-1"]),
    ({"deformation_mm": 50}, ["deformation_mm", "50"]),
    ({"resection_cavity_prob": 1.5, "layout": "brats2024"}, ["resection_cavity_prob", "1.5"]),
    ({"colour": "red"}, ["colour", "red"]),
])
def test_errors_name_the_field_and_value(kwargs: dict[str, Any], needles: list[str]) -> None:
    with pytest.raises(ValidationError) as info:
        PhantomConfig(**{"n_patients": 2, **kwargs})
    text = str(info.value)
    for needle in needles:
        assert needle in text, (needle, text)


def test_resection_cavity_needs_the_brats2024_layout() -> None:
    with pytest.raises(ValidationError) as info:
        PhantomConfig(n_patients=2, resection_cavity_prob=0.25)
    text = str(info.value)
    assert "0.25" in text and "brats2024" in text and "no resection-cavity label" in text
    assert PhantomConfig(n_patients=2, resection_cavity_prob=0.25, layout="brats2024").resection_cavity_prob == 0.25
