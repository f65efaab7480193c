"""Layout readers: turn a cohort folder (or a hand-written CSV) into a :class:`Manifest`.

``read_cohort(path)`` detects the layout; ``layout=`` forces one. Known layouts: ``csv``
(a manifest file, or a folder holding ``manifest.csv``), ``ucsf-pdgm``, ``brats2021``
(BraTS 2018–2021 names) and ``brats2024`` (BraTS 2023/2024 names).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from vbiopsy.data.layouts import brats, ucsf_pdgm
from vbiopsy.data.manifest import Manifest, read_manifest_csv
from vbiopsy.errors import CohortError, ConfigError, InputError

Reader = Callable[[Path, "Path | None"], "tuple[Manifest, list[str]]"]

LAYOUTS: dict[str, tuple[Callable[[Path], bool], Reader]] = {
    "ucsf-pdgm": (ucsf_pdgm.matches, ucsf_pdgm.read),
    "brats2024": (brats.matches_modern, brats.read_modern),
    "brats2021": (brats.matches_legacy, brats.read_legacy),
}
LAYOUT_NAMES: tuple[str, ...] = ("csv", *LAYOUTS)


def detect_layout(path: str | Path) -> str:
    """Name of the layout of ``path``; raises :class:`InputError` if none fits."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "cohort not found")
    if path.is_file():
        if path.suffix.lower() in {".csv", ".tsv"}:
            return "csv"
        raise InputError(path, "a cohort is a folder or a manifest .csv file")
    if (path / "manifest.csv").is_file():
        return "csv"
    try:
        entries = list(path.iterdir())
    except PermissionError:
        raise InputError(path, "folder is not readable") from None
    if not entries:
        raise InputError(path, "cohort folder is empty")
    for name, (matches, _) in LAYOUTS.items():
        if matches(path):
            return name
    raise InputError(
        path,
        "no known cohort layout found (expected UCSF-PDGM-XXXX_nifti/ folders, BraTS case folders, "
        "or a manifest.csv)",
    )


def read_cohort_with_problems(
    path: str | Path, *, layout: str = "auto", clinical: str | Path | None = None,
) -> tuple[Manifest, list[str]]:
    """Read a cohort and return its manifest plus a list of problems found in its tables."""
    path = Path(path).absolute()
    name = detect_layout(path) if layout == "auto" else layout
    if name not in LAYOUT_NAMES:
        raise ConfigError(f"unknown layout {layout!r}; expected auto or one of {', '.join(LAYOUT_NAMES)}")
    if not path.exists():
        raise InputError(path, "cohort not found")
    if name == "csv":
        if clinical is not None:
            raise ConfigError("--clinical is for folder layouts; put clinical columns in the manifest CSV")
        return read_manifest_csv(path / "manifest.csv" if path.is_dir() else path)
    if not path.is_dir():
        raise InputError(path, f"the {name} layout is a folder")
    _, reader = LAYOUTS[name]
    return reader(path, Path(clinical) if clinical is not None else None)


def read_cohort(path: str | Path, *, layout: str = "auto", clinical: str | Path | None = None) -> Manifest:
    """Read a cohort; raise :class:`CohortError` listing every problem in its tables."""
    manifest, problems = read_cohort_with_problems(path, layout=layout, clinical=clinical)
    if problems:
        raise CohortError(problems)
    return manifest


__all__ = ["LAYOUT_NAMES", "detect_layout", "read_cohort", "read_cohort_with_problems"]
