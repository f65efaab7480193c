"""The long steps of ``vbiopsy demo`` after the cohort exists: preprocessing, the three systems' demo
trainings, the patient reports and the cohort report.

Each training step loads a bundled ``*-demo.yaml`` with demo-sized overrides (epochs, folds, seeds,
the preprocessed cohort), first checks that the generated cohort has enough patients per class for that
system's stratified split (else the system is skipped and the reason printed), then trains, evaluates
and prints a one-line result. ASLNet and MGMT-Net read the gliomas only (their papers' cohorts are
gliomas); the Adaptive-Diagnoser reads every patient. The diagnoser demo holds out ``test_fraction`` of
the patients (the bundled config holds none: in the paper the folds are the test sets) so that one of
its patient reports is of a held-out test patient.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vbiopsy.commands import progress_bar, say
from vbiopsy.config import DemoConfig
from vbiopsy.data.manifest import Manifest
from vbiopsy.errors import InputError, VbiopsyError
from vbiopsy.tasks.labels import TaskLabels

MGMTNET_MIN_GLIOMAS = 8
"""Below this, two folds plus a test set leave too few gliomas to train a segmentation."""
SYSTEM_NAMES = {"aslnet": "ASLNet 12-month survival", "mgmtnet": "MGMT-Net (segmentation + IDH/1p19q/TERT)",
                "diagnoser": "Adaptive-Diagnoser (tumour type)"}
"""Demo run folder name → what it is, for printed lines."""


@dataclass(frozen=True)
class PreprocessedCohort:
    """Where the demo's trainings read from: the MRI-Processor's manifest of every patient (``everyone``)
    and its glioma rows (``gliomas``), both CSV manifests with absolute-able relative paths."""

    folder: Path
    everyone: Path
    gliomas: Path


@dataclass(frozen=True)
class PatientReport:
    """One patient report: the file, the subject, and the run whose held-out test set it came from."""

    path: Path
    subject_id: str
    run: str


def preprocess_demo_cohort(config: DemoConfig, cohort: Path, out: Path) -> PreprocessedCohort:
    """MRI-Processor on the phantoms with the skull-stripped preset (phantoms are not "raw"), resampled
    to the cohort's own spacing (no upsampling) and not intensity-normalised: ASLNet reads ASL in its
    own units (its raw/log channels), MGMT-Net and the diagnoser z-score inside the brain themselves."""
    from vbiopsy.commands import preprocess_cohort
    from vbiopsy.preprocess.config import PreprocessConfig

    bias: dict[str, Any] = {"mask": "nonzero"}
    if config.n4_iterations is not None:
        bias["iterations"] = list(config.n4_iterations)
    preset = PreprocessConfig.skull_stripped(bias=bias, resample={"spacing_mm": config.spacing_mm},
                                             normalize={"enabled": False}, threads=1)
    run = preprocess_cohort(cohort, out, preset, jobs=config.jobs)
    if run.failed or run.manifest is None:
        raise VbiopsyError(f"preprocessing failed for {len(run.failed)} generated phantoms "
                           f"(see {run.summary}); this is a bug")
    everyone = Manifest.from_csv(run.manifest)
    frame = everyone.frame[everyone.frame["diagnosis"] == "glioma"].reset_index(drop=True)
    gliomas = Manifest(frame, run.manifest, everyone.modalities).to_csv(out / "manifest_gliomas.csv")
    return PreprocessedCohort(out, run.manifest, gliomas)


def split_shortfall(labels: TaskLabels, classes: tuple[Any, ...], test_fraction: float, folds: int) -> str | None:
    """Why ``labels`` cannot be split stratified into a test set and ``folds`` folds (``None`` if they can):
    every class of ``classes`` needs :func:`vbiopsy.data.splits.min_patients_per_class` patients."""
    from collections import Counter

    from vbiopsy.data.splits import min_patients_per_class

    need = min_patients_per_class(test_fraction, folds)
    counts = Counter(labels.classes[int(v)] for v in labels.y)
    short = [f"{c}: {counts.get(c, 0)}" for c in classes if counts.get(c, 0) < need]
    if not short:
        return None
    return (f"it needs {need} patients per {labels.name} class for a test set and {folds} folds "
            f"(got {', '.join(short)})")


def _load_demo_config(name: str, cohort: Path, config: DemoConfig, data: dict[str, Any],
                      optim: dict[str, Any], **sections: dict[str, Any]) -> Any:
    """A bundled demo config with the demo's cohort, seeds, test share and the given overrides."""
    from vbiopsy.train.run import bundled_config, load_train_config

    overrides = {"data": {"cohort": str(cohort.absolute()), "split_seed": config.seed,
                          "test_fraction": config.test_fraction, **data},
                 "optim": {"seed": config.seed, **optim}, **sections}
    return load_train_config(bundled_config(name), overrides)


