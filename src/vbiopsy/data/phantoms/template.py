"""The anatomical template: MNI ICBM152 2009a tissue maps (bundled with nilearn) on a target grid.

The 1 mm template files ship inside the installed ``nilearn`` package; they are located through
``importlib`` (importing ``nilearn.datasets`` takes seconds and may try to download) and read with
nibabel. The T1 template is skull-stripped, so ``T1 > 0`` is the brain mask; CSF is what is left
of the brain once grey- and white-matter partial volumes are removed.

Maps are resampled to the target grid with an anti-aliasing Gaussian (σ = 0.4 × step) and
trilinear interpolation, and cached per grid within the process.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from vbiopsy.data.nifti import Grid
from vbiopsy.errors import ConfigError

TEMPLATE_NAME = "MNI ICBM152 2009a nonlinear symmetric (nilearn bundle)"
TEMPLATE_FILES: dict[str, str] = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}
TEMPLATE_SHAPE: tuple[int, int, int] = (197, 233, 189)
TEMPLATE_ORIGIN_MM: tuple[float, float, float] = (-98.0, -134.0, -72.0)
"""World position (mm, RAS) of the 1 mm template's voxel (0, 0, 0)."""

FOV_MIN_MM = np.array(TEMPLATE_ORIGIN_MM) - 0.5
FOV_EXTENT_MM = np.array(TEMPLATE_SHAPE, dtype=float)
"""The template's field of view: edges of its first voxel and size in mm; every grid covers it."""

REFERENCE_SPACING_MM = 4.0
"""Grid on which tumour sites are sampled, fixed so latent draws do not depend on the output grid."""


def template_dir() -> Path:
    """Folder of nilearn's bundled data files (found without importing ``nilearn.datasets``)."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("nilearn is not installed; the phantom generator needs its bundled MNI ICBM152 template")
    folder = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"
    missing = [name for name in TEMPLATE_FILES.values() if not (folder / name).is_file()]
    if missing:
        raise ConfigError(f"nilearn at {folder.parent.parent} lacks the MNI template file {missing[0]}")
    return folder


def make_grid(spacing_mm: float = 2.0, shape: tuple[int, int, int] | None = None) -> Grid:
    """Canonical RAS grid over the template's field of view.

    With ``shape`` each axis has spacing ``extent / shape`` (nearly isotropic); otherwise the
    spacing is ``spacing_mm`` and the shape ``ceil(extent / spacing)``, centred on the field of view.
    """
    if shape is None:
        dims = tuple(int(math.ceil(e / spacing_mm - 1e-9)) for e in FOV_EXTENT_MM)
        steps = np.full(3, float(spacing_mm))
    else:
        dims = tuple(int(s) for s in shape)
        steps = FOV_EXTENT_MM / np.array(dims, dtype=float)
    centre = FOV_MIN_MM + FOV_EXTENT_MM / 2.0
    affine = np.eye(4)
    affine[:3, :3] = np.diag(steps)
    affine[:3, 3] = centre - steps * (np.array(dims) - 1) / 2.0
    return Grid(dims, affine)  # type: ignore[arg-type]


def axis_coordinates(grid: Grid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World coordinates (mm) of the voxel centres along each axis of an axis-aligned grid."""
    diag = np.diag(grid.affine)[:3]
    return tuple(  # type: ignore[return-value]
        (grid.affine[i, 3] + diag[i] * np.arange(grid.shape[i])).astype(np.float32) for i in range(3)
    )


@dataclass(frozen=True)
class Template:
    """Tissue maps on one grid (each float32, shape ``grid.shape``).

    ``gm``, ``wm``, ``csf`` are partial volumes in [0, 1] summing to ``brain``; ``depth_mm`` is the
    signed distance to the brain surface (positive inside, negative outside), used for the skull
    shell of raw scans and for site selection.
    """

    grid: Grid
    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    brain: np.ndarray
    depth_mm: np.ndarray

    def world_to_index(self, points_mm: np.ndarray) -> np.ndarray:
        """Fractional voxel indices (…, 3) of world points (…, 3) in mm."""
        inv = np.linalg.inv(self.grid.affine)
        return points_mm @ inv[:3, :3].T + inv[:3, 3]


