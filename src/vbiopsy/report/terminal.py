"""Terminal rendering of cohort summaries and check results (rich tables)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def summary_tables(summary: dict[str, Any]) -> list[Table]:
    """Rich tables for a summary from :func:`vbiopsy.data.summary.summarise`."""
    tables = []
    head = Table(title=f"Cohort {summary['source']}", show_header=False)
    head.add_row("subjects", str(summary["n_subjects"]))
    head.add_row("patients", str(summary["n_patients"]))
    head.add_row("segmentations", str(summary["segmentations"]))
    for key in ("shapes", "spacings_mm"):
        if "grids" in summary:
            head.add_row(key.replace("_", " "), ", ".join(f"{k} ×{v}" for k, v in summary["grids"][key].items()))
    tables.append(head)

    mods = Table(title="Modalities")
    mods.add_column("modality")
    mods.add_column("listed", justify="right")
    mods.add_column("missing", justify="right")
    for name, counts in summary["modalities"].items():
        mods.add_row(name, str(counts["listed"]), str(counts["missing"]))
    tables.append(mods)

    if summary["classes"]:
        classes = Table(title="Counts per class")
        classes.add_column("column")
        classes.add_column("counts")
        for col, counts in summary["classes"].items():
            classes.add_row(col, ", ".join(f"{k}: {v}" for k, v in counts.items()))
        tables.append(classes)

    numeric = {**summary.get("continuous", {}), **{f"{k} (ml)": v for k, v in summary.get("tumour_ml", {}).items()}}
    if numeric:
        cont = Table(title="Continuous values (median [IQR], range)")
        cont.add_column("variable")
        cont.add_column("n", justify="right")
        cont.add_column("median [q1, q3]")
        cont.add_column("range")
        for col, d in numeric.items():
            if d.get("n"):
                cont.add_row(col, str(d["n"]), f"{d['median']} [{d['q1']}, {d['q3']}]", f"{d['min']} – {d['max']}")
        tables.append(cont)
    return tables


def print_summary(summary: dict[str, Any], console: Console) -> None:
    for table in summary_tables(summary):
        console.print(table)
