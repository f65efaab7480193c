"""Final evaluation of a run: the only place that reads the test labels, after training is done.

Reads the run's predictions (``oof_predictions.csv``, ``test_predictions.csv``), post-hoc rules and
clinical-only baseline, then labels the test patients from the cohort and writes ``metrics.json``
(and a short ``metrics.md``). Re-running it never trains and gives the same numbers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vbiopsy.atomic import write_text_atomic
from vbiopsy.data.layouts import read_cohort
from vbiopsy.data.splits import Splits
from vbiopsy.errors import InputError
from vbiopsy.tasks.labels import task_labels
from vbiopsy.train.cohort import label_options, label_task
from vbiopsy.train.config import TrainConfig
from vbiopsy.evaluate.auc import present_class_scores
from vbiopsy.train.cross_validation import output_columns

N_RESAMPLES = 2000


def _read(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise InputError(path, "missing: the run did not finish")
    return pd.read_csv(path, dtype={"subject_id": str})


def test_labels(config: TrainConfig, run_dir: Path) -> tuple[list[str], np.ndarray, dict[str, str]]:
    """Labels of the run's test patients (read from the cohort now); excluded patients with reasons."""
    manifest = read_cohort(config.data.cohort, layout=config.data.layout, clinical=config.data.clinical)
    splits = Splits.load(run_dir / "splits.json")
    frame = manifest.frame[manifest.frame["subject_id"].isin(set(splits.test))]
    labels = task_labels(frame, label_task(config), **label_options(config))
    return list(labels.subject_ids), labels.y, dict(labels.excluded)


def binary_or_multiclass(config: TrainConfig, y: np.ndarray, prob: np.ndarray, rule: dict[str, Any],
                         seed: int) -> dict[str, Any]:
    """AUC with bootstrap CI, threshold metrics at the OOF-tuned rule, Brier, calibration, decision curve."""
    from vbiopsy.evaluate import auc, calibration, classification, decision

    out: dict[str, Any] = {"n": int(len(y))}
    if len(np.unique(y)) < 2:  # e.g. a small test set with one grade only: reported, not a crash
        out["auc"] = {"auc": None, "low": None, "high": None, "average": None,
                      "undefined": f"only class {np.unique(y).tolist()} among these {len(y)} patients; "
                                   "an AUC needs two classes"}
    else:
        auc_y, auc_prob, average = present_class_scores(y, prob, output_columns(config))
        out["auc"] = auc.bootstrap_auc(auc_y, auc_prob, n_resamples=N_RESAMPLES, seed=seed).to_dict()
        out["auc"]["average"] = average
    if config.task == "grade":
        scaling = rule.get("class_scaling")
        out["at_tuned_rule"] = classification.classification_metrics(y, prob, class_scaling=scaling)
        out["at_argmax"] = classification.classification_metrics(y, prob)
    else:
        out["at_tuned_rule"] = classification.classification_metrics(y, prob, threshold=rule["threshold"])
        out["at_0.5"] = classification.classification_metrics(y, prob, threshold=0.5)
        out["decision_curve"] = _jsonable(decision.net_benefit(y, prob))
        out["calibration"] = _jsonable(calibration.calibration_curve(y, prob))
    out["brier"] = float(calibration.brier_score(y, prob))
    if "temperature" in rule:
        from vbiopsy.train.cross_validation import calibrate

        calibrated = calibrate(prob, rule["temperature"])
        out["calibrated"] = {"temperature": rule["temperature"], "brier": float(calibration.brier_score(y, calibrated)),
                             "curve": _jsonable(calibration.calibration_curve(y, calibrated))}
    return out


