"""``vbiopsy demo``: the embedded default, end to end, on a freshly generated phantom cohort.

Steps: generate a phantom cohort (UCSF-PDGM layout) → read it as any user cohort → integrity
check → cohort summary (JSON, Markdown, terminal tables) → a modality montage of one patient →
patient-level splits. Later pipeline stages extend this list.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from vbiopsy.atomic import write_text_atomic
from vbiopsy.commands import check_and_summarise, generate_phantoms, prepare_output_dir, say
from vbiopsy.config import DemoConfig, save_config
from vbiopsy.errors import VbiopsyError


def summary_markdown(summary: dict[str, Any]) -> str:
    """The cohort summary as a Markdown document a person can read."""
    lines = [f"# Cohort summary: {summary['source']}", "",
             f"- subjects: {summary['n_subjects']} (patients: {summary['n_patients']})",
             f"- segmentations: {summary['segmentations']}",
             f"- problems found by the check: {summary.get('n_problems', 'not checked')}", "",
             "## Modalities", "", "| modality | listed | missing |", "|---|---|---|"]
    lines += [f"| {m} | {c['listed']} | {c['missing']} |" for m, c in summary["modalities"].items()]
    lines += ["", "## Counts per class", "", "| column | counts |", "|---|---|"]
    lines += [f"| {col} | {', '.join(f'{k}: {v}' for k, v in counts.items())} |"
              for col, counts in summary["classes"].items()]
    numeric = {**summary.get("continuous", {}), **{f"{k} volume (ml)": v for k, v in summary.get("tumour_ml", {}).items()}}
    lines += ["", "## Continuous values", "", "| variable | n | median [q1, q3] | range |", "|---|---|---|---|"]
    lines += [f"| {k} | {d['n']} | {d['median']} [{d['q1']}, {d['q3']}] | {d['min']} – {d['max']} |"
              for k, d in numeric.items() if d.get("n")]
    return "\n".join(lines) + "\n"


def _montage(manifest_row: dict[str, Any], modalities: tuple[str, ...], out: Path) -> Path:
    from vbiopsy.data.labels import to_brats2024
    from vbiopsy.data.nifti import load_volume
    from vbiopsy.report.figures import modality_montage

    images = {m: load_volume(manifest_row[m]).array for m in modalities if manifest_row.get(m)}
    seg = None
    if manifest_row.get("seg"):
        seg = to_brats2024(load_volume(manifest_row["seg"], dtype=np.int16, allow_empty=True).array,
                           manifest_row["seg_convention"])
    return modality_montage(images, seg, out, title=f"{manifest_row['subject_id']} (axial, RAS)")


ASLNET_MIN_PATIENTS = 30
"""Below this, a 12-month survival split has too few deaths for a test set and 3 folds."""


def _train_aslnet(config: DemoConfig, cohort: Path, run_dir: Path) -> Path:
    """ASLNet 12-month survival (FiLM with age/sex/EOR) on the demo cohort, evaluated and explained."""
    from vbiopsy.train.run import bundled_config, load_train_config, train

    overrides = {"data": {"cohort": str(cohort.absolute()), "folds": config.aslnet_folds, "split_seed": config.seed},
                 "optim": {"max_epochs": config.aslnet_epochs, "seed": config.seed}, "explain": {"max_patients": 3}}
    train_config = load_train_config(bundled_config("aslnet-survival-demo.yaml"), overrides)
    train(train_config, run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    model, base = metrics["test"]["auc"], metrics["baseline_test"]["auc"]
    say(f"ASLNet 12-month survival on {metrics['test']['n']} test phantoms: AUC {model['auc']:.2f} "
        f"[{model['low']:.2f}, {model['high']:.2f}]; clinical-only baseline {base['auc']:.2f} "
        f"(a demo-sized cohort: see benchmarks/bench_aslnet.py for real figures)")
    return run_dir


MGMTNET_MIN_PATIENTS = 8
"""Below this, two folds plus a test set leave too few patients to train a segmentation."""


def _train_mgmtnet(config: DemoConfig, cohort: Path, run_dir: Path) -> Path:
    """MGMT-Net (sub-region segmentation + IDH/1p19q/TERT) on the demo cohort, evaluated."""
    from vbiopsy.train.run import bundled_config, load_train_config, train

    overrides = {"data": {"cohort": str(cohort.absolute()), "folds": config.mgmtnet_folds, "split_seed": config.seed,
                          "jobs": config.jobs},
                 "optim": {"max_epochs": config.mgmtnet_epochs, "seed": config.seed}}
    train(load_train_config(bundled_config("mgmtnet-demo.yaml"), overrides), run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())["test"]
    wt = metrics["segmentation"]["regions"]["WT"]["dice"]
    idh = metrics["markers"]["idh"]
    idh_text = (f"IDH AUC {idh['auc']['auc']:.2f} on {idh['n']} gliomas" if "auc" in idh
                else f"IDH AUC undefined ({idh.get('reason')})")
    say(f"MGMT-Net on {metrics['segmentation']['n_cases']} test phantoms: whole-tumour Dice {wt['mean']:.2f}; "
        f"{idh_text} (a demo-sized run: see benchmarks/bench_mgmtnet.py for real figures)")
    return run_dir


def run_demo(config: DemoConfig, out: Path) -> dict[str, Path]:
    """Run the demo into ``out`` and return the paths it wrote; prints them and the total time."""
    from vbiopsy.commands import split_cohort
    from vbiopsy.data.layouts import read_cohort
    from vbiopsy.data.phantoms import PhantomConfig
    from vbiopsy.data.summary import summarise

    start = time.perf_counter()
    out = prepare_output_dir(out, overwrite=True, marker="demo_config.yaml")
    paths: dict[str, Path] = {"config": save_config(config, out / "demo_config.yaml")}
    phantom_cfg = PhantomConfig(n_patients=config.n_patients, seed=config.seed, spacing_mm=config.spacing_mm)
    cohort = generate_phantoms(phantom_cfg, out / "cohort", jobs=config.jobs)
    paths["cohort"] = cohort.root
    summary_json = out / "cohort_summary.json"
    result = check_and_summarise(cohort.root, jobs=config.jobs, summary_json=summary_json)
    if not result.ok:
        raise VbiopsyError(f"the generated cohort failed its check ({len(result.problems)} problems); this is a bug")
    summary = json.loads(summary_json.read_text())
    paths["summary_json"] = summary_json
    paths["summary_md"] = write_text_atomic(out / "cohort_summary.md", summary_markdown(summary))
    manifest = read_cohort(cohort.root)
    paths["manifest"] = manifest.to_csv(out / "manifest.csv")
    first = manifest.row(manifest.subjects[0])
    paths["montage"] = _montage(first, manifest.modalities, out / f"montage_{first['subject_id']}.png")
    paths["splits"] = out / "splits.json"
    split_cohort(out / "manifest.csv", paths["splits"], label=config.split_label,
                 test_fraction=config.test_fraction, n_folds=config.n_folds, seed=config.seed,
                 rare_classes=config.rare_classes)
    if config.aslnet and config.n_patients >= ASLNET_MIN_PATIENTS:
        paths["aslnet_run"] = _train_aslnet(config, cohort.root, out / "aslnet-survival")
    elif config.aslnet:
        say(f"ASLNet demo training skipped: it needs at least {ASLNET_MIN_PATIENTS} patients "
            f"(got {config.n_patients}) for a stratified test set and 3 folds")
    if config.mgmtnet and config.n_patients >= MGMTNET_MIN_PATIENTS:
        paths["mgmtnet_run"] = _train_mgmtnet(config, cohort.root, out / "mgmtnet")
    elif config.mgmtnet:
        say(f"MGMT-Net demo training skipped: it needs at least {MGMTNET_MIN_PATIENTS} patients (got {config.n_patients})")
    elapsed = time.perf_counter() - start
    say(f"demo finished in {elapsed:.1f} s")
    for name, path in paths.items():
        print(f"{name}: {path}")
    return paths
