"""Skull-stripping backends behind one interface, chosen by ``SkullStripConfig.backend``.

Every backend gets the same :class:`StripInputs` and returns a boolean brain mask on the output
grid plus a JSON-able report:

* ``template`` — built in, no weights: template mask propagation + intensity refinement;
* ``nonzero`` — input already skull-stripped: the reference's nonzero voxels;
* ``mask-file`` — a brain mask the user made (any grid in the reference scan's world space);
* ``hd-bet`` / ``synthstrip`` — the user's installed tool, run on the reference scan in its
  native space with the user's weights, its mask carried onto the output grid like a mask file.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from vbiopsy.data.nifti import Grid, Volume, load_volume, save_volume
from vbiopsy.errors import ConfigError, InputError
from vbiopsy.preprocess.config import SkullStripConfig
from vbiopsy.preprocess.skullstrip import RefineOptions, refine_brain_mask

EXTERNAL_TIMEOUT_S = 3600


@dataclass(frozen=True)
class StripInputs:
    """What a backend may use. Arrays are on the output grid ``grid``.

    ``images``: bias-corrected images per modality; ``fov``: voxels the reference scan covers (``fovs``: each modality's);
    ``prior()``: template brain probability (computed on first call); ``to_output(volume)``: a
    mask in the reference scan's world space carried onto the output grid (nearest neighbour).
    """

    images: Mapping[str, np.ndarray]
    reference: str
    grid: Grid
    fov: np.ndarray
    fovs: Mapping[str, np.ndarray]
    native_reference: Volume
    reference_path: Path
    prior: Callable[[], np.ndarray]
    to_output: Callable[[Volume], np.ndarray]


class SkullStripper(Protocol):
    """A brain-extraction backend: inputs → (mask, report); ``check()`` raises before any computing
    if the backend cannot run (missing tool, weights or mask file)."""

    name: str

    def check(self) -> None: ...

    def __call__(self, inputs: StripInputs) -> tuple[np.ndarray, dict[str, Any]]: ...


@dataclass(frozen=True)
class TemplateStripper:
    """Template brain-mask propagation refined by the reference image's intensities."""

    options: RefineOptions
    name: str = "template"

    def check(self) -> None:
        """Nothing to check: the template ships with nilearn (located when the prior is built)."""

    def __call__(self, inputs: StripInputs) -> tuple[np.ndarray, dict[str, Any]]:
        mask = refine_brain_mask(inputs.images, inputs.fovs, inputs.prior(), inputs.grid.spacing, self.options)
        return mask, {"options": asdict(self.options), "modalities": list(inputs.images)}


@dataclass(frozen=True)
class NonzeroStripper:
    """The reference scan's nonzero voxels (input already skull-stripped)."""

    name: str = "nonzero"

    def check(self) -> None:
        """Nothing to check."""

    def __call__(self, inputs: StripInputs) -> tuple[np.ndarray, dict[str, Any]]:
        native = inputs.native_reference
        return inputs.to_output(Volume((native.array != 0).astype(np.uint8), native.affine)) > 0, {}


def _load_mask(path: Path) -> Volume:
    volume = load_volume(path, dtype=np.float32, allow_empty=True)
    return Volume((volume.array > 0.5).astype(np.uint8), volume.affine)


@dataclass(frozen=True)
class MaskFileStripper:
    """A brain mask from a file (voxels > 0.5 are brain), in the reference scan's world space."""

    path: Path
    name: str = "mask-file"

    def check(self) -> None:
        """The mask file is readable and not empty."""
        if not _load_mask(self.path).array.any():
            raise InputError(self.path, "brain mask file is empty (no voxel > 0.5)")

    def __call__(self, inputs: StripInputs) -> tuple[np.ndarray, dict[str, Any]]:
        self.check()
        mask = _load_mask(self.path)
        return inputs.to_output(mask) > 0, {"mask_path": str(self.path)}


@dataclass(frozen=True)
class ExternalTool:
    """How to run a brain-extraction program: argv template, extra argv for weights, mask file."""

    argv: tuple[str, ...]
    weights_argv: tuple[str, ...]
    mask: str


EXTERNAL_TOOLS: dict[str, ExternalTool] = {
    # HD-BET (v1 CLI) writes <output>_mask.nii.gz; it reads its parameters from its own folder.
    "hd-bet": ExternalTool(("hd-bet", "-i", "{input}", "-o", "{output}", "-device", "cpu", "-mode", "fast",
                            "-tta", "0"), (), "{output_stem}_mask.nii.gz"),
    # FreeSurfer's SynthStrip: -m writes the mask, --model takes the weights file.
    "synthstrip": ExternalTool(("mri_synthstrip", "-i", "{input}", "-o", "{output}", "-m", "{mask}"),
                               ("--model", "{weights}"), "{mask}"),
}


@dataclass(frozen=True)
class ExternalStripper:
    """Runs the user's HD-BET or SynthStrip (subprocess) on the reference scan in native space."""

    name: str
    argv: tuple[str, ...]
    mask: str
    weights: Path | None

    def command(self, folder: Path) -> tuple[list[str], Path]:
        """The argv to run with files in ``folder``, and where the mask will be."""
        values = {"input": str(folder / "input.nii.gz"), "output": str(folder / "brain.nii.gz"),
                  "output_stem": str(folder / "brain"), "mask": str(folder / "mask.nii.gz"),
                  "weights": str(self.weights) if self.weights is not None else ""}
        return [part.format(**values) for part in self.argv], Path(self.mask.format(**values))

    def check(self) -> None:
        """The program is on PATH and the weights file exists."""
        if shutil.which(self.argv[0]) is None:
            raise ConfigError(f"skull_strip backend {self.name!r} needs the program {self.argv[0]!r}, which is not "
                              f"installed (not on PATH); install it, or use backend 'template' (built in)")
        if self.weights is not None and not self.weights.exists():
            raise InputError(self.weights, f"{self.name} weights not found")

    def __call__(self, inputs: StripInputs) -> tuple[np.ndarray, dict[str, Any]]:
        self.check()
        with tempfile.TemporaryDirectory(prefix="vbiopsy-strip-") as tmp:
            argv, mask_path = self.command(Path(tmp))
            save_volume(inputs.native_reference.array, inputs.native_reference.affine, Path(tmp) / "input.nii.gz")
            try:
                done = subprocess.run(argv, capture_output=True, text=True, timeout=EXTERNAL_TIMEOUT_S, check=False)
            except subprocess.TimeoutExpired:
                raise InputError(inputs.reference_path, f"{self.name} did not finish in {EXTERNAL_TIMEOUT_S} s") from None
            if done.returncode != 0:
                tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
                raise InputError(inputs.reference_path, f"{self.name} failed (exit {done.returncode}): {tail[0][:200]}")
            if not mask_path.is_file():
                raise InputError(inputs.reference_path, f"{self.name} wrote no brain mask at {mask_path.name}")
            mask = _load_mask(mask_path)
        return inputs.to_output(mask) > 0, {"argv": argv[:1] + ["…"], "weights": str(self.weights or "")}


def make_stripper(config: SkullStripConfig) -> SkullStripper | None:
    """The backend ``config`` asks for (``None`` for ``backend='none'``)."""
    if config.backend == "none":
        return None
    if config.backend == "template":
        return TemplateStripper(RefineOptions(band_mm=config.band_mm, shift_mm=config.shift_mm,
                                              width_mm=config.width_mm, smooth_mm=config.smooth_mm))
    if config.backend == "nonzero":
        return NonzeroStripper()
    if config.backend == "mask-file":
        assert config.mask_path is not None  # enforced by SkullStripConfig
        return MaskFileStripper(Path(config.mask_path))
    tool = EXTERNAL_TOOLS[config.backend]
    argv = tuple(config.command) if config.command else tool.argv
    if config.weights_path is not None and not config.command:
        if not tool.weights_argv:
            raise ConfigError(f"skull_strip.weights_path: {config.backend} has no command-line option for weights; "
                              "give skull_strip.command with a {weights} placeholder where your version takes them")
        argv = argv + tool.weights_argv
    if config.weights_path is not None and not any("{weights}" in part for part in argv):
        raise ConfigError(f"skull_strip.command {list(argv)!r} has no {{weights}} placeholder for weights_path")
    mask = "{mask}" if config.command else tool.mask
    return ExternalStripper(config.backend, argv, mask, Path(config.weights_path) if config.weights_path else None)