def _template_1mm() -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The three 1 mm maps as float32 in [0, 1] (T1 only as a brain mask) and their affine.

    Not cached: reading takes < 0.1 s and the maps (100 MB) are only needed to build a grid's template.
    """
    folder = template_dir()
    maps: dict[str, np.ndarray] = {}
    affine = np.eye(4)
    for key, name in TEMPLATE_FILES.items():
        img = nib.load(str(folder / name))
        data = np.asarray(img.dataobj, dtype=np.float32)
        if data.shape != TEMPLATE_SHAPE:
            raise ConfigError(f"{folder / name}: expected shape {TEMPLATE_SHAPE}, got {data.shape}")
        affine = img.affine  # type: ignore[attr-defined]
        maps[key] = (data > 0).astype(np.float32) if key == "t1" else data / 255.0
    return {"brain": maps["t1"], "gm": maps["gm"], "wm": maps["wm"]}, affine


def _resample(volume: np.ndarray, source_affine: np.ndarray, grid: Grid) -> np.ndarray:
    """Anti-aliased trilinear resampling of an axis-aligned volume onto ``grid`` (zero outside)."""
    index_map = np.linalg.inv(source_affine) @ grid.affine
    steps = np.abs(np.diag(index_map)[:3])
    sigma = [0.4 * s if s > 1.0 else 0.0 for s in steps]
    smooth = ndimage.gaussian_filter(volume, sigma, mode="constant") if any(sigma) else volume
    out = ndimage.affine_transform(smooth, np.diag(index_map)[:3], offset=index_map[:3, 3],
                                   output_shape=grid.shape, order=1, mode="constant", cval=0.0)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def signed_depth(mask: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """Signed distance (mm) to the boundary of a boolean mask: positive inside, negative outside."""
    inside = ndimage.distance_transform_edt(mask, sampling=spacing)
    outside = ndimage.distance_transform_edt(~mask, sampling=spacing)
    return (inside - outside).astype(np.float32)


_CACHE: dict[tuple[object, ...], Template] = {}
"""Templates made in this process, keyed by grid (few grids are used; the CLI uses one)."""


def _key(grid: Grid) -> tuple[object, ...]:
    return tuple(int(s) for s in grid.shape), tuple(round(float(v), 6) for v in grid.affine.ravel())


def _build(grid: Grid) -> Template:
    """Resample the 1 mm maps onto ``grid``; trim GM/WM to the brain mask so the classes sum to it."""
    maps, source_affine = _template_1mm()
    brain = _resample(maps["brain"], source_affine, grid)
    gm = np.minimum(_resample(maps["gm"], source_affine, grid), brain)
    wm = np.minimum(_resample(maps["wm"], source_affine, grid), brain)
    excess = np.maximum(gm + wm - brain, 0.0)  # partial volumes may overshoot the mask at its edge
    share = np.divide(gm, gm + wm, out=np.full_like(gm, 0.5), where=(gm + wm) > 0)
    gm -= excess * share
    wm -= excess * (1.0 - share)
    csf = np.clip(brain - gm - wm, 0.0, 1.0)
    depth = signed_depth(brain > 0.5, grid.spacing)
    for array in (gm, wm, csf, brain, depth):
        array.setflags(write=False)
    return Template(grid, gm, wm, csf, brain, depth)


def load_template(grid: Grid) -> Template:
    """Tissue maps resampled onto ``grid`` (cached per grid within the process; arrays are read-only)."""
    key = _key(grid)
    if key not in _CACHE:
        _CACHE[key] = _build(grid)
    return _CACHE[key]


def adopt_template(template: Template) -> None:
    """Put a template made elsewhere (e.g. by the parent of a worker process) into this process's cache."""
    _CACHE[_key(template.grid)] = template


def reference_template() -> Template:
    """The template on the fixed 4 mm grid used to choose tumour sites."""
    return load_template(make_grid(REFERENCE_SPACING_MM))