def _jsonable(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return _jsonable(value.to_dict())
    if hasattr(value, "__dataclass_fields__"):
        return {k: _jsonable(getattr(value, k)) for k in value.__dataclass_fields__}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def survival_metrics(y: np.ndarray, risk: np.ndarray, cutoff: float) -> dict[str, Any]:
    """C-index and Kaplan–Meier curves of the two risk groups (cut at the OOF median risk)."""
    from vbiopsy.evaluate.survival import concordance, kaplan_meier_by_group, risk_groups

    groups = risk_groups(risk, cutoffs=[cutoff])
    return {"n": int(len(y)), "events": int(y[:, 1].sum()), "c_index": float(concordance(y[:, 0], y[:, 1], risk)),
            "kaplan_meier": _jsonable(kaplan_meier_by_group(y[:, 0], y[:, 1], groups))}


def evaluate(config: TrainConfig, run_dir: Path) -> Path:
    """Write ``metrics.json`` / ``metrics.md`` for the run's OOF and test predictions (and the baseline)."""
    columns = output_columns(config)
    rule = json.loads((run_dir / "posthoc.json").read_text())
    oof = _read(run_dir / "oof_predictions.csv")
    test = _read(run_dir / "test_predictions.csv")
    seed = config.optim.seed
    metrics: dict[str, Any] = {"task": config.task, "posthoc": rule,
                               "note": "OOF figures are optimistic: early stopping and the post-hoc rules used "
                                       "the same folds. Test figures are the ones to report."}

    def score(y: np.ndarray, values: np.ndarray) -> dict[str, Any]:
        if config.task == "survival_cox":
            return survival_metrics(y, values, rule["risk_cutoff"])
        return binary_or_multiclass(config, y.astype(int), values, rule, seed)

    def outputs(frame: pd.DataFrame) -> np.ndarray:
        values = frame[columns].to_numpy(dtype=float)
        return values if config.task == "grade" else values[:, 0]

    oof_y = oof[["time", "event"]].to_numpy() if config.task == "survival_cox" else oof["target"].to_numpy()
    metrics["oof"] = score(oof_y, outputs(oof))
    ids, y_test, excluded = test_labels(config, run_dir)
    metrics["test_excluded"] = excluded
    if ids:
        test = test.set_index("subject_id").loc[ids].reset_index()
        metrics["test"] = score(y_test, outputs(test))
        baseline_path = run_dir / "baseline" / "test_predictions.csv"
        if baseline_path.is_file():
            metrics["baseline_test"], metrics["model_minus_baseline"] = compare_baseline(
                config, baseline_path, ids, y_test, outputs(test), seed, score)
    path = write_text_atomic(run_dir / "metrics.json", json.dumps(_jsonable(metrics), indent=1) + "\n")
    write_text_atomic(run_dir / "metrics.md", summary_markdown(metrics))
    return path


def compare_baseline(config: TrainConfig, path: Path, ids: list[str], y: np.ndarray, model_out: np.ndarray,
                     seed: int, score: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Baseline test metrics and the paired-bootstrap difference model − baseline (AUC or C-index)."""
    from vbiopsy.evaluate.auc import paired_bootstrap_difference

    frame = pd.read_csv(path, dtype={"subject_id": str}).set_index("subject_id").loc[ids]
    columns = output_columns(config)
    base_out = frame[columns].to_numpy(dtype=float) if config.task == "grade" else frame[columns[0]].to_numpy(float)
    base_metrics = score(y, base_out)
    if config.task == "survival_cox":
        from vbiopsy.evaluate.survival import paired_concordance_difference

        diff = paired_concordance_difference(y[:, 0], y[:, 1], model_out, base_out, n_resamples=N_RESAMPLES, seed=seed)
        return base_metrics, _jsonable(diff)
    if len(np.unique(y)) < 2:
        return base_metrics, {"undefined": "one class only among the test patients; no AUC difference"}
    auc_y, model_scores, _ = present_class_scores(y.astype(int), model_out)
    _, base_scores, _ = present_class_scores(y.astype(int), base_out)
    difference = paired_bootstrap_difference(auc_y, model_scores, base_scores, n_resamples=N_RESAMPLES, seed=seed)
    return base_metrics, _jsonable(difference)


def summary_markdown(metrics: dict[str, Any]) -> str:
    """A few lines a person reads first."""
    lines = [f"# {metrics['task']} — evaluation", ""]
    for part in ("oof", "test", "baseline_test"):
        block = metrics.get(part)
        if not block:
            continue
        if "auc" in block:
            a = block["auc"]
            if a.get("auc") is None:
                lines.append(f"- {part}: AUC undefined ({a.get('undefined')})")
                continue
            lines.append(f"- {part}: AUC ({a.get('average')}) {a['auc']:.3f} "
                         f"[{a['low']:.3f}, {a['high']:.3f}] on {block['n']} patients")
        if "c_index" in block:
            lines.append(f"- {part}: C-index {block['c_index']:.3f} on {block['n']} patients ({block['events']} events)")
    if "model_minus_baseline" in metrics:
        lines.append(f"- model − clinical-only baseline: {json.dumps(metrics['model_minus_baseline'])}")
    lines.append("")
    lines.append(metrics["note"])
    return "\n".join(lines) + "\n"
