"""Write a phantom cohort to disk: patients (in parallel), then the clinical table, then ground truth.

Workers make and write whole patients and return only their small records; the parent writes
the table and ``ground_truth.json`` last, so a folder with a ground truth is complete. Every file
is written atomically. Output is bit-identical whatever ``jobs`` is (see
:mod:`vbiopsy.data.phantoms.patient`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vbiopsy import __version__
from vbiopsy.atomic import ensure_writable_dir, write_text_atomic
from vbiopsy.data.phantoms.config import PhantomConfig
from vbiopsy.data.phantoms.layout import LABEL_CONVENTION, patient_names, write_patient, write_table
from vbiopsy.data.phantoms.patient import config_grid, generate_patient
from vbiopsy.data.phantoms.sites import SiteMaps, adopt_site_maps, site_maps
from vbiopsy.data.phantoms.template import TEMPLATE_NAME, Template, adopt_template, load_template
from vbiopsy.data.phantoms.truth import PatientRecord, ground_truth
from vbiopsy.errors import ConfigError
from vbiopsy.parallel import run_parallel

GENERATOR_VERSION = "1.0"
"""Bumped whenever the same config and seed would give different output."""
GROUND_TRUTH = "ground_truth.json"


@dataclass(frozen=True)
class PhantomCohort:
    """Where a generated cohort is: its folder, layout, subject IDs (as the layout reader reports
    them), clinical table and ground-truth file."""

    root: Path
    layout: str
    subject_ids: list[str]
    clinical_table: Path
    ground_truth: Path


def _make_patient(config: PhantomConfig, index: int, *, root: Path) -> PatientRecord:
    """Generate patient ``index``, write its files and return its record (runs in workers)."""
    patient = generate_patient(config, index)
    names = patient_names(config.layout, index, config.modalities)
    write_patient(root, config.layout, names, patient)
    return PatientRecord(names.subject_id, names.table_id, index, patient.clinical, patient.phenotype,
                         patient.volumes_ml, patient.geometry, names.files)


def _adopt(templates: list[Template], sites: SiteMaps) -> None:
    """Worker initialiser: the parent's templates and sites instead of recomputing them."""
    for template in templates:
        adopt_template(template)
    adopt_site_maps(sites)


def _header(config: PhantomConfig) -> dict[str, Any]:
    grid = config_grid(config)
    return {
        "generator": "vbiopsy.data.phantoms", "generator_version": GENERATOR_VERSION, "vbiopsy_version": __version__,
        "seed": config.seed, "config": config.model_dump(mode="json"), "layout": config.layout,
        "label_convention": LABEL_CONVENTION[config.layout],
        "template": {"name": TEMPLATE_NAME, "shape": list(grid.shape),
                     "spacing_mm": [round(s, 4) for s in grid.spacing]},
    }


def generate_cohort(config: PhantomConfig, out_dir: str | Path, *, jobs: int = 1,
                    progress: Callable[[int, int], None] | None = None) -> PhantomCohort:
    """Generate ``config.n_patients`` patients into ``out_dir`` with ``jobs`` worker processes.

    ``progress(done, total)`` is called after each patient. Raises :class:`InputError` if the
    folder cannot be written and :class:`ConfigError` for a bad ``jobs``.
    """
    if not isinstance(config, PhantomConfig):
        raise TypeError(f"config must be a PhantomConfig, got {type(config).__name__}")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ConfigError(f"jobs must be a whole number ≥ 1, got {jobs!r}")
    root = ensure_writable_dir(out_dir)
    total = config.n_patients
    templates = [load_template(config_grid(config)), site_maps().template]
    records: dict[int, PatientRecord] = {}

    def finished(record: PatientRecord) -> None:
        records[record.index] = record
        if progress is not None:
            progress(len(records), total)

    if progress is not None:
        progress(0, total)
    make = functools.partial(_make_patient, config, root=root)
    initargs = (templates, site_maps()) if jobs > 1 else ()
    for _, record in run_parallel(make, range(total), jobs=jobs, initializer=_adopt if jobs > 1 else None,
                                  initargs=initargs):
        finished(record)

    ordered = [records[i] for i in range(total)]
    table = write_table(root, config.layout, [(r.table_id, r.clinical) for r in ordered])
    document = ground_truth(_header(config), ordered, config.seed)
    truth = write_text_atomic(root / GROUND_TRUTH, json.dumps(document, indent=1, allow_nan=False) + "\n")
    return PhantomCohort(root, config.layout, [r.subject_id for r in ordered], table, truth)
