"""The MNI template from nilearn's bundle: grids, tissue maps, caching, no nilearn.datasets import."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from vbiopsy.data.phantoms.template import FOV_EXTENT_MM, FOV_MIN_MM, load_template, make_grid

from .conftest import SHAPE


def test_default_grid_covers_the_template_field_of_view() -> None:
    grid = make_grid(2.0)
    assert grid.shape == (99, 117, 95) and grid.spacing == (2.0, 2.0, 2.0)
    centre = grid.affine[:3, 3] + np.array(grid.spacing) * (np.array(grid.shape) - 1) / 2
    np.testing.assert_allclose(centre, FOV_MIN_MM + FOV_EXTENT_MM / 2)


def test_explicit_shape_keeps_the_field_of_view() -> None:
    grid = make_grid(shape=SHAPE)
    assert grid.shape == SHAPE
    np.testing.assert_allclose(np.array(grid.spacing) * SHAPE, FOV_EXTENT_MM)


def test_tissue_maps_are_partial_volumes_of_the_brain() -> None:
    template = load_template(make_grid(shape=SHAPE))
    total = template.gm + template.wm + template.csf
    np.testing.assert_allclose(total, template.brain, atol=1e-5)
    for array in (template.gm, template.wm, template.csf, template.brain):
        assert array.min() >= 0 and array.max() <= 1 and array.dtype == np.float32
    litres = template.brain.sum() * np.prod(template.grid.spacing) / 1e6
    assert 1.5 < litres < 2.2
    assert template.gm.sum() > template.wm.sum() > template.csf.sum()
    assert template.depth_mm.max() > 30 and template.depth_mm.min() < -10
    assert load_template(make_grid(shape=SHAPE)) is template


def test_nilearn_datasets_is_never_imported() -> None:
    code = ("import sys; from vbiopsy.data.phantoms.template import load_template, make_grid; "
            "load_template(make_grid(8.0)); print('nilearn.datasets' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
