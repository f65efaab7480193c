"""Command-line interface: ``vbiopsy <verb>``. Parses options and calls library functions.

Heavy imports (numpy, nibabel, torch, …) happen inside the commands so ``vbiopsy --help`` is
instant. Errors the user can fix are printed as ``error: …`` lines with a non-zero exit code and
no traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from vbiopsy import __version__
from vbiopsy.cli_errors import EXIT_ERROR, EXIT_PROBLEMS, OneLineErrors, user_errors

__all__ = ["EXIT_ERROR", "EXIT_PROBLEMS", "app", "main"]

app = typer.Typer(
    cls=OneLineErrors,
    name="vbiopsy",
    help="Virtual biopsy of brain tumours from MRI.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
cohort_app = typer.Typer(help="Inspect, check and split a cohort.", no_args_is_help=True)
app.add_typer(cohort_app, name="cohort")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"vbiopsy {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Virtual biopsy of brain tumours from MRI."""


@app.command()
@user_errors
def demo(
    out: Path = typer.Option(Path("vbiopsy-demo"), "--out", "-o", help="Folder for everything the demo writes."),
    n_patients: Optional[int] = typer.Option(None, "--patients", "-n", help="Phantom patients (default 80; 40 with --quick)."),
    seed: Optional[int] = typer.Option(None, "--seed"),
    jobs: Optional[int] = typer.Option(None, "--jobs", "-j", help="Worker processes (default 2)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Demo config YAML."),
    quick: bool = typer.Option(False, "--quick", help="Smaller, faster variant (fewer patients, epochs, folds)."),
) -> None:
    """From nothing to reports: phantom cohort → check → preprocessing → ASLNet, MGMT-Net and
    Adaptive-Diagnoser demo trainings → cohort report and two patient reports."""
    from vbiopsy.config import DemoConfig, load_config
    from vbiopsy.demo import run_demo

    cfg = load_config(DemoConfig, config, n_patients=n_patients, seed=seed, jobs=jobs, quick=quick or None)
    run_demo(cfg, out)


@app.command()
@user_errors
def phantoms(
    out: Path = typer.Argument(..., help="Folder to write the cohort to (created; must be empty)."),
    n_patients: Optional[int] = typer.Option(None, "--patients", "-n", help="Number of patients (default 100)."),
    seed: Optional[int] = typer.Option(None, "--seed"),
    spacing: Optional[float] = typer.Option(None, "--spacing", help="Isotropic voxel size in mm."),
    layout: Optional[str] = typer.Option(None, "--layout", help="ucsf-pdgm or brats2024."),
    raw: Optional[bool] = typer.Option(None, "--raw/--clean", help="Raw scans: skull, random spacing/orientation."),
    jobs: int = typer.Option(2, "--jobs", "-j", min=1, help="Worker processes."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Phantom config YAML."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Allow a non-empty output folder."),
) -> None:
    """Generate a synthetic, anatomically realistic cohort (UCSF-PDGM or BraTS 2024 layout)."""
    from vbiopsy.config import load_config
    from vbiopsy.data.phantoms import PhantomConfig
    from vbiopsy.commands import generate_phantoms

    cfg = load_config(PhantomConfig, config, n_patients=n_patients, seed=seed, spacing_mm=spacing,
                      layout=layout, raw=raw)
    generate_phantoms(cfg, out, jobs=jobs, overwrite=overwrite)


