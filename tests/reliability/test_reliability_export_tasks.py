"""``vbiopsy export`` for MGMT-Net (``task: profile``) and Adaptive-Diagnoser (``task: diagnosis``) runs: each fold
model and the fold ensemble to ONNX (onnxruntime) and TorchScript, equal to PyTorch within the documented
tolerance on inputs the export code never saw, with the task's inputs (MGMT-Net: image + modality mask;
diagnoser: image + prior [+ clinical]) and the preprocessing beside them; a format that cannot represent a
model is recorded and skipped in one line."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from reliability_task_helpers import (DIAGNOSIS_TINY, PROFILE_TINY, diagnosis_cohort, finished_looking_run,
                                      write_task_config)
from typer.testing import CliRunner

import vbiopsy.train.export as export_module
from vbiopsy.cli import app
from vbiopsy.localize.lesion_measurements import MEASUREMENTS
from vbiopsy.train.export import OPSET, TOLERANCE

HAS_ONNX = all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))
needs_onnx = pytest.mark.skipif(not HAS_ONNX, reason="onnx/onnxruntime not installed (optional: the export extra)")
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")

TRACEABLE_DIAGNOSER = {"mca": False, "input_prior": "multiply", "geometry": True, "clinical": ["age"]}
"""A diagnoser whose every input is live (the prior multiplies the image and gives the head its geometry;
age goes to the head) and that the tracer accepts (see the xfail test below for the MCA model)."""


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def onnx_run(path: Path, *inputs: torch.Tensor) -> list[np.ndarray]:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {i.name: t.numpy() for i, t in zip(session.get_inputs(), inputs, strict=True)})


@needs_onnx
def test_mgmtnet_onnx_export_matches_pytorch_with_a_live_modality_mask(tmp_path: Path) -> None:
    """ONNX (the exporter rules of vbiopsy.train.export at work: CMAF's channels-last hint, the marker
    head's adaptive pooling); TorchScript: the slow test below (tracing MGMT-Net costs seconds)."""
    torch.set_num_threads(1)
    run, config, models = finished_looking_run(tmp_path, PROFILE_TINY)
    code, output = invoke("export", str(run), "--out", str(tmp_path / "out"), "--format", "onnx")
    assert code == 0, output
    info = json.loads((tmp_path / "out" / "export.json").read_text())
    assert info["task"] == "profile" and info["parity"]["passed"] and info["not_exported"] == []
    assert info["parity"]["tolerance_max_abs_diff"] == TOLERANCE == 1e-4
    assert list(info["inputs"]) == ["image", "modality_mask"]
    assert info["output_names"] == ["seg_logits", "marker_logits"]
    assert [m["name"] for m in info["models"]] == ["fold_0", "fold_1", "ensemble"]
    parity = [p for m in info["models"] for p in m["parity"]]
    assert len(parity) == 3 and all(p["passed"] and p["max_abs_diff"] <= p["allowed"] for p in parity)
    assert all(TOLERANCE <= p["allowed"] < 1e-3 for p in parity)  # + twice PyTorch's own float32 error (tiny here)
    pre = info["models"][0]["preprocessing"]
    assert pre["modalities"] == ["t1", "t1c", "t2", "flair"] and pre["patch"] == [16, 16, 16]
    assert pre["spacing_mm"] == 4.0 and "z-scored" in pre["normalisation"]
    # inputs the export code never saw: batch 4, t2 missing in two rows (its values must not matter)
    generator = torch.Generator().manual_seed(42)
    image = torch.randn((4, 4, 16, 16, 16), generator=generator)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 1], [0, 1, 0, 1], [1, 0, 1, 0]], dtype=torch.float32)
    with torch.no_grad():
        expected = models[1](image, mask)
    import onnxruntime

    fold_1 = onnxruntime.InferenceSession(str(tmp_path / "out" / "fold_1.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in fold_1.get_inputs()] == ["image", "modality_mask"]
    seg, markers = fold_1.run(None, {"image": image.numpy(), "modality_mask": mask.numpy()})
    assert seg.shape == (4, 5, 16, 16, 16) and markers.shape == (4, 3)
    np.testing.assert_allclose(seg, expected.seg_logits.numpy(), atol=1e-3, rtol=0)
    np.testing.assert_allclose(markers, expected.marker_logits.numpy(), atol=1e-3, rtol=0)
    changed = image.clone()
    changed[:, 2] = 100.0  # t2: absent in rows 1 and 2, present in rows 0 and 3
    seg2, _ = fold_1.run(None, {"image": changed.numpy(), "modality_mask": mask.numpy()})
    np.testing.assert_allclose(seg2[1:3], seg[1:3], atol=1e-5, rtol=0)  # the mask is honoured in ONNX
    assert np.abs(seg2[[0, 3]] - seg[[0, 3]]).max() > 1e-2  # and a present modality matters
    # the ensemble: log of the mean softmax, logit of the mean sigmoid, over the two fold models
    with torch.no_grad():
        outs = [m(image, mask) for m in models]
    mean_p = np.mean([torch.softmax(o.seg_logits, 1).numpy() for o in outs], axis=0)
    mean_q = np.mean([torch.sigmoid(o.marker_logits).numpy() for o in outs], axis=0)
    seg_e, markers_e = onnx_run(tmp_path / "out" / "ensemble.onnx", image, mask)
    np.testing.assert_allclose(np.exp(seg_e), mean_p, atol=1e-4, rtol=0)
    np.testing.assert_allclose(1 / (1 + np.exp(-markers_e)), mean_q, atol=1e-5, rtol=0)
    import onnx

    model = onnx.load(str(tmp_path / "out" / "ensemble.onnx"))
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == OPSET


@needs_onnx
def test_diagnoser_export_matches_pytorch_on_image_prior_and_clinical_inputs(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    run, config, models = finished_looking_run(tmp_path, DIAGNOSIS_TINY, model=TRACEABLE_DIAGNOSER)
    for model in models:
        model.set_clinical_statistics([55.0], [55.0], [12.0])
    for fold, model in enumerate(models):  # store the statistics in the checkpoints
        from vbiopsy.train.checkpoint import load_checkpoint, save_checkpoint

        path = run / f"fold_{fold}" / "model.safetensors"
        save_checkpoint(path, model.state_dict(), load_checkpoint(path)[1])
    code, output = invoke("export", str(run), "--out", str(tmp_path / "out"), "--format", "both")
    assert code == 0, output
    info = json.loads((tmp_path / "out" / "export.json").read_text())
    assert info["task"] == "diagnosis" and info["parity"]["passed"] and info["not_exported"] == []
    assert info["parity"]["tolerance_max_abs_diff"] == TOLERANCE == 1e-4
    assert list(info["inputs"]) == ["image", "prior", "clinical"] and info["output_names"] == ["probabilities"]
    assert info["models"][0]["outputs"] == ["glioma", "lymphoma", "germinoma", "other"]
    generator = torch.Generator().manual_seed(7)
    image = torch.randn((5, 1, 16, 16, 16), generator=generator)
    prior = torch.rand((5, 1, 16, 16, 16), generator=generator)
    prior[2] = 0.0  # empty prior: the whole-brain fallback
    clinical = torch.tensor([[40.0], [float("nan")], [70.0], [61.0], [18.0]])
    with torch.no_grad():
        probs = [torch.softmax(m(image, prior, clinical), 1).numpy() for m in models]
    got = onnx_run(tmp_path / "out" / "fold_0.onnx", image, prior, clinical)[0]
    np.testing.assert_allclose(got, probs[0], atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(onnx_run(tmp_path / "out" / "ensemble.onnx", image, prior, clinical)[0],
                               np.mean(probs, axis=0), atol=TOLERANCE, rtol=0)
    traced = torch.jit.load(str(tmp_path / "out" / "ensemble.torchscript.pt"))
    with torch.no_grad():
        np.testing.assert_allclose(traced(image, prior, clinical).numpy(), np.mean(probs, axis=0), atol=1e-6, rtol=0)
    assert np.abs(got[3] - onnx_run(tmp_path / "out" / "fold_0.onnx", image, prior,
                                    clinical * 2)[0][3]).max() > 0  # clinical input live


@needs_onnx
def test_a_diagnoser_with_a_lesion_crop_and_measurements_exports_both_as_live_inputs(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    run, _, models = finished_looking_run(tmp_path, DIAGNOSIS_TINY, model={**TRACEABLE_DIAGNOSER, "clinical": [],
                                                                          "lesion_crop": True, "crop_width": 4,
                                                                          "lesion_measurements": True},
                                          data={"lesion_crop": {"shape": [8, 8, 8], "modalities": ["t1c", "flair"]}})
    code, output = invoke("export", str(run), "--out", str(tmp_path / "out"), "--format", "onnx")
    assert code == 0, output
    info = json.loads((tmp_path / "out" / "export.json").read_text())
    assert list(info["inputs"]) == ["image", "prior", "clinical", "crop"] and info["parity"]["passed"]
    assert "centred on the refined prior" in info["inputs"]["crop"]
    assert info["inputs"]["clinical"].startswith(f"float32 (batch, {len(MEASUREMENTS)}): lesion_enhancing_log_ml")
    generator = torch.Generator().manual_seed(3)
    image, prior = torch.randn((3, 1, 16, 16, 16), generator=generator), torch.rand((3, 1, 16, 16, 16))
    crop = torch.randn((3, 2, 8, 8, 8), generator=generator)
    measured = torch.randn((3, len(MEASUREMENTS)), generator=generator)  # the lesion measurements, as NumPy gives
    with torch.no_grad():
        expected = np.mean([torch.softmax(m(image, prior, measured, crop), 1).numpy() for m in models], axis=0)
    got = onnx_run(tmp_path / "out" / "ensemble.onnx", image, prior, measured, crop)[0]
    np.testing.assert_allclose(got, expected, atol=TOLERANCE, rtol=0)
    assert np.abs(got - onnx_run(tmp_path / "out" / "ensemble.onnx", image, prior, measured, crop * 3)[0]).max() > 1e-4
    assert np.abs(got - onnx_run(tmp_path / "out" / "ensemble.onnx", image, prior, measured * 3, crop)[0]).max() > 0


@needs_onnx
@pytest.mark.slow
def test_exported_diagnoser_ensemble_reproduces_the_runs_test_predictions(tmp_path: Path) -> None:
    """End to end: a trained run, exported, applied to the run's own test inputs, gives its test CSV."""
    from vbiopsy.train.diagnosis_data import prepare_diagnosis_cohort
    from vbiopsy.train.resume import train_command
    from vbiopsy.train.run import load_train_config

    torch.set_num_threads(1)
    config_path = write_task_config(tmp_path / "d.yaml", DIAGNOSIS_TINY, diagnosis_cohort(tmp_path / "cohort"),
                                    model={"mca": False, "input_prior": "multiply"}, optim={"max_epochs": 2})
    config = load_train_config(config_path)
    run = train_command(config, tmp_path / "run")
    code, output = invoke("export", str(run), "--out", str(tmp_path / "out"), "--format", "onnx")
    assert code == 0, output
    cohort = prepare_diagnosis_cohort(config, run)  # the cached samples: the inputs the run predicted from
    test = pd.read_csv(run / "test_predictions.csv", dtype={"subject_id": str})
    items = [cohort.dataset(list(test["subject_id"]), config)[i] for i in range(len(test))]
    image = torch.stack([item["image"].float() for item in items])
    prior = torch.stack([item["prior"].float() for item in items])
    got = onnx_run(tmp_path / "out" / "ensemble.onnx", image, prior)[0]
    np.testing.assert_allclose(got, test[[c for c in test.columns if c.startswith("p_")]].to_numpy(), atol=5e-6, rtol=0)


@needs_onnx
def test_the_papers_mca_diagnoser_exports(tmp_path: Path) -> None:
    run, _, _ = finished_looking_run(tmp_path, DIAGNOSIS_TINY)
    code, output = invoke("export", str(run), "--out", str(tmp_path / "out"))
    assert code == 0, output
    assert (tmp_path / "out" / "ensemble.onnx").is_file() and (tmp_path / "out" / "ensemble.torchscript.pt").is_file()


@needs_onnx
def test_a_format_that_cannot_represent_the_model_is_recorded_and_the_other_still_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run, _, _ = finished_looking_run(tmp_path, DIAGNOSIS_TINY, model=TRACEABLE_DIAGNOSER)

    def refuse(*args: object) -> None:
        raise RuntimeError("Unsupported: ONNX export of operator swin_attention\nsecond line")  # as torch says it

    monkeypatch.setattr(export_module, "write_onnx", refuse)
    code, output = invoke("export", str(run), "--out", str(tmp_path / "out"), "--format", "both")
    assert code == 0, output
    lines = [line for line in output.splitlines() if line.startswith("onnx:")]
    assert len(lines) == 1 and "fold_0, fold_1, ensemble" in lines[0] and "swin_attention" in lines[0], output
    info = json.loads((tmp_path / "out" / "export.json").read_text())
    assert [s["format"] for s in info["not_exported"]] == ["onnx"] * 3 and info["parity"]["passed"]
    assert all([p["format"] for p in m["parity"]] == ["torchscript"] for m in info["models"])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "ensemble.torchscript.pt", "export.json", "fold_0.torchscript.pt", "fold_1.torchscript.pt"]
    monkeypatch.setattr(export_module, "write_torchscript", refuse)  # nothing exportable: one error line
    code, output = invoke("export", str(run), "--out", str(tmp_path / "none"), "--format", "both")
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "no model could be exported" in errors[0], output
    assert "Traceback" not in output


@pytest.mark.slow
def test_mgmtnet_torchscript_export_matches_pytorch(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    run, _, models = finished_looking_run(tmp_path, PROFILE_TINY)
    code, output = invoke("export", str(run), "--out", str(tmp_path / "out"), "--format", "torchscript")
    assert code == 0, output
    info = json.loads((tmp_path / "out" / "export.json").read_text())
    assert info["parity"]["passed"] and [len(m["parity"]) for m in info["models"]] == [1, 1, 1]
    generator = torch.Generator().manual_seed(3)  # inputs the export never saw
    image = torch.randn((2, 4, 16, 16, 16), generator=generator)
    mask = torch.tensor([[1, 0, 1, 1], [1, 1, 1, 1]], dtype=torch.float32)
    with torch.no_grad():
        expected = models[0](image, mask)
        seg, markers = torch.jit.load(str(tmp_path / "out" / "fold_0.torchscript.pt"))(image, mask)
    np.testing.assert_allclose(seg.numpy(), expected.seg_logits.numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(markers.numpy(), expected.marker_logits.numpy(), atol=1e-5, rtol=0)
