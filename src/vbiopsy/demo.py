"""``vbiopsy demo``: the embedded default, end to end, on a freshly generated phantom cohort.

Steps, each announced and timed (progress bars for the long ones): generate a phantom cohort (UCSF-PDGM
layout, all four tumour types) → read it as any user cohort, integrity check, cohort summary (JSON,
Markdown, terminal tables), a modality montage of one patient, patient-level splits → MRI-Processor
preprocessing → the demo configs of ASLNet, MGMT-Net and the Adaptive-Diagnoser (trained, evaluated,
explained; :mod:`vbiopsy.demo_steps`) → a cohort report of the runs and two patient reports of held-out
test patients. ``DemoConfig(quick=True)`` (``vbiopsy demo --quick``) runs the same steps smaller.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vbiopsy.atomic import write_text_atomic
from vbiopsy.commands import check_and_summarise, generate_phantoms, prepare_output_dir, say
from vbiopsy.config import DemoConfig, save_config
from vbiopsy.errors import VbiopsyError

RUN_FOLDERS = {"aslnet": "aslnet-survival", "mgmtnet": "mgmtnet", "diagnoser": "diagnoser"}
"""Demo system → its run folder under the demo's output folder."""


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


@dataclass
class StepClock:
    """Wall time of each demo step (seconds), printed and written to ``timings.json`` at the end."""

    started: float = field(default_factory=time.perf_counter)
    steps: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def step(self, name: str, total: int) -> Iterator[None]:
        """Time one step; announce it as ``[k/total] name``."""
        say(f"[{len(self.steps) + 1}/{total}] {name}")
        begun = time.perf_counter()
        yield
        self.steps[name] = round(time.perf_counter() - begun, 1)

    @property
    def total(self) -> float:
        """Seconds since the clock started."""
        return round(time.perf_counter() - self.started, 1)


def _cohort_outputs(config: DemoConfig, out: Path) -> dict[str, Path]:
    """Check, summary (JSON + Markdown), manifest, montage and cohort splits of the generated cohort."""
    from vbiopsy.commands import split_cohort
    from vbiopsy.data.layouts import read_cohort

    paths: dict[str, Path] = {}
    summary_json = out / "cohort_summary.json"
    result = check_and_summarise(out / "cohort", jobs=config.jobs, summary_json=summary_json)
    if not result.ok:
        raise VbiopsyError(f"the generated cohort failed its check ({len(result.problems)} problems); this is a bug")
    paths["summary_json"] = summary_json
    paths["summary_md"] = write_text_atomic(out / "cohort_summary.md",
                                            summary_markdown(json.loads(summary_json.read_text())))
    manifest = read_cohort(out / "cohort")
    paths["manifest"] = manifest.to_csv(out / "manifest.csv")
    first = manifest.row(manifest.subjects[0])
    paths["montage"] = _montage(first, manifest.modalities, out / f"montage_{first['subject_id']}.png")
    paths["splits"] = out / "splits.json"
    split_cohort(out / "manifest.csv", paths["splits"], label=config.split_label,
                 test_fraction=config.test_fraction, n_folds=config.n_folds, seed=config.seed,
                 rare_classes=config.rare_classes)
    return paths


def run_demo(config: DemoConfig, out: Path) -> dict[str, Path]:
    """Run the demo into ``out`` (replacing an earlier demo there) and return the paths it wrote; prints
    them (``name: path`` on stdout), the step times and the total time."""
    from vbiopsy.data.phantoms import PhantomConfig
    from vbiopsy.demo_steps import preprocess_demo_cohort, train_aslnet, train_diagnoser, train_mgmtnet, write_reports

    clock = StepClock()
    out = prepare_output_dir(out.absolute(), overwrite=True, marker="demo_config.yaml")
    paths: dict[str, Path] = {"config": save_config(config, out / "demo_config.yaml")}
    trainers = {"aslnet": (config.aslnet, train_aslnet, "training ASLNet (12-month survival, gliomas)"),
                "mgmtnet": (config.mgmtnet, train_mgmtnet, "training MGMT-Net (segmentation + markers, gliomas)"),
                "diagnoser": (config.diagnoser, train_diagnoser, "training the Adaptive-Diagnoser (tumour type)")}
    n_steps = 4 + sum(enabled for enabled, _, _ in trainers.values())
    with clock.step("phantom cohort", n_steps):
        phantom_cfg = PhantomConfig(n_patients=config.n_patients, seed=config.seed, spacing_mm=config.spacing_mm,
                                    diagnosis_mix=config.diagnosis_mix)
        paths["cohort"] = generate_phantoms(phantom_cfg, out / "cohort", jobs=config.jobs).root
    with clock.step("check, summary, montage, splits", n_steps):
        paths |= _cohort_outputs(config, out)
    with clock.step("preprocessing (MRI-Processor)", n_steps):
        cohort = preprocess_demo_cohort(config, paths["cohort"], out / "preprocessed")
        paths["preprocessed"] = cohort.everyone
    runs: dict[str, Path] = {}
    for name, (enabled, trainer, title) in trainers.items():
        if enabled:
            with clock.step(title, n_steps):
                run = trainer(config, cohort, out / RUN_FOLDERS[name])
            if run is not None:
                runs[name] = paths[f"{name}_run"] = run
    with clock.step("cohort report and patient reports", n_steps):
        paths |= write_reports(runs, out / "reports")
    timings = {"steps_s": clock.steps, "total_s": clock.total, "quick": config.quick}
    paths["timings"] = write_text_atomic(out / "timings.json", json.dumps(timings, indent=1) + "\n")
    say("step times: " + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in clock.steps.items()))
    say(f"demo finished in {clock.total:.1f} s")
    for name, path in paths.items():
        print(f"{name}: {path}")
    return paths
