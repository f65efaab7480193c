"""What the cohort commands do, with progress and printing; the CLI only parses options.

Each function validates its inputs first and writes outputs atomically, so a failed command
leaves no half-written file behind.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from vbiopsy.atomic import ensure_writable_dir, write_text_atomic
from vbiopsy.errors import ConfigError, InputError

if TYPE_CHECKING:
    from vbiopsy.data.check import CohortCheck
    from vbiopsy.preprocess.config import PreprocessConfig
    from vbiopsy.preprocess.runner import CohortRun, SubjectOutput
    from vbiopsy.data.phantoms import PhantomCohort, PhantomConfig
    from vbiopsy.data.splits import Splits

console = Console(stderr=True)
"""Progress and tables go to stderr; stdout carries only what scripts may parse."""


def say(line: str) -> None:
    """Print one unwrapped, unstyled line on stderr (problems must stay one line each)."""
    console.print(line, markup=False, highlight=False, soft_wrap=True)


@contextmanager
def progress_bar(description: str) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar; yields a ``callback(done, total)`` for library functions."""
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def prepare_output_dir(out: Path, *, overwrite: bool, marker: str) -> Path:
    """Check ``out`` is writable and empty; with ``overwrite``, clear a folder holding ``marker``."""
    if out.exists() and not out.is_dir():
        raise InputError(out, "output path exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise InputError(out, "output folder is not empty (use --overwrite to replace its cohort)")
        if not (out / marker).exists():
            raise InputError(out, f"refusing to overwrite: folder is not empty and has no {marker}")
        shutil.rmtree(out)
    return ensure_writable_dir(out)


def generate_phantoms(config: PhantomConfig, out: Path, *, jobs: int, overwrite: bool = False) -> PhantomCohort:
    """Generate a phantom cohort into ``out`` with a progress bar; print where it is."""
    from vbiopsy.data.phantoms import generate_cohort

    prepare_output_dir(out, overwrite=overwrite, marker="ground_truth.json")
    with progress_bar(f"phantoms ({config.layout})") as update:
        cohort = generate_cohort(config, out, jobs=jobs, progress=update)
    print(f"cohort: {cohort.root} ({len(cohort.subject_ids)} patients, {cohort.layout} layout)")
    print(f"clinical table: {cohort.clinical_table}")
    print(f"ground truth: {cohort.ground_truth}")
    return cohort


def check_and_summarise(
    cohort: Path,
    *,
    layout: str = "auto",
    clinical: Path | None = None,
    jobs: int = 1,
    summary_json: Path | None = None,
    quiet: bool = False,
) -> CohortCheck:
    """Read, check and summarise a cohort; print the summary tables and the problems."""
    from vbiopsy.data.check import check_cohort
    from vbiopsy.data.layouts import read_cohort_with_problems
    from vbiopsy.data.summary import summarise
    from vbiopsy.report.terminal import print_summary

    if summary_json is not None:
        ensure_writable_dir(summary_json.parent if str(summary_json.parent) else Path("."))
    manifest, table_problems = read_cohort_with_problems(cohort, layout=layout, clinical=clinical)
    if quiet:
        result = check_cohort(manifest, table_problems=table_problems, jobs=jobs)
    else:
        with progress_bar("checking") as update:
            result = check_cohort(manifest, table_problems=table_problems, jobs=jobs, progress=update)
    summary = summarise(manifest, result)
    if summary_json is not None:
        write_text_atomic(summary_json, json.dumps(summary, indent=2) + "\n")
    if not quiet:
        print_summary(summary, console)
        for warning in result.warnings:
            say(f"warning: {warning}")
        for problem in result.problems:
            say(f"problem: {problem}")
        verdict = "no problems" if result.ok else f"{len(result.problems)} problems"
        say(f"{len(manifest)} subjects checked: {verdict}")
    return result


def parse_class_values(column: str, values: Sequence[str]) -> list[Any]:
    """Parse class values given on the command line with the column's own parser."""
    from vbiopsy.data.schema import KNOWN_COLUMNS, ValueParseError

    parser = KNOWN_COLUMNS[column].parse if column in KNOWN_COLUMNS else str
    parsed = []
    for value in values:
        try:
            parsed.append(parser(value))
        except ValueParseError as err:
            raise ConfigError(f"--keep-in-train {value!r}: {err}") from None
    return parsed


def split_cohort(
    cohort: Path,
    out: Path,
    *,
    label: str,
    test_fraction: float,
    n_folds: int,
    seed: int,
    keep_in_train: Sequence[str] = (),
    rare_classes: str = "error",
    layout: str = "auto",
    clinical: Path | None = None,
) -> Splits:
    """Make patient-level splits of a cohort stratified on ``label`` and write ``splits.json``."""
    from vbiopsy.data.layouts import read_cohort
    from vbiopsy.data.splits import make_splits

    manifest = read_cohort(cohort, layout=layout, clinical=clinical)
    if label not in manifest.frame.columns:
        raise ConfigError(f"--label {label!r}: no such column in {manifest.source} "
                          f"(columns: {', '.join(manifest.frame.columns)})")
    ensure_writable_dir(out.parent if str(out.parent) else Path("."))
    splits = make_splits(manifest.subjects, manifest.column(label), patient_ids=manifest.patient_ids(),
                         test_fraction=test_fraction, n_folds=n_folds, seed=seed,
                         keep_in_train=parse_class_values(label, keep_in_train), rare_classes=rare_classes,
                         stratify_name=label)
    splits.save(out)
    n_train = len(manifest) - len(splits.test)
    print(f"wrote {out}: {len(splits.test)} test, {n_train} in {n_folds} folds (stratified on {label}, seed {seed})")
    kept = [*splits.info["policy"]["keep_in_train"], *splits.info["policy"]["rare_to_train"]]
    if kept:
        say(f"{label} classes kept out of the test set (training only): {', '.join(map(str, kept))}")
    return splits


def _preprocess_row(row: dict[str, Any], modalities: tuple[str, ...], log: Callable[[str], None], *,
                    config: PreprocessConfig) -> SubjectOutput:
    """The runner's per-patient function: the MRI-Processor pipeline on one manifest row."""
    from vbiopsy.preprocess.pipeline import preprocess_subject

    images = {m: row[m] for m in modalities if row.get(m) is not None}
    return preprocess_subject(images, seg=row.get("seg"), seg_convention=row.get("seg_convention") or "brats2024",
                              config=config, log=log)


def preprocess_cohort(
    cohort: Path,
    out: Path,
    config: PreprocessConfig,
    *,
    jobs: int = 1,
    layout: str = "auto",
    clinical: Path | None = None,
) -> CohortRun:
    """Run the MRI-Processor over a cohort (resumable); print the outputs and any failed patient."""
    import functools

    from vbiopsy import __version__
    from vbiopsy.config import save_config
    from vbiopsy.data.layouts import read_cohort
    from vbiopsy.preprocess.runner import run_cohort

    manifest = read_cohort(cohort, layout=layout, clinical=clinical)
    ensure_writable_dir(out)
    settings = {"processor": "vbiopsy.preprocess.pipeline", "config": config.model_dump(mode="json"),
                "vbiopsy": __version__}
    process = functools.partial(_preprocess_row, config=config)
    with progress_bar("preprocessing") as update:
        run = run_cohort(manifest, out, process, settings=settings, jobs=jobs, progress=update)
    save_config(config, out / "preprocess_config.yaml")
    counts = {s: sum(r.status == s for r in run.results) for s in ("done", "cached", "failed")}
    say(f"{len(run.results)} subjects: {counts['done']} processed, {counts['cached']} already done, "
        f"{counts['failed']} failed")
    for failed in run.failed:
        say(f"problem: subject {failed.subject_id}: {failed.message}")
    if run.manifest is not None:
        print(f"manifest: {run.manifest}")
    print(f"summary: {run.summary}")
    return run