def train_aslnet(config: DemoConfig, cohort: PreprocessedCohort, run_dir: Path) -> Path | None:
    """ASLNet 12-month survival (FiLM with age/sex/EOR) on the gliomas, evaluated and explained; ``None``
    (with the reason printed) when the gliomas are too few for its split."""
    from vbiopsy.tasks.labels import task_labels
    from vbiopsy.train.cohort import label_options, label_task
    from vbiopsy.train.run import train

    train_config = _load_demo_config("aslnet-survival-demo.yaml", cohort.gliomas, config,
                                     {"folds": config.aslnet_folds}, {"max_epochs": config.aslnet_epochs},
                                     explain={"max_patients": 3})
    labels = task_labels(Manifest.from_csv(cohort.gliomas).frame, label_task(train_config),
                         **label_options(train_config))
    shortfall = split_shortfall(labels, labels.classes, config.test_fraction, config.aslnet_folds)
    if shortfall:
        say(f"ASLNet demo training skipped: {shortfall}; generate more patients (--patients)")
        return None
    train(train_config, run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    model, base = metrics["test"]["auc"], metrics["baseline_test"]["auc"]
    say(f"ASLNet 12-month survival on {metrics['test']['n']} test phantoms: AUC {model['auc']:.2f} "
        f"[{model['low']:.2f}, {model['high']:.2f}]; clinical-only baseline {base['auc']:.2f} "
        f"(a demo-sized cohort: see benchmarks/bench_aslnet.py for real figures)")
    return run_dir


def train_mgmtnet(config: DemoConfig, cohort: PreprocessedCohort, run_dir: Path) -> Path | None:
    """MGMT-Net (sub-region segmentation + IDH/1p19q/TERT) on the gliomas, evaluated; ``None`` (reason
    printed) below :data:`MGMTNET_MIN_GLIOMAS` gliomas."""
    from vbiopsy.train.run import train

    n_gliomas, need = len(Manifest.from_csv(cohort.gliomas)), max(MGMTNET_MIN_GLIOMAS, config.mgmtnet_folds + 1)
    if n_gliomas < need:
        say(f"MGMT-Net demo training skipped: it needs at least {need} gliomas (got {n_gliomas}); "
            "generate more patients (--patients)")
        return None
    train_config = _load_demo_config("mgmtnet-demo.yaml", cohort.gliomas, config,
                                     {"folds": config.mgmtnet_folds, "jobs": config.jobs},
                                     {"max_epochs": config.mgmtnet_epochs})
    train(train_config, run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())["test"]
    wt = metrics["segmentation"]["regions"]["WT"]["dice"]
    idh = metrics["markers"]["idh"]
    idh_text = (f"IDH AUC {idh['auc']['auc']:.2f} on {idh['n']} gliomas" if "auc" in idh
                else f"IDH AUC undefined ({idh.get('reason')})")
    say(f"MGMT-Net on {metrics['segmentation']['n_cases']} test phantoms: whole-tumour Dice {wt['mean']:.2f}; "
        f"{idh_text} (a demo-sized run: see benchmarks/bench_mgmtnet.py for real figures)")
    return run_dir


def train_diagnoser(config: DemoConfig, cohort: PreprocessedCohort, run_dir: Path) -> Path | None:
    """Adaptive-Diagnoser (glioma / lymphoma / germinoma / other from T1c) on every patient, evaluated,
    with Grad-CAM overlays; ``None`` (reason printed) when a tumour type is too rare for its split."""
    from vbiopsy.data.schema import DIAGNOSES
    from vbiopsy.train.diagnosis_data import diagnosis_labels
    from vbiopsy.train.run import train

    shortfall = split_shortfall(diagnosis_labels(Manifest.from_csv(cohort.everyone).frame), DIAGNOSES,
                                config.test_fraction, config.diagnoser_folds)
    if shortfall:
        say(f"Adaptive-Diagnoser demo training skipped: {shortfall}; generate more patients (--patients) "
            "or lower glioma_fraction")
        return None
    train_config = _load_demo_config("diagnoser-demo.yaml", cohort.everyone, config,
                                     {"folds": config.diagnoser_folds, "jobs": config.jobs},
                                     {"max_epochs": config.diagnoser_epochs}, explain={"max_patients": 4})
    train(train_config, run_dir)
    test = json.loads((run_dir / "metrics.json").read_text())["test"]
    say(f"Adaptive-Diagnoser on {test['n']} test phantoms: accuracy {test['accuracy']:.2f}, balanced accuracy "
        f"{test['balanced_accuracy']:.2f} (a demo-sized run: see benchmarks/bench_diagnoser.py for real figures)")
    return run_dir


def first_test_subject(run_dir: Path, avoid: tuple[str, ...] = ()) -> str:
    """The first held-out test subject of a run's ``splits.json`` not in ``avoid`` (else the first one)."""
    from vbiopsy.data.splits import Splits

    test = list(Splits.load(run_dir / "splits.json").test)
    if not test:
        raise InputError(run_dir / "splits.json", "the run has no held-out test patient to report on")
    return next((s for s in test if s not in avoid), test[0])


def glioma_patient_report(runs: dict[str, Path], out: Path) -> PatientReport | None:
    """Patient report of a held-out glioma: MGMT-Net's (predicted sub-regions + markers), else ASLNet's
    (12-month survival + IG saliency); ``None`` when neither system ran."""
    from vbiopsy.train.config import TrainConfig
    from vbiopsy.train.predict import predict_subjects
    from vbiopsy.train.profile_config import ProfileConfig
    from vbiopsy.train.profile_predict import predict_profile
    from vbiopsy.train.run import load_run_config

    name = "mgmtnet" if "mgmtnet" in runs else "aslnet" if "aslnet" in runs else None
    if name is None:
        return None
    run_dir = runs[name]
    subject = first_test_subject(run_dir)
    folder = out / name
    config = load_run_config(run_dir)
    if isinstance(config, ProfileConfig):
        predict_profile(config, run_dir, [subject], folder, report=True)
    elif isinstance(config, TrainConfig):
        predict_subjects(config, run_dir, [subject], folder, report=True)
    return PatientReport(_written(folder, subject), subject, name)


def diagnosis_patient_report(runs: dict[str, Path], out: Path, avoid: tuple[str, ...]) -> PatientReport | None:
    """Patient report of a held-out patient diagnosed by the Adaptive-Diagnoser (probabilities + Grad-CAM),
    another patient than ``avoid`` where the test set allows; ``None`` when the diagnoser did not run."""
    from vbiopsy.report.patient_hooks import diagnosis_reports
    from vbiopsy.train.diagnosis_config import DiagnosisConfig
    from vbiopsy.train.diagnosis_predict import predict_diagnosis
    from vbiopsy.train.run import load_run_config

    if "diagnoser" not in runs:
        return None
    run_dir = runs["diagnoser"]
    subject = first_test_subject(run_dir, avoid)
    folder = out / "diagnoser"
    config = load_run_config(run_dir)
    if not isinstance(config, DiagnosisConfig):
        raise InputError(run_dir, "not an Adaptive-Diagnoser run (task: diagnosis)")
    predictions = predict_diagnosis(config, run_dir, [subject], folder, saliency=True)
    diagnosis_reports(config, run_dir, predictions, None)
    return PatientReport(_written(folder, subject), subject, "diagnoser")


def _written(folder: Path, subject: str) -> Path:
    """The report a predictor wrote for ``subject`` in ``folder`` (its absence is a bug, not a user error)."""
    path = folder / f"{subject}_report.html"
    if not path.is_file():
        raise VbiopsyError(f"no patient report written at {path}; this is a bug")
    return path


def write_reports(runs: dict[str, Path], out: Path) -> dict[str, Path]:
    """The cohort report of every demo run and the two patient reports, with a progress bar; returns
    ``{"cohort_report": ..., "patient_report_<run>": ...}`` and prints which patient each report is."""
    from vbiopsy.report.cohort_report import build_cohort_report

    if not runs:
        say("reports skipped: no system was trained")
        return {}
    paths: dict[str, Path] = {}
    with progress_bar("reports (cohort, 2 patients)") as update:
        update(0, 3)
        paths["cohort_report"] = build_cohort_report(list(runs.values()), out / "cohort_report.html")
        update(1, 3)
        glioma = glioma_patient_report(runs, out / "patients")
        update(2, 3)
        diagnosed = diagnosis_patient_report(runs, out / "patients", (glioma.subject_id,) if glioma else ())
        update(3, 3)
    for number, report in enumerate(r for r in (glioma, diagnosed) if r is not None):
        paths[f"patient_report_{report.run}"] = report.path
        say(f"patient report {number + 1}: {report.subject_id}, a held-out test patient of the "
            f"{SYSTEM_NAMES[report.run]} run")
    return paths
