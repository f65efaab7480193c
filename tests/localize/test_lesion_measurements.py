"""Lesion measurements from a tumour-centred crop: compartments of a ring-enhancing phantom lesion against their
analytic volumes, the choice of the central component, missing modalities and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from vbiopsy.errors import ConfigError, InputError
from vbiopsy.localize.lesion_measurements import (MEASUREMENTS, central_component, lesion_compartments,
                                                  lesion_measurements)

SHAPE = (32, 32, 32)
SPACING = 2.0


def _radius(centre: tuple[float, float, float] = (15.5, 15.5, 15.5)) -> np.ndarray:
    grid = np.indices(SHAPE).astype(float)
    return np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, centre)))


def _ring_lesion(necrosis_r: float = 4.0, core_r: float = 7.0, oedema_r: float = 11.0) -> dict[str, np.ndarray]:
    """z-scored images: an enhancing shell (T1c 3) around a necrotic centre (T1c −0.5, T2 2.5), FLAIR 2 out to
    ``oedema_r`` voxels, T2 1.6 in the solid shell, T1 −1 in the core."""
    r = _radius()
    necrosis, core, oedema = r <= necrosis_r, r <= core_r, r <= oedema_r
    t1c = np.where(core & ~necrosis, 3.0, np.where(necrosis, -0.5, 0.0))
    flair = np.where(oedema & ~necrosis, 2.0, 0.0)
    t2 = np.where(necrosis, 2.5, np.where(core, 1.6, np.where(oedema, 1.2, 0.0)))
    t1 = np.where(core, -1.0, 0.0)
    return {"t1": t1, "t1c": t1c, "t2": t2, "flair": flair}


def test_measurements_of_a_ring_enhancing_lesion_match_its_compartments() -> None:
    images = _ring_lesion()
    values = dict(zip(MEASUREMENTS, lesion_measurements(images, SPACING)))
    r = _radius()
    ml = SPACING ** 3 / 1000.0
    core, necrosis, oedema = (r <= 7).sum(), (r <= 4).sum(), (r <= 11).sum() - (r <= 7).sum()
    assert values["core_log_ml"] == pytest.approx(np.log1p(core * ml), abs=1e-6)  # holes filled: the whole core
    assert values["necrosis_log_ml"] == pytest.approx(np.log1p(necrosis * ml), abs=1e-6)
    assert values["enhancing_log_ml"] == pytest.approx(np.log1p((core - necrosis) * ml), abs=1e-6)
    assert values["necrosis_share"] == pytest.approx(necrosis / core, abs=1e-6)
    # FLAIR is dark in the necrosis (a hole inside the abnormality): the abnormal component excludes it
    assert values["flair_abnormal_log_ml"] == pytest.approx(np.log1p(((r <= 11).sum() - necrosis) * ml), abs=1e-6)
    assert values["oedema_log_ml"] == pytest.approx(np.log1p(oedema * ml), abs=1e-6)
    assert values["flair_to_core_log_ratio"] == pytest.approx(values["flair_abnormal_log_ml"] - values["core_log_ml"])
    assert values["t2_abnormal_log_ml"] == pytest.approx(np.log1p((r <= 11).sum() * ml), abs=1e-6)
    # medians inside the core: the shell outnumbers the necrosis, so the shell's value
    assert (values["core_t1c"], values["core_t2"], values["core_t1"], values["core_flair"]) == (3.0, 1.6, -1.0, 2.0)
    assert values["core_t1c_spread"] == pytest.approx(images["t1c"][r <= 7].std(), rel=1e-5)


def test_a_bigger_oedema_and_core_read_as_bigger() -> None:
    small = dict(zip(MEASUREMENTS, lesion_measurements(_ring_lesion(2.0, 4.0, 6.0), SPACING)))
    large = dict(zip(MEASUREMENTS, lesion_measurements(_ring_lesion(4.0, 7.0, 14.0), SPACING)))
    for name in ("core_log_ml", "necrosis_log_ml", "oedema_log_ml", "flair_to_core_log_ratio"):
        assert large[name] > small[name], name


def test_the_central_component_wins_over_a_larger_one_at_the_edge() -> None:
    mask = np.zeros(SHAPE, bool)
    mask[14:18, 14:18, 14:18] = True  # 64 voxels at the centre
    mask[0:8, 0:8, 0:8] = True  # 512 voxels in a corner, ~50 mm away at 2 mm
    chosen = central_component(mask, SPACING)
    assert chosen.sum() == 64 and chosen[15, 15, 15]
    assert not central_component(np.zeros(SHAPE, bool), SPACING).any()
    # near the centre the bigger one wins
    mask[:] = False
    mask[14:16, 14:16, 14:16] = True
    mask[17:25, 17:25, 17:25] = True
    assert central_component(mask, SPACING).sum() == 512


def test_compartments_are_nested_and_disjoint_where_they_should_be() -> None:
    images = _ring_lesion()
    parts = lesion_compartments(images["t1c"], images["flair"], SPACING)
    assert not (parts["necrosis"] & parts["enhancing"]).any()
    assert np.array_equal(parts["necrosis"] | parts["enhancing"], parts["core"])
    assert not (parts["oedema"] & parts["core"]).any()


def test_missing_optional_modalities_and_a_missing_core_give_nan_not_errors() -> None:
    images = _ring_lesion()
    values = dict(zip(MEASUREMENTS, lesion_measurements({"t1c": images["t1c"], "flair": images["flair"]}, SPACING)))
    assert np.isnan(values["core_t1"]) and np.isnan(values["core_t2"]) and np.isnan(values["t2_abnormal_log_ml"])
    assert np.isfinite(values["core_t1c"]) and np.isfinite(values["oedema_log_ml"])
    flat = {"t1c": np.zeros(SHAPE), "flair": np.zeros(SHAPE)}
    values = dict(zip(MEASUREMENTS, lesion_measurements(flat, SPACING)))
    assert values["core_log_ml"] == 0.0 and values["oedema_log_ml"] == 0.0
    assert np.isnan(values["necrosis_share"]) and np.isnan(values["core_t1c"])


def test_bad_input_names_the_problem() -> None:
    images = _ring_lesion()
    with pytest.raises(ConfigError, match="missing: flair"):
        lesion_measurements({"t1c": images["t1c"]}, SPACING)
    with pytest.raises(InputError, match="lesion crop t2"):
        lesion_measurements({**images, "t2": images["t2"][:-1]}, SPACING)
    with pytest.raises(InputError, match="lesion crop flair"):
        lesion_measurements({**images, "flair": np.full(SHAPE, np.nan)}, SPACING)
    with pytest.raises(ConfigError, match="spacing_mm"):
        lesion_measurements(images, 0.0)
