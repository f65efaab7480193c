"""Patient report: one self-contained HTML page per predicted patient (``vbiopsy predict ... --report``).

It shows what the run predicts (grade, 12-month survival, survival risk, markers or tumour type)
with the fold-ensemble probability and its spread over the fold models, which modalities were
present, axial/coronal/sagittal slices through the tumour on the native-space anatomy with the
segmentation, saliency and localiser prior where available, an interactive slice viewer, and a
plain statement that this is a research tool, not a diagnosis.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vbiopsy.atomic import ensure_writable_dir, write_text_atomic
from vbiopsy.errors import InputError
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


@dataclass(frozen=True)
class PatientImages:
    """Native-space volumes of one patient on one grid: ``anatomy`` (modality → (X, Y, Z)), voxel
    ``spacing_mm``, optional ``seg`` (BraTS 2024 labels), ``saliency`` and localiser ``prior`` maps,
    with a short ``sources`` text per overlay (e.g. "predicted by MGMT-Net")."""

    anatomy: dict[str, np.ndarray]
    spacing_mm: tuple[float, float, float]
    seg: np.ndarray | None = None
    saliency: np.ndarray | None = None
    prior: np.ndarray | None = None
    sources: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.anatomy:
            raise InputError("images", "no anatomical image to show")
        shape = next(iter(self.anatomy.values())).shape
        for name, array in [*self.anatomy.items(), ("seg", self.seg), ("saliency", self.saliency),
                            ("prior", self.prior)]:
            if array is not None and array.shape != shape:
                raise InputError(name, f"shape {array.shape} differs from the grid {shape}")


def load_patient_images(paths: Mapping[str, str | Path | None], reference: str, *, seg: np.ndarray | None = None,
                        saliency: np.ndarray | None = None, prior: np.ndarray | None = None,
                        sources: Mapping[str, str] | None = None) -> tuple[PatientImages, list[str]]:
    """Read the modalities in ``paths`` (canonical RAS) on the grid of ``reference``; returns the images
    and notes naming modalities left out because they lie on another grid."""
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
                           saliency=saliency, prior=prior, sources=dict(sources or {}))
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
    """Orthogonal slices through the tumour with every available overlay, captioned."""
    from vbiopsy.report.slices import orthogonal_slices

    reference = next(iter(images.anatomy))
    png = orthogonal_slices(images.anatomy[reference], images.spacing_mm, seg=images.seg, saliency=images.saliency,
                            prior=images.prior, title=f"{findings.subject_id} — {reference}")
    layers = []
    if images.seg is not None:
        layers.append(f"segmentation outlines ({images.sources.get('seg', 'segmentation')}; red = necrotic core, "
                      f"green = oedema, yellow = enhancing tumour, blue = resection cavity)")
    if images.saliency is not None:
        layers.append(f"saliency heat map ({images.sources.get('saliency', 'saliency')}: bright = voxels that "
                      f"raised the predicted class most)")
    if images.prior is not None:
        layers.append(f"localiser prior ({images.sources.get('prior', 'tumour prior')}: where the localiser "
                      f"expects the tumour)")
    caption = (f"Axial, coronal and sagittal slices through the tumour on the {reference} image in the patient's own "
               f"scan space (patient's right on the right). Rows: {'; '.join(layers) or 'anatomy only'}.")
    return figure_html(Figure(png, "image/png", caption, f"slices of {findings.subject_id}"))


def viewer_part(images: PatientImages) -> str:
    """The interactive viewer with one checkbox per overlay."""
    overlays: dict[str, tuple[np.ndarray, Kind]] = {}
    if images.seg is not None:
        overlays["segmentation"] = (images.seg, "labels")
    if images.saliency is not None:
        overlays["saliency"] = (images.saliency, "heat")
    if images.prior is not None:
        overlays["prior"] = (images.prior, "heat")
    intro = paragraph("Scroll through the slices: drag the slider, use the arrow keys or Page Up/Down after clicking "
                      "the image, or the mouse wheel over it. Tick the boxes to show or hide each overlay. Volumes "
                      "are downsampled for the page; the NIfTI files next to this report keep full resolution.")
    return section_html("Slice viewer", [intro, viewer_html(images.anatomy, overlays, images.spacing_mm)], level=2)


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
