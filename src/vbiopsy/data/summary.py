"""Cohort summary: what a cohort holds, as a JSON-ready dict (counts per class, modality
availability, grids, tumour volumes) — printed by ``vbiopsy cohort check`` and written by the demo.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from vbiopsy.data.check import CohortCheck
from vbiopsy.data.manifest import Manifest
from vbiopsy.data.schema import LABEL_COLUMNS

CATEGORICAL = ("grade", "idh", "codel_1p19q", "tert", "mgmt", "diagnosis", "os_event", "sex", "eor")
CONTINUOUS = ("age", "os_days")
_NAMES: dict[str, dict[Any, str]] = {
    "idh": {1: "mutant", 0: "wildtype"},
    "codel_1p19q": {1: "co-deleted", 0: "intact"},
    "tert": {1: "mutant", 0: "wildtype"},
    "mgmt": {1: "methylated", 0: "unmethylated"},
    "os_event": {1: "dead", 0: "alive/censored"},
}


def class_counts(manifest: Manifest, column: str) -> dict[str, int]:
    """Counts of each value of ``column`` (named readably), plus ``missing``."""
    names = _NAMES.get(column, {})
    counts = Counter("missing" if v is None else names.get(v, str(v)) for v in manifest.column(column))
    missing = counts.pop("missing", 0)
    ordered = dict(sorted(counts.items(), key=lambda kv: kv[0]))
    ordered["missing"] = missing
    return ordered


def _describe(values: list[float]) -> dict[str, float | int]:
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return {"n": 0}
    q1, med, q3 = np.percentile(arr, [25, 50, 75])
    return {"n": int(arr.size), "median": round(float(med), 2), "q1": round(float(q1), 2),
            "q3": round(float(q3), 2), "min": round(float(arr.min()), 2), "max": round(float(arr.max()), 2)}


def summarise(manifest: Manifest, check: CohortCheck | None = None) -> dict[str, Any]:
    """A JSON-ready summary of ``manifest`` (and of the measured files, if ``check`` is given)."""
    columns = set(manifest.frame.columns)
    summary: dict[str, Any] = {
        "source": str(manifest.source),
        "n_subjects": len(manifest),
        "n_patients": len(set(manifest.patient_ids())),
        "modalities": {
            m: {"listed": sum(v is not None for v in manifest.column(m)),
                "missing": sum(v is None for v in manifest.column(m))}
            for m in manifest.modalities
        },
        "segmentations": sum(v is not None for v in manifest.column("seg")),
        "classes": {c: class_counts(manifest, c) for c in CATEGORICAL if c in columns},
        "continuous": {c: _describe([v for v in manifest.column(c) if v is not None])
                       for c in CONTINUOUS if c in columns},
        "label_columns": [c for c in LABEL_COLUMNS if c in columns],
    }
    if check is not None:
        shapes = Counter(str(p.shape) for p in check.patients if p.shape)
        spacings = Counter(str(tuple(round(s, 2) for s in p.spacing_mm)) for p in check.patients if p.spacing_mm)
        regions = {r: _describe([p.region_ml[r] for p in check.patients if r in p.region_ml])
                   for r in ("NETC", "SNFH", "ET", "RC")}
        summary["grids"] = {"shapes": dict(shapes), "spacings_mm": dict(spacings)}
        summary["tumour_ml"] = {r: d for r, d in regions.items() if d.get("n")}
        summary["n_problems"] = len(check.problems)
        summary["n_warnings"] = len(check.warnings)
    return summary
