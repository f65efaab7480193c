"""``vbiopsy report RUN_DIR [RUN_DIR...] --out report.html``: one self-contained cohort report.

One section per run (ASLNet grade / survival, MGMT-Net, Adaptive-Diagnoser) or comparison table
(``vbiopsy ablation`` output folders), each with its figures, tables and provenance. Numbers come
from the runs' JSON files; table cells name the file and key they were read from (``data-json``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from vbiopsy.atomic import ensure_writable_dir, write_text_atomic
from vbiopsy.errors import ConfigError, InputError
from vbiopsy.report.html import escape, page_html, paragraph, section_html, table_html
from vbiopsy.report.run_folder import RunFolder, TableFolder, read_run, read_table_folder

NOTICE = ("Research software. These figures describe how models performed on a research cohort; they are not "
          "a validated medical device and must not be used to diagnose or treat patients.")


def run_section(run: RunFolder) -> str:
    """The report section of one evaluated run."""
    if run.task == "profile":
        from vbiopsy.report.sections_profile import profile_section

        return profile_section(run)
    if run.task == "diagnosis":
        from vbiopsy.report.sections_diagnosis import diagnosis_section

        return diagnosis_section(run)
    from vbiopsy.report.sections_aslnet import aslnet_section

    return aslnet_section(run)


def table_section(folder: TableFolder) -> str:
    """A comparison table (ablation / backbones) as written by ``vbiopsy ablation``."""
    frame = folder.table
    rows = [[None if isinstance(v, float) and v != v else v for v in row] for row in frame.itertuples(index=False)]
    caption = (f"{folder.title}, read from {folder.path.name}: every variant is trained on the same split with the "
               "same settings except the one named; scores are out-of-fold (Dice = overlap of predicted and true "
               "tumour region, 1 = perfect; AUC 0.5 = chance). Diagnoser rows show mean ± sd over folds in per cent.")
    return section_html(f"{folder.title} — {folder.path.name}", [table_html([str(c) for c in frame.columns], rows,
                                                                            caption)])


def contents(items: Sequence[RunFolder | TableFolder]) -> str:
    """A list of links to each section."""
    links = []
    for item in items:
        if isinstance(item, RunFolder):
            links.append(f'<li><a href="#run-{escape(item.path.name)}">{escape(item.title)} — '
                         f"{escape(item.path.name)}</a></li>")
        else:
            links.append(f"<li>{escape(item.title)} — {escape(item.path.name)}</li>")
    return f"<nav><ul>{''.join(links)}</ul></nav>"


def read_report_inputs(run_dirs: Sequence[str | Path]) -> list[RunFolder | TableFolder]:
    """Every folder as an evaluated run or a comparison table; refuses an empty list or an unknown folder."""
    if not run_dirs:
        raise ConfigError("give at least one run folder")
    items: list[RunFolder | TableFolder] = []
    for path in run_dirs:
        folder = Path(path)
        table = read_table_folder(folder) if folder.is_dir() and not (folder / "run.json").is_file() else None
        items.append(table if table is not None else read_run(folder))
    return items


def cohort_report_html(run_dirs: Sequence[str | Path]) -> str:
    """The cohort report of ``run_dirs`` as one HTML document (see the module docstring)."""
    items = read_report_inputs(run_dirs)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = [paragraph(f"Made {stamp} from {len(items)} folder(s). Out-of-fold figures are optimistic (the same "
                      "folds chose the epoch and decision rules); held-out test figures are the ones to report.",
                      "note"), contents(items)]
    for item in items:
        body.append(run_section(item) if isinstance(item, RunFolder) else table_section(item))
    return page_html("vbiopsy cohort report", body, notice=NOTICE)


def build_cohort_report(run_dirs: Sequence[str | Path], out: str | Path) -> Path:
    """Write the cohort report of ``run_dirs`` to ``out`` (atomically) and return its path."""
    target = Path(out)
    if target.suffix.lower() not in (".html", ".htm"):
        raise ConfigError(f"--out must name an .html file, got {str(out)!r}")
    if target.is_dir():
        raise InputError(target, "is a folder; give a file name ending in .html")
    text = cohort_report_html(run_dirs)
    ensure_writable_dir(target.parent if str(target.parent) else Path("."))
    return write_text_atomic(target, text)