@app.command()
@user_errors
def preprocess(
    cohort: Path = typer.Argument(..., help="Cohort folder or manifest CSV."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (resumable: finished patients are skipped)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Preprocessing config YAML."),
    preset: str = typer.Option("raw", "--preset", help="raw (every step) or skull-stripped (BraTS-like input)."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, help="Worker processes."),
    layout: str = typer.Option("auto", "--layout"),
    clinical: Optional[Path] = typer.Option(None, "--clinical"),
) -> None:
    """MRI-Processor: N4, co-registration, template registration, skull strip, resampling, normalisation."""
    from vbiopsy.commands import preprocess_cohort
    from vbiopsy.config import build_config, deep_merge, read_yaml
    from vbiopsy.errors import ConfigError
    from vbiopsy.preprocess.config import PreprocessConfig

    presets = {"raw": {}, "skull-stripped": PreprocessConfig.skull_stripped().model_dump(mode="json")}
    if preset not in presets:
        raise ConfigError(f"--preset {preset!r}: expected one of {', '.join(presets)}")
    data = deep_merge(presets[preset], read_yaml(config)) if config is not None else presets[preset]
    cfg = build_config(PreprocessConfig, data, str(config) if config else f"preset {preset}")
    run = preprocess_cohort(cohort, out, cfg, jobs=jobs, layout=layout, clinical=clinical)
    if run.failed:
        raise typer.Exit(EXIT_PROBLEMS)


@app.command()
@user_errors
def train(
    config: Path = typer.Argument(..., help="Training config YAML (configs/aslnet-*.yaml, mgmtnet*.yaml, diagnoser*.yaml)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder (created)."),
    cohort: Optional[Path] = typer.Option(None, "--cohort", help="Cohort folder or manifest CSV (overrides data.cohort)."),
    splits: Optional[Path] = typer.Option(None, "--splits", help="splits.json to use (overrides data.splits)."),
    max_epochs: Optional[int] = typer.Option(None, "--max-epochs", min=1, help="Override optim.max_epochs."),
    jobs: Optional[int] = typer.Option(None, "--jobs", "-j", min=1, help="Processes for cutting the ROI cubes."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Override optim.seed."),
    evaluate: bool = typer.Option(True, "--evaluate/--no-evaluate", help="Evaluate on the test set at the end."),
    resume: bool = typer.Option(False, "--resume", help="Continue a killed run in --out (same config, any task): "
                                                        "finished folds kept, the interrupted one from its last epoch."),
    deterministic: Optional[bool] = typer.Option(None, "--deterministic/--nondeterministic",
                                                 help="Override optim.deterministic: seed every RNG and use "
                                                      "deterministic algorithms (on by default)."),
    devices: Optional[int] = typer.Option(None, "--devices", min=1,
                                          help="Override optim.devices: DDP processes per fit (ASLNet tasks; "
                                               "the batch size stays the effective batch)."),
    nodes: Optional[int] = typer.Option(None, "--nodes", min=1,
                                        help="Override optim.nodes: machines of a multi-node DDP run (SLURM/torchrun)."),
) -> None:
    """Cross-validate a model (one per fold), fit post-hoc rules on OOF, then evaluate on the test set."""
    from vbiopsy.train.resume import train_command
    from vbiopsy.train.run import load_train_config

    data = {k: str(v.absolute()) for k, v in (("cohort", cohort), ("splits", splits)) if v is not None}
    if jobs is not None:
        data["jobs"] = jobs
    optim = {k: v for k, v in (("max_epochs", max_epochs), ("seed", seed), ("deterministic", deterministic),
                               ("devices", devices), ("nodes", nodes)) if v is not None}
    overrides = {k: v for k, v in (("data", data), ("optim", optim)) if v}
    train_command(load_train_config(config, overrides), out, evaluate=evaluate, resume=resume)


@app.command()
@user_errors
def evaluate(
    run_dir: Path = typer.Argument(..., help="A finished training run folder."),
) -> None:
    """Evaluate a trained run on its held-out test set (never retrains)."""
    from vbiopsy.train.run import evaluate_run

    evaluate_run(run_dir)


@app.command()
@user_errors
def report(
    run_dirs: list[Path] = typer.Argument(..., help="Evaluated run folders (and `vbiopsy ablation` output folders)."),
    out: Path = typer.Option(Path("report.html"), "--out", "-o", help="HTML file to write (one self-contained file)."),
) -> None:
    """Cohort report: ROC, calibration, decision curves, confusion matrices, survival, segmentation, provenance."""
    from vbiopsy.report.cohort_report import build_cohort_report

    print(f"report: {build_cohort_report(run_dirs, out)}")


@app.command("export")
@user_errors
def export_models(
    run_dir: Path = typer.Argument(..., help="A finished training run folder (ASLNet, MGMT-Net or diagnoser)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the exported models and export.json."),
    fmt: str = typer.Option("both", "--format", help="onnx, torchscript or both."),
) -> None:
    """Export each fold model and the fold ensemble to ONNX / TorchScript, with a parity check against PyTorch
    (max |diff| <= 1e-4 on probabilities, 1e-3 on MGMT-Net logits, written to export.json; the command fails
    above it) and the preprocessing metadata. A format that cannot represent a model is recorded and skipped."""
    from vbiopsy.train.export import export_formats, export_run

    print(f"export: {export_run(run_dir, out, formats=export_formats(fmt))}")


@app.command()
@user_errors
def predict(
    run_dir: Path = typer.Argument(..., help="A finished training run folder."),
    subjects: list[str] = typer.Argument(..., help="Subject IDs to predict."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for predictions.csv (and saliency maps)."),
    cohort: Optional[Path] = typer.Option(None, "--cohort", help="Cohort holding the subjects (default: the run's)."),
    saliency: bool = typer.Option(False, "--saliency", help="Write saliency NIfTI per subject (scan grid): IG for "
                                  "ASLNet, Grad-CAM for the diagnoser and per MGMT-Net marker (every subject, not "
                                  "only the config's explain.max_patients)."),
    report: bool = typer.Option(False, "--report", help="Also write <id>_report.html per subject (slices, viewer)."),
) -> None:
    """Predict with a run's fold ensemble; the OOF-fitted decision rule is applied."""
    from vbiopsy.train.predict import predict_subjects
    from vbiopsy.train.profile_config import ProfileConfig
    from vbiopsy.train.profile_predict import predict_profile
    from vbiopsy.train.diagnosis_config import DiagnosisConfig
    from vbiopsy.train.run import load_run_config

    config = load_run_config(run_dir)
    if isinstance(config, DiagnosisConfig):
        from vbiopsy.train.diagnosis_predict import predict_diagnosis

        path = predict_diagnosis(config, run_dir, subjects, out, cohort=cohort, saliency=saliency or report)
        if report:
            from vbiopsy.report.patient_hooks import diagnosis_reports

            diagnosis_reports(config, run_dir, path, cohort)
    elif isinstance(config, ProfileConfig):
        path = predict_profile(config, run_dir, subjects, out, cohort=cohort, report=report,
                               saliency=True if saliency else None)
    else:
        path = predict_subjects(config, run_dir, subjects, out, cohort=cohort, saliency=saliency, report=report)
    print(f"predictions: {path}")
    if report:
        print(f"reports: {out / '<subject>_report.html'}")


@app.command()
@user_errors
def ablation(
    config: Path = typer.Argument(..., help="MGMT-Net (task: profile) or Adaptive-Diagnoser (task: diagnosis) config."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for one run per variant and the table CSV."),
    cohort: Optional[Path] = typer.Option(None, "--cohort", help="Cohort folder or manifest CSV (overrides data.cohort)."),
    max_epochs: Optional[int] = typer.Option(None, "--max-epochs", min=1, help="Override optim.max_epochs."),
    backbones: bool = typer.Option(False, "--backbones", help="Diagnoser: compare backbones (Table 3) instead."),
) -> None:
    """Train the paper's ablation variants on one split and print one table: MGMT-Net (full, no CMAF, no Swin,
    GAP) or the Adaptive-Diagnoser (Table 2: no localisation … refined prior + MCA; --backbones: Table 3)."""
    from rich.console import Console
    from rich.table import Table

    from vbiopsy.errors import ConfigError
    from vbiopsy.train.diagnosis_config import DiagnosisConfig
    from vbiopsy.train.run import load_train_config

    overrides: dict = {}
    if cohort is not None:
        overrides["data"] = {"cohort": str(cohort.absolute())}
    if max_epochs is not None:
        overrides["optim"] = {"max_epochs": max_epochs}
    loaded = load_train_config(config, overrides)
    if isinstance(loaded, DiagnosisConfig):
        from vbiopsy.train.diagnosis_run import ablation_table, backbone_table

        (backbone_table if backbones else ablation_table)(loaded, out)  # prints its table
        print(f"table: {out / ('backbone_table.csv' if backbones else 'row_table.csv')}")
        return
    if loaded.task != "profile" or backbones:
        raise ConfigError(f"{config}: the ablation command runs MGMT-Net (task: profile) and diagnoser "
                          f"(task: diagnosis) configs{'; --backbones is for diagnoser configs' if backbones else ''}, "
                          f"not {loaded.task!r}")
    from vbiopsy.train.profile_ablation import run_ablation

    frame = run_ablation(loaded, out)  # type: ignore[arg-type]
    table = Table(title="MGMT-Net ablation (out-of-fold, same split)")
    for column in frame.columns:
        table.add_column(str(column))
    for row in frame.itertuples(index=False):
        table.add_row(*["—" if v is None or v != v else (f"{v:.3f}" if isinstance(v, float) else str(v)) for v in row])
    Console().print(table)
    print(f"table: {out / 'ablation.csv'}")


@app.command()
@user_errors
def tune(
    config: Path = typer.Argument(..., help="Training config YAML: the fixed part of every trial."),
    out: Path = typer.Option(..., "--out", "-o", help="Study folder (trial_NNNN runs, best_config.yaml)."),
    trials: int = typer.Option(20, "--trials", "-n", min=1, help="Trials to run (on this machine)."),
    space: str = typer.Option("reference", "--space", help="reference (the authors' space) or small (CPU)."),
    storage: Optional[str] = typer.Option(None, "--storage", help="Optuna RDB URL shared by machines, e.g. sqlite:///study.db."),
    cohort: Optional[Path] = typer.Option(None, "--cohort", help="Cohort folder or manifest CSV (overrides data.cohort)."),
) -> None:
    """Optuna search scored on out-of-fold predictions only (no test label is read)."""
    from vbiopsy.train.run import load_train_config
    from vbiopsy.train.tune import tune as run_tune

    from vbiopsy.errors import ConfigError
    from vbiopsy.train.config import TrainConfig

    overrides = {"data": {"cohort": str(cohort.absolute())}} if cohort is not None else None
    loaded = load_train_config(config, overrides)
    if not isinstance(loaded, TrainConfig):
        raise ConfigError(f"{config}: tune supports the ASLNet tasks (grade, survival, survival_cox), not {loaded.task!r}")
    summary = run_tune(loaded, out, n_trials=trials, space=space,  # type: ignore[arg-type]
                       storage=storage)
    print(f"best config: {out / 'best_config.yaml'}")
    print(f"study: {summary}")


@cohort_app.command("check")
@user_errors
def cohort_check(
    cohort: Path = typer.Argument(..., help="Cohort folder or manifest CSV."),
    layout: str = typer.Option("auto", "--layout", help="auto, csv, ucsf-pdgm, brats2021 or brats2024."),
    clinical: Optional[Path] = typer.Option(None, "--clinical", help="Clinical table to merge (folder layouts)."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, help="Worker processes."),
    summary_json: Optional[Path] = typer.Option(None, "--summary-json", help="Also write the summary as JSON."),
) -> None:
    """Check every file and value of a cohort; print a summary and the problems (exit 1 if any)."""
    from vbiopsy.commands import check_and_summarise

    result = check_and_summarise(cohort, layout=layout, clinical=clinical, jobs=jobs, summary_json=summary_json)
    if not result.ok:
        raise typer.Exit(EXIT_PROBLEMS)


@cohort_app.command("manifest")
@user_errors
def cohort_manifest(
    cohort: Path = typer.Argument(..., help="Cohort folder."),
    out: Path = typer.Option(..., "--out", "-o", help="Manifest CSV to write."),
    layout: str = typer.Option("auto", "--layout"),
    clinical: Optional[Path] = typer.Option(None, "--clinical"),
) -> None:
    """Write the manifest a layout reader builds, as a CSV you can edit."""
    from vbiopsy.atomic import ensure_writable_dir
    from vbiopsy.data.layouts import read_cohort

    manifest = read_cohort(cohort, layout=layout, clinical=clinical)
    ensure_writable_dir(out.parent if str(out.parent) else Path("."))
    manifest.to_csv(out)
    typer.echo(f"wrote {out} ({len(manifest)} subjects, modalities {', '.join(manifest.modalities)})")


@cohort_app.command("split")
@user_errors
def cohort_split(
    cohort: Path = typer.Argument(..., help="Cohort folder or manifest CSV."),
    out: Path = typer.Option(..., "--out", "-o", help="splits.json to write."),
    label: str = typer.Option("grade", "--label", help="Column to stratify on."),
    test_fraction: float = typer.Option(0.2, "--test-fraction"),
    folds: int = typer.Option(5, "--folds"),
    seed: int = typer.Option(0, "--seed"),
    keep_in_train: list[str] = typer.Option([], "--keep-in-train", help="Class kept out of the test set (repeatable)."),
    rare_classes: str = typer.Option("error", "--rare-classes",
                                     help="error: refuse classes too rare to stratify; train: keep them in training."),
    layout: str = typer.Option("auto", "--layout"),
    clinical: Optional[Path] = typer.Option(None, "--clinical"),
) -> None:
    """Make patient-level splits: a stratified held-out test set and k folds inside the rest."""
    from vbiopsy.commands import split_cohort

    split_cohort(cohort, out, label=label, test_fraction=test_fraction, n_folds=folds, seed=seed,
                 keep_in_train=keep_in_train, rare_classes=rare_classes, layout=layout, clinical=clinical)


def main() -> None:
    """Console-script entry point."""
    app(prog_name="vbiopsy")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
