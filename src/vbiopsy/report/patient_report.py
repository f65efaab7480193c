"""Patient report: one self-contained HTML page per predicted patient (``vbiopsy predict ... --report``).

It shows what the run predicts (grade, 12-month survival, survival risk, markers or tumour type)
with the fold-ensemble probability and its spread over the fold models, which modalities were
present, axial/coronal/sagittal slices through the tumour on the native-space anatomy with the
segmentation, one or several named heat maps (saliency, or one Grad-CAM per marker) and the
localiser prior where available, an interactive slice viewer, and a plain statement that this is a
research tool, not a diagnosis.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vbiopsy.atomic import ensure_writable_dir, write_text_atomic
from vbiopsy.errors import ConfigError, InputError
from vbiopsy.report.html import Figure, figure_html, page_html, paragraph, section_html, table_html
from vbiopsy.report.viewer import Kind, viewer_html, viewer_script

DISCLAIMER = ("Research tool, not a diagnosis. These outputs come from a model trained on a research cohort; they "
              "have not been validated for clinical use and must not guide the care of this or any patient.")


@dataclass(frozen=True)
class Output:
    """One predicted quantity: the fold-ensemble ``value`` and the value of each fold model (``fold_values``)."""

    name: str
    value: float
    fold_values: tuple[float, ...] = ()
    meaning: str = "probability"

    def __post_init__(self) -> None:
        if not np.isfinite(self.value) or not all(np.isfinite(v) for v in self.fold_values):
            raise InputError(self.name, f"prediction must be finite, got {self.value!r} / {list(self.fold_values)!r}")

    @property
    def spread(self) -> float | None:
        """Standard deviation over the fold models (population, ddof 0); ``None`` with fewer than two."""
        return float(np.std(self.fold_values)) if len(self.fold_values) > 1 else None


@dataclass(frozen=True)
class PatientFindings:
    """What a run predicted for one patient, and the context a reader needs."""

    subject_id: str
    model: str
    run_dir: str
    outputs: tuple[Output, ...]
    decision: str
    rule: str
    modalities_present: tuple[str, ...]
    modalities_missing: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.subject_id:
            raise InputError("subject_id", "must be a non-empty string")
        if not self.outputs:
            raise InputError(self.subject_id, "a patient report needs at least one predicted output")


OVERLAY_NAMES = ("segmentation", "prior")
"""Names the viewer gives the segmentation and prior overlays; a heat map may not take them."""


@dataclass(frozen=True)
class HeatMap:
    """A named voxel heat map (X, Y, Z; its magnitude is drawn) with the ``caption`` that says what it explains
    and what bright means, e.g. ``HeatMap("IDH mutant", cam, "Grad-CAM of ...: bright = ...")``."""

    name: str
    array: np.ndarray
    caption: str

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip() or self.name in OVERLAY_NAMES:
            raise ConfigError(f"a heat map needs a non-empty name other than {', '.join(OVERLAY_NAMES)}, "
                              f"got {self.name!r}")
        if not isinstance(self.caption, str) or not self.caption.strip():
            raise ConfigError(f"heat map {self.name!r} needs a caption, got {self.caption!r}")
        if np.ndim(self.array) != 3:
            raise InputError(self.name, f"a heat map must be 3-D, got shape {np.shape(self.array)}")


@dataclass(frozen=True)
class PatientImages:
    """Native-space volumes of one patient on one grid: ``anatomy`` (modality → (X, Y, Z)), voxel
    ``spacing_mm``, optional ``seg`` (BraTS 2024 labels), ``saliency`` and localiser ``prior`` maps,
    with a short ``sources`` text per overlay (e.g. "predicted by MGMT-Net"), and named ``heat_maps``
    (e.g. one Grad-CAM per marker). ``saliency`` is shorthand for one heat map named "saliency"."""

    anatomy: dict[str, np.ndarray]
    spacing_mm: tuple[float, float, float]
    seg: np.ndarray | None = None
    saliency: np.ndarray | None = None
    prior: np.ndarray | None = None
    sources: dict[str, str] = field(default_factory=dict)
    heat_maps: tuple[HeatMap, ...] = ()

    def __post_init__(self) -> None:
        if not self.anatomy:
            raise InputError("images", "no anatomical image to show")
        if not all(isinstance(m, HeatMap) for m in self.heat_maps):
            raise ConfigError(f"heat_maps must be HeatMap objects, got {[type(m).__name__ for m in self.heat_maps]}")
        object.__setattr__(self, "heat_maps", tuple(self.heat_maps))
        maps = self.drawn_heat_maps
        names = [m.name for m in maps]
        if len(set(names)) != len(names):
            raise ConfigError(f"heat map names must be unique, got {names!r}")
        shape = next(iter(self.anatomy.values())).shape
        for name, array in [*self.anatomy.items(), ("seg", self.seg), *((m.name, m.array) for m in maps),
                            ("prior", self.prior)]:
            if array is not None and array.shape != shape:
                raise InputError(name, f"shape {array.shape} differs from the grid {shape}")

    @property
    def drawn_heat_maps(self) -> tuple[HeatMap, ...]:
        """The heat maps the report draws: ``saliency`` (a list of one, captioned from ``sources``), then
        ``heat_maps``."""
        if self.saliency is None:
            return self.heat_maps
        meaning = f"{self.sources.get('saliency', 'saliency')}: bright = voxels that raised the predicted class most"
        return (HeatMap("saliency", self.saliency, meaning), *self.heat_maps)


def load_patient_images(paths: Mapping[str, str | Path | None], reference: str, *, seg: np.ndarray | None = None,
                        saliency: np.ndarray | None = None, prior: np.ndarray | None = None,
                        sources: Mapping[str, str] | None = None,
                        heat_maps: Sequence[HeatMap] = ()) -> tuple[PatientImages, list[str]]:
    """Read the modalities in ``paths`` (canonical RAS) on the grid of ``reference``; returns the images
    (with the given overlays, see :class:`PatientImages`) and notes naming modalities left out because
    they lie on another grid."""
    from vbiopsy.data.nifti import load_volume

    if not paths.get(reference):
        raise InputError(reference, "the reference modality has no image")
    base = load_volume(paths[reference])  # type: ignore[arg-type]
    anatomy, notes = {reference: base.array}, []
    for name, path in paths.items():
        if name == reference or not path:
            continue
        volume = load_volume(path)
        problem = volume.grid.mismatch(base.grid)
        if problem:
            notes.append(f"{name} not shown in the slices: {problem}")
            continue
        anatomy[name] = volume.array
    images = PatientImages(anatomy, tuple(float(s) for s in base.grid.spacing), seg=seg,  # type: ignore[arg-type]
                           saliency=saliency, prior=prior, sources=dict(sources or {}), heat_maps=tuple(heat_maps))
    return images, notes


def outputs_table(findings: PatientFindings) -> str:
    """Predicted quantities with the ensemble value, fold spread and range."""
    rows = []
    for output in findings.outputs:
        low = min(output.fold_values) if output.fold_values else None
        high = max(output.fold_values) if output.fold_values else None
        rows.append((output.name, output.meaning, output.value, output.spread, low, high, len(output.fold_values)))
    caption = ("Value = mean over the fold models (the fold ensemble, the number the decision uses). Spread = standard "
               "deviation over the fold models, and their lowest/highest value: a large spread means the models "
               "trained on different patients disagree, so the prediction is uncertain.")
    return table_html(("output", "meaning", "value", "spread (sd)", "lowest fold", "highest fold", "fold models"),
                      rows, caption)


def slices_part(findings: PatientFindings, images: PatientImages) -> str:
    """Orthogonal slices through the tumour with every available overlay (one row each), captioned."""
    from vbiopsy.report.slices import orthogonal_slices

    reference = next(iter(images.anatomy))
    maps = images.drawn_heat_maps
    png = orthogonal_slices(images.anatomy[reference], images.spacing_mm, seg=images.seg,
                            heat_maps={m.name: m.array for m in maps}, prior=images.prior,
                            title=f"{findings.subject_id} — {reference}")
    layers = []
    if images.seg is not None:
        layers.append(f"segmentation outlines ({images.sources.get('seg', 'segmentation')}; red = necrotic core, "
                      f"green = oedema, yellow = enhancing tumour, blue = resection cavity)")
    layers += [f"{m.name} heat map ({m.caption})" for m in maps]
    if images.prior is not None:
        layers.append(f"localiser prior ({images.sources.get('prior', 'tumour prior')}: where the localiser "
                      f"expects the tumour)")
    caption = (f"Axial, coronal and sagittal slices through the tumour on the {reference} image in the patient's own "
               f"scan space (patient's right on the right). Rows: {'; '.join(layers) or 'anatomy only'}.")
    if len(maps) > 1:
        caption += (" Each heat map is scaled to its own 99th percentile: compare where maps are bright, not how "
                    "bright one is against another.")
    return figure_html(Figure(png, "image/png", caption, f"slices of {findings.subject_id}"))


def viewer_part(images: PatientImages) -> str:
    """The interactive viewer: one checkbox per overlay; several heat maps are picked one at a time from a list."""
    maps = images.drawn_heat_maps
    overlays: dict[str, tuple[np.ndarray, Kind]] = {}
    if images.seg is not None:
        overlays["segmentation"] = (images.seg, "labels")
    for heat_map in maps:
        overlays[heat_map.name] = (heat_map.array, "heat")
    if images.prior is not None:
        overlays["prior"] = (images.prior, "heat")
    several = len(maps) > 1
    pick = " Pick the heat map to draw from the list; its caption is shown under the image." if several else ""
    intro = paragraph("Scroll through the slices: drag the slider, use the arrow keys or Page Up/Down after clicking "
                      "the image, or the mouse wheel over it. Tick the boxes to show or hide each overlay." + pick +
                      " Volumes are downsampled for the page; the NIfTI files next to this report keep full "
                      "resolution.")
    selectable = {m.name: f"{m.name} heat map: {m.caption}." for m in maps} if several else None
    viewer = viewer_html(images.anatomy, overlays, images.spacing_mm, selectable=selectable)
    return section_html("Slice viewer", [intro, viewer], level=2)


def patient_report_html(findings: PatientFindings, images: PatientImages | None,
                        files: Sequence[str] = ()) -> str:
    """The patient report as one HTML document."""
    summary = [paragraph(f"Model: {findings.model} (run {findings.run_dir})."),
               paragraph(f"Decision: {findings.decision} — rule: {findings.rule}."), outputs_table(findings)]
    present = ", ".join(findings.modalities_present) or "none"
    missing = ", ".join(findings.modalities_missing) or "none"
    summary.append(table_html(("modalities", "names"), [("present", present), ("missing", missing)],
                              "MRI sequences found for this patient; the model was given only those present."))
    body = [section_html("Prediction", summary)]
    script = ""
    if images is not None:
        body.append(section_html("Images", [slices_part(findings, images)]))
        body.append(viewer_part(images))
        script = viewer_script()
    notes = [paragraph(n, "note") for n in findings.notes]
    if files:
        notes.append(paragraph("Files next to this report: " + ", ".join(files) + ".", "note"))
    if notes:
        body.append(section_html("Notes", notes))
    return page_html(f"vbiopsy patient report — {findings.subject_id}", body, notice=DISCLAIMER, script=script)


def write_patient_report(findings: PatientFindings, images: PatientImages | None, folder: str | Path,
                         files: Sequence[str] = ()) -> Path:
    """Write ``<folder>/<subject_id>_report.html`` atomically and return its path."""
    out = ensure_writable_dir(folder)
    return write_text_atomic(out / f"{findings.subject_id}_report.html", patient_report_html(findings, images, files))
