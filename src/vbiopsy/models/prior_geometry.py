"""Where the tumour prior lies and how big it is, as a few numbers the diagnoser's head can read.

The clinical cues that separate intracranial tumour types are partly *where* the lesion sits
(midline pineal/suprasellar germinoma, periventricular lymphoma, grey–white junction
metastasis) and *how large* it is. Masked channel attention pools features over the prior but
keeps no trace of its position, and global average pooling discards position by construction;
these features hand the head the prior's geometry directly.

For a prior ``M`` (B, 1, X, Y, Z) in [0, 1] on the working grid (a box around the brain, so grid
coordinates are brain-relative; axis 0 is left–right and the box is centred on the brain, so
``x = 0`` is about the midline), with voxel-centre coordinates in [−1, 1] per axis and
``w = M / ΣM``:

========  =============================================================
index     feature
========  =============================================================
0–2       centroid ``Σ w·(x, y, z)`` (grid-half units)
3         ``|centroid x|`` (distance from the midline)
4–6       spread ``sqrt(Σ w·(p − centroid)²)`` per axis
7         ``log(ΣM / N + 1e-4) / 4`` (log volume fraction, N voxels; ≈ −2.3 … 0)
========  =============================================================

An all-zero prior gives zeros for 0–6 and ``log(1e-4) / 4`` for 7 (the diagnoser replaces an
empty prior by the whole brain before calling this).
"""

from __future__ import annotations

import torch
from torch import Tensor

from vbiopsy.errors import InputError

N_GEOMETRY_FEATURES = 8
VOLUME_EPS = 1e-4
VOLUME_SCALE = 4.0


def grid_coordinates(shape: tuple[int, int, int], like: Tensor) -> Tensor:
    """(3, X, Y, Z) voxel-centre coordinates in [−1, 1] per axis (0 for an axis of one voxel)."""
    axes = [(torch.arange(n, dtype=like.dtype, device=like.device) + 0.5) / n * 2.0 - 1.0 for n in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"))


def prior_geometry(prior: Tensor) -> Tensor:
    """(B, 8) geometry features of ``prior`` (B, 1, X, Y, Z) in [0, 1] (see the module table)."""
    if not isinstance(prior, Tensor) or prior.dim() != 5 or prior.shape[1] != 1 or not prior.is_floating_point():
        got = tuple(prior.shape) if isinstance(prior, Tensor) else type(prior).__name__
        raise InputError("prior", f"expected a float tensor (B, 1, X, Y, Z), got {got}")
    mass = prior[:, 0]
    total = mass.sum(dim=(1, 2, 3))
    weights = mass / total.clamp_min(torch.finfo(mass.dtype).tiny)[:, None, None, None]
    coords = grid_coordinates(tuple(int(n) for n in mass.shape[1:]), mass)  # type: ignore[arg-type]
    centroid = torch.einsum("bxyz,cxyz->bc", weights, coords)
    spread = torch.einsum("bxyz,bcxyz->bc", weights, (coords[None] - centroid[:, :, None, None, None]) ** 2)
    fraction = total / mass[0].numel()
    volume = torch.log(fraction + VOLUME_EPS) / VOLUME_SCALE
    return torch.cat([centroid, centroid[:, :1].abs(), spread.clamp_min(0).sqrt(), volume[:, None]], dim=1)
