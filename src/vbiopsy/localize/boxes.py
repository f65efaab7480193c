"""Slice box proposals: the one interface every proposal source (built-in, VLM) implements.

A proposer looks at the axial slices of a prepared scan (:class:`~vbiopsy.localize.scan.Scan`)
and returns, for every slice ``z`` of the (X, Y, Z) volume, zero or more boxes in voxel
coordinates with a confidence. Boxes are half-open index ranges ``[x0, x1) × [y0, y1)`` on the
axial slice ``array[:, :, z]`` (axis 0 left→right, axis 1 posterior→anterior in canonical RAS).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from vbiopsy.errors import VbiopsyError

if TYPE_CHECKING:
    from vbiopsy.localize.scan import Scan


class ProposalError(VbiopsyError):
    """A proposal source could not produce boxes (endpoint down, timed out, answered garbage)."""


@dataclass(frozen=True)
class Box:
    """One axis-aligned box on an axial slice: ``[x0, x1) × [y0, y1)`` voxels, ``confidence`` in (0, 1]."""

    x0: int
    y0: int
    x1: int
    y1: int
    confidence: float = 1.0

    def __post_init__(self) -> None:
        for name in ("x0", "y0", "x1", "y1"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"Box {name} must be an integer voxel index, got {value!r}")
            object.__setattr__(self, name, int(value))
        if self.x0 < 0 or self.y0 < 0 or self.x1 <= self.x0 or self.y1 <= self.y0:
            raise ValueError(f"Box must satisfy 0 <= x0 < x1 and 0 <= y0 < y1, got "
                             f"x {self.x0}..{self.x1}, y {self.y0}..{self.y1}")
        conf = float(self.confidence)
        if not np.isfinite(conf) or not 0.0 < conf <= 1.0:
            raise ValueError(f"Box confidence must be in (0, 1], got {self.confidence!r}")
        object.__setattr__(self, "confidence", conf)

    @property
    def area(self) -> int:
        """Number of voxels the box covers on its slice."""
        return (self.x1 - self.x0) * (self.y1 - self.y0)

    def shifted(self, dx: int, dy: int) -> Box:
        """The same box moved by ``(dx, dy)`` voxels (e.g. from a cropped grid back to the full one)."""
        return Box(self.x0 + dx, self.y0 + dy, self.x1 + dx, self.y1 + dy, self.confidence)

    def to_dict(self) -> dict[str, float]:
        return {"x0": self.x0, "y0": self.y0, "x1": self.x1, "y1": self.y1, "confidence": round(self.confidence, 4)}


@dataclass(frozen=True)
class SliceBoxes:
    """The boxes proposed on axial slice ``z`` (possibly none)."""

    z: int
    boxes: tuple[Box, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.z, bool) or not isinstance(self.z, (int, np.integer)) or self.z < 0:
            raise ValueError(f"SliceBoxes z must be a slice index >= 0, got {self.z!r}")
        object.__setattr__(self, "z", int(self.z))
        object.__setattr__(self, "boxes", tuple(self.boxes))


@dataclass(frozen=True)
class Proposals:
    """Boxes for every axial slice of one scan, the source that made them and what it recorded.

    ``slices[z]`` holds slice ``z``; ``shape`` is the (X, Y, Z) grid the boxes live on.
    """

    shape: tuple[int, int, int]
    slices: tuple[SliceBoxes, ...]
    source: str
    record: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        shape = tuple(int(s) for s in self.shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"Proposals shape must be 3 positive sizes, got {self.shape!r}")
        object.__setattr__(self, "shape", shape)
        slices = tuple(self.slices)
        if len(slices) != shape[2] or any(s.z != k for k, s in enumerate(slices)):
            raise ValueError(f"Proposals need one SliceBoxes per axial slice 0..{shape[2] - 1} in order, "
                             f"got z = {[s.z for s in slices][:8]}…")
        for s in slices:
            for box in s.boxes:
                if box.x1 > shape[0] or box.y1 > shape[1]:
                    raise ValueError(f"box x {box.x0}..{box.x1}, y {box.y0}..{box.y1} on slice {s.z} "
                                     f"leaves the slice of {shape[0]}x{shape[1]} voxels")
        object.__setattr__(self, "slices", slices)

    @classmethod
    def from_boxes(cls, shape: tuple[int, int, int], boxes: dict[int, Iterable[Box]], source: str,
                   record: dict[str, Any] | None = None) -> Proposals:
        """Build from ``{z: boxes}`` (slices not named get no box)."""
        slices = tuple(SliceBoxes(z, tuple(boxes.get(z, ()))) for z in range(int(shape[2])))
        return cls(shape, slices, source, dict(record or {}))

    @property
    def n_boxes(self) -> int:
        return sum(len(s.boxes) for s in self.slices)

    @property
    def empty(self) -> bool:
        """True when no slice has a box (nothing abnormal was proposed)."""
        return self.n_boxes == 0

    def embedded(self, offset: tuple[int, int, int], shape: tuple[int, int, int]) -> Proposals:
        """These proposals (made on a crop starting at ``offset``) placed on the full grid ``shape``."""
        moved: dict[int, list[Box]] = {}
        for s in self.slices:
            if s.boxes:
                moved[s.z + int(offset[2])] = [b.shifted(int(offset[0]), int(offset[1])) for b in s.boxes]
        return Proposals.from_boxes(shape, moved, self.source, self.record)

    def summary(self) -> dict[str, Any]:
        """JSON-ready description: source, counts and the boxes per non-empty slice."""
        return {"source": self.source, "n_boxes": self.n_boxes,
                "n_slices_with_boxes": sum(1 for s in self.slices if s.boxes),
                "boxes": {str(s.z): [b.to_dict() for b in s.boxes] for s in self.slices if s.boxes},
                **self.record}


def stack_boxes(proposals: Proposals) -> np.ndarray:
    """The (X, Y, Z) float32 volume of box confidences (max where boxes overlap, 0 elsewhere)."""
    volume = np.zeros(proposals.shape, dtype=np.float32)
    for s in proposals.slices:
        for b in s.boxes:
            view = volume[b.x0:b.x1, b.y0:b.y1, s.z]
            np.maximum(view, b.confidence, out=view)
    return volume


@runtime_checkable
class SliceProposer(Protocol):
    """A source of per-axial-slice tumour boxes.

    ``name`` identifies the source in records; ``propose`` returns one :class:`SliceBoxes` per
    axial slice of ``scan`` (on the scan's grid) or raises :class:`ProposalError` when it cannot.
    """

    name: str

    def propose(self, scan: Scan) -> Proposals:
        ...
