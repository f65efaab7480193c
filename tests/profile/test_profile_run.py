"""MGMT-Net runs end to end on a tiny phantom cohort through the CLI: outputs, determinism, no test-label
reads, missing modalities, predict on the scan grid, the ablation table and bad configs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from vbiopsy.cli import app
from vbiopsy.data.layouts import read_cohort
from vbiopsy.data.nifti import load_volume
from vbiopsy.data.phantoms import PhantomConfig, generate_cohort
from vbiopsy.train.checkpoint import checkpoint_metadata

pytestmark = pytest.mark.slow

TINY = {
    "task": "profile",
    "model": {"width": 4, "stages": 2, "window_size": 2, "swin_heads": 1, "head_hidden": 8,
              "marker_composition": True},
    "loss": {"marker_min_tumour_share": 0.5},
    "augment": {"patch": [16, 16, 16]},
    "optim": {"max_epochs": 2, "batch_size": 2, "validate_every": 1, "lr": 1e-3},
    "inference": {"roi": [48, 48, 48], "overlap": 0.0, "min_component_ml": 0.0},
}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mgmt") / "cohort"
    generate_cohort(PhantomConfig(n_patients=8, spacing_mm=4.0, diagnosis_mix={"glioma": 1.0}, seed=3), root)
    return root


def manifest_csv(cohort: Path, path: Path, edit: dict[str, dict[str, object]] | None = None) -> Path:
    manifest = read_cohort(cohort)
    frame = manifest.frame
    for subject, values in (edit or {}).items():
        for column, value in values.items():
            frame.loc[frame["subject_id"] == subject, column] = value
    manifest.to_csv(path)
    return path


def write_config(path: Path, cohort: Path, **data: object) -> Path:
    config = {**TINY, "data": {"cohort": str(cohort), "spacing_mm": 4.0, "folds": 2, "test_fraction": 0.25, **data}}
    path.write_text(yaml.safe_dump(config))
    return path


def invoke(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def run(cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("run")
    config = write_config(folder / "tiny.yaml", manifest_csv(cohort, folder / "manifest.csv"))
    invoke("train", str(config), "--out", str(folder / "run"))
    return folder


def test_run_writes_oof_and_test_predictions_on_the_scan_grid(run: Path, cohort: Path) -> None:
    out = run / "run"
    splits = json.loads((out / "splits.json").read_text())
    pool = sorted(s for fold in splits["folds"] for s in fold["val"])
    oof = pd.concat([pd.read_csv(p, dtype={"subject_id": str}) for p in sorted(out.glob("fold_*/oof/predictions.csv"))])
    assert sorted(oof["subject_id"]) == pool
    test = pd.read_csv(out / "test" / "predictions.csv", dtype={"subject_id": str})
    assert sorted(test["subject_id"]) == sorted(splits["test"])
    assert ((test[["p_idh", "p_codel_1p19q", "p_tert"]] >= 0) & (test[["p_idh", "p_codel_1p19q", "p_tert"]] <= 1)).all().all()
    manifest = read_cohort(cohort)
    sid = splits["test"][0]
    seg = load_volume(out / "test" / "seg" / f"{sid}.nii.gz", dtype=np.uint8, allow_empty=True)
    scan = load_volume(manifest.row(sid)["flair"])
    assert seg.array.shape == scan.array.shape and np.allclose(seg.affine, scan.affine)
    assert set(np.unique(seg.array)) <= {0, 1, 2, 3, 4}
    meta = checkpoint_metadata(out / "fold_0" / "model.safetensors")
    assert meta["task"] == "profile" and meta["modalities"] == ["t1", "t1c", "t2", "flair"]
    assert meta["labels"]["3"] == "ET"
    metrics = json.loads((out / "metrics.json").read_text())
    wt = metrics["test"]["segmentation"]["regions"]["WT"]
    assert wt["n_ref_present"] == len(splits["test"]) and 0 <= wt["dice"]["mean"] <= 1
    assert "policy" in metrics["oof"]["segmentation"]
    history = pd.read_csv(out / "fold_0" / "history.csv")
    assert len(history) == 2 and history["train_loss"].notna().all() and history["val_wt_dice"].notna().all()
    assert (history["val_wt_volume_ratio"] >= 0).all()  # every phantom has a tumour: defined, never NaN


def test_same_config_and_seed_give_identical_outputs_and_test_labels_are_never_read(run: Path, cohort: Path) -> None:
    splits = json.loads((run / "run" / "splits.json").read_text())
    victim, other = splits["test"][0], splits["folds"][0]["val"][0]
    manifest = read_cohort(cohort)
    flipped = "wildtype" if str(manifest.row(victim)["idh"]) in ("1", "1.0") else "mutant"
    poisoned = manifest_csv(cohort, run / "poisoned.csv",  # another patient's tumour, the opposite IDH status
                            {victim: {"seg": manifest.row(other)["seg"], "idh": flipped}})
    config = write_config(run / "poisoned.yaml", poisoned, splits=str(run / "run" / "splits.json"))
    invoke("train", str(config), "--out", str(run / "run2"), "--no-evaluate")
    for name in ("fold_0/oof/predictions.csv", "fold_1/oof/predictions.csv", "test/predictions.csv",
                 "fold_0/history.csv"):
        assert (run / "run" / name).read_bytes() == (run / "run2" / name).read_bytes(), name
    invoke("evaluate", str(run / "run2"))  # evaluation reads the poisoned labels, and only evaluation
    clean = json.loads((run / "run" / "metrics.json").read_text())["test"]
    dirty = json.loads((run / "run2" / "metrics.json").read_text())["test"]
    assert clean["segmentation"]["regions"]["WT"]["dice"]["mean"] != dirty["segmentation"]["regions"]["WT"]["dice"]["mean"]


def test_predict_with_a_missing_modality_warns_and_writes_native_segmentation(run: Path, cohort: Path) -> None:
    manifest = read_cohort(cohort)
    sid = manifest.subjects[0]
    csv = manifest_csv(cohort, run / "no_t2.csv", {sid: {"t2": None}})
    output = invoke("predict", str(run / "run"), sid, "--cohort", str(csv), "--out", str(run / "pred"))
    assert "has no t2" in output
    table = pd.read_csv(run / "pred" / "predictions.csv", dtype={"subject_id": str}, keep_default_na=False)
    assert table.loc[0, "missing_modalities"] == "t2" and 0 <= table.loc[0, "p_idh"] <= 1
    seg = load_volume(run / "pred" / f"{sid}_seg.nii.gz", dtype=np.uint8, allow_empty=True)
    assert seg.array.shape == load_volume(manifest.row(sid)["t1"]).array.shape


def test_ablation_trains_four_variants_on_one_split(cohort: Path, tmp_path: Path) -> None:
    config = write_config(tmp_path / "tiny.yaml", cohort, test_fraction=0.0)
    output = invoke("ablation", str(config), "--out", str(tmp_path / "abl"), "--max-epochs", "1")
    table = pd.read_csv(tmp_path / "abl" / "ablation.csv")
    assert list(table["variant"]) == ["full", "no CMAF (concatenation)", "no Swin (CNN encoder)", "GAP marker pooling"]
    assert table["params"].iloc[2] < table["params"].iloc[0]  # the Swin branch has parameters
    splits = [json.loads(p.read_text()) for p in sorted((tmp_path / "abl").glob("*/splits.json"))]
    assert len(splits) == 4 and all(s["folds"] == splits[0]["folds"] for s in splits)
    assert "MGMT-Net ablation" in output


@pytest.mark.parametrize(("edit", "message"), [
    ({"model": {"fusion": "sum"}}, "fusion"),
    ({"augment": {"patch": [4, 16, 16]}}, "patch sides must be >= 8"),
    ({"data": {"markers": ["mgmt"]}}, "unknown marker 'mgmt'"),
    ({"loss": {"dice_weight": 0, "ce_weight": 0}}, "cannot both be 0"),
    ({"loss": {"marker_min_tumour_share": 1.5}}, "marker_min_tumour_share"),
    ({"model": {"marker_composition": "maybe"}}, "marker_composition"),
])
def test_bad_config_is_one_clear_line(cohort: Path, tmp_path: Path, edit: dict, message: str) -> None:
    config = yaml.safe_load(write_config(tmp_path / "c.yaml", cohort).read_text())
    for section, values in edit.items():
        config[section] = {**config.get(section, {}), **values}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(app, ["train", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "out")])
    assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()
