"""Cohort report: every number shown equals the run's JSON; figures embedded; independent checks of the
shown AUC and C-index against scikit-learn and lifelines; bad input gives one clear error."""

from __future__ import annotations

import base64
import json
import math
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from report_fakes import aslnet_run, diagnosis_run, profile_run, write_cohort

from vbiopsy.errors import ConfigError, InputError
from vbiopsy.report.cohort_report import build_cohort_report
from vbiopsy.report.run_folder import lookup

TASKS = ("grade", "survival", "survival_cox")


class _Cells(HTMLParser):
    """Collects ``data-json`` cells (source, text), image sources, figure captions and link targets."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: list[tuple[str, str]] = []
        self.images: list[str] = []
        self.captions: list[str] = []
        self.links: list[str] = []
        self._source: str | None = None
        self._in_caption = False
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "td" and a.get("data-json"):
            self._source, self._text = a["data-json"], []
        if tag == "img":
            self.images.append(a.get("src") or "")
        if tag == "figcaption":
            self._in_caption, self._text = True, []
        for key in ("href", "src"):
            if a.get(key) and tag != "img":
                self.links.append(a[key] or "")

    def handle_data(self, data: str) -> None:
        if self._source is not None or self._in_caption:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._source is not None:
            self.cells.append((self._source, "".join(self._text)))
            self._source = None
        if tag == "figcaption":
            self.captions.append("".join(self._text))
            self._in_caption = False


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("report_runs")
    cohort = write_cohort(root / "cohort")
    made = {task: aslnet_run(root, cohort, task) for task in TASKS}
    made["profile"] = profile_run(root, cohort)
    made["diagnosis"] = diagnosis_run(root, cohort)
    return made


@pytest.fixture(scope="module")
def report(runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[str, _Cells]:
    path = build_cohort_report(list(runs.values()), tmp_path_factory.mktemp("report") / "cohort.html")
    text = path.read_text(encoding="utf-8")
    parser = _Cells()
    parser.feed(text)
    return text, parser


def test_every_number_in_a_table_is_the_json_value(report: tuple[str, _Cells]) -> None:
    _, parsed = report
    assert len(parsed.cells) > 300
    loaded: dict[str, dict] = {}
    for source, text in parsed.cells:
        file, path = source.split("#", 1)
        data = loaded.setdefault(file, json.loads(Path(file).read_text()))
        value = lookup(data, path, missing=KeyError)
        assert value is not KeyError, f"{source}: no such key in the JSON"
        if value is None:
            assert text == "—", source
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            assert text == str(value), source
        elif isinstance(value, int):
            assert int(text) == value, source
        else:  # 3 decimals, or 3 significant digits for p-values
            assert math.isclose(float(text), value, rel_tol=5e-3, abs_tol=5e-4 + 1e-9), (source, text, value)


def test_the_key_figures_of_every_run_are_shown(runs: dict[str, Path], report: tuple[str, _Cells]) -> None:
    shown = {(Path(s.split("#")[0]).parent.name, s.split("#")[1]) for s, _ in report[1].cells}
    expected = {
        "run-grade": ["test.auc.auc", "test.auc.low", "test.auc.high", "test.brier", "test.at_tuned_rule.f1_macro",
                      "test.at_tuned_rule.f1_weighted", "oof.auc.auc", "model_minus_baseline.difference"],
        "run-survival": ["test.auc.auc", "test.calibration.ece", "test.calibrated.brier", "test.at_0.5.accuracy"],
        "run-survival_cox": ["test.c_index", "test.kaplan_meier.logrank.p_value", "test.events",
                             "model_minus_baseline.difference"],
        "run-profile": ["test.segmentation.regions.WT.dice.mean", "test.segmentation.regions.ET.hd95_mm.median",
                        "test.markers.idh.auc.auc", "oof.markers.tert.mcnemar_vs_majority.p_value"],
        "run-diagnosis": ["fold_mean.accuracy", "fold_sd.f1_macro", "pooled_oof.auc", "test.per_class.glioma.recall"],
    }
    for run, paths in expected.items():
        for path in paths:
            assert (run, path) in shown, (run, path)
    assert ("explain", "mean_share.raw") in shown  # Shapley table of explain/summary.json


def test_shown_auc_and_c_index_agree_with_reference_libraries(runs: dict[str, Path],
                                                              report: tuple[str, _Cells]) -> None:
    from lifelines.utils import concordance_index
    from sklearn.metrics import roc_auc_score

    cells = dict(report[1].cells)
    cohort = pd.read_csv(runs["grade"].parent / "cohort" / "manifest.csv", dtype={"subject_id": str})
    grade_of = dict(zip(cohort["subject_id"], cohort["grade"]))
    test = pd.read_csv(runs["grade"] / "test_predictions.csv", dtype={"subject_id": str})
    y = np.array([grade_of[s] - 2 for s in test["subject_id"]])
    expected = roc_auc_score(y, test[["grade_2", "grade_3", "grade_4"]].to_numpy(), multi_class="ovr")
    assert float(cells[f"{runs['grade'] / 'metrics.json'}#test.auc.auc"]) == pytest.approx(expected, abs=5e-4)

    oof = pd.read_csv(runs["survival_cox"] / "oof_predictions.csv")
    c_index = concordance_index(oof["time"], -oof["risk"], oof["event"])
    assert float(cells[f"{runs['survival_cox'] / 'metrics.json'}#oof.c_index"]) == pytest.approx(c_index, abs=5e-4)


def test_report_is_self_contained_with_captioned_png_figures(report: tuple[str, _Cells]) -> None:
    text, parsed = report
    assert len(parsed.images) >= 20
    for src in parsed.images:
        assert src.startswith("data:image/png;base64,")
        png = base64.b64decode(src.split(",", 1)[1])
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
        assert width > 100 and height > 100
    assert len(parsed.captions) == len(parsed.images)
    assert all(len(c) > 80 for c in parsed.captions)
    assert all(link.startswith("#") for link in parsed.links)  # no external resource or link
    assert not re.search(r"https?://", text)
    assert "differs from metrics.json" not in text  # every ROC band reproduced the stored AUC
    assert "not a validated medical device" in text


def test_metric_tables_name_the_average_and_the_patient_count(report: tuple[str, _Cells]) -> None:
    text = report[0]
    assert "macro one-vs-rest" in text and ">weighted<" in text and ">macro<" in text
    assert "patients" in text and "Kaplan–Meier" in text and "log-rank p" in text


def test_comparison_table_folder_is_rendered(tmp_path: Path) -> None:
    folder = tmp_path / "ablation"
    folder.mkdir()
    pd.DataFrame({"variant": ["full", "GAP marker pooling"], "dice_WT": [0.8123, 0.7456]}).to_csv(
        folder / "ablation.csv", index=False)
    text = build_cohort_report([folder], tmp_path / "a.html").read_text()
    assert "MGMT-Net ablation" in text and "0.812" in text and "GAP marker pooling" in text


def test_bad_arguments_raise_clear_errors(runs: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least one run"):
        build_cohort_report([], tmp_path / "r.html")
    with pytest.raises(ConfigError, match=r"\.html"):
        build_cohort_report([runs["grade"]], tmp_path / "r.pdf")
    with pytest.raises(InputError, match="not found"):
        build_cohort_report([tmp_path / "missing"], tmp_path / "r.html")
    unevaluated = tmp_path / "unevaluated"
    unevaluated.mkdir()
    for name in ("run.json", "config.yaml"):
        (unevaluated / name).write_text((runs["grade"] / name).read_text())
    with pytest.raises(InputError, match="vbiopsy evaluate"):
        build_cohort_report([unevaluated], tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


def test_cli_report_writes_the_file_and_reports_errors_in_one_line(runs: dict[str, Path], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from vbiopsy.cli import app

    out = tmp_path / "cli.html"
    result = CliRunner().invoke(app, ["report", str(runs["survival_cox"]), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.is_file() and "Kaplan" in out.read_text()
    bad = CliRunner().invoke(app, ["report", str(tmp_path / "nope"), "--out", str(out)])
    assert bad.exit_code == 2
    assert "error:" in bad.output and "Traceback" not in bad.output
