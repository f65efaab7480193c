"""Export: each fold model and the ensemble to ONNX (onnxruntime) and TorchScript, equal to PyTorch
within the documented tolerance, with the preprocessing metadata beside them; failures fail the command."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from reliability_helpers import trained_looking_run
from typer.testing import CliRunner

import vbiopsy.train.export as export_module
from vbiopsy.cli import app
from vbiopsy.errors import ConfigError
from vbiopsy.tasks.aslnet import probabilities
from vbiopsy.train.checkpoint import load_checkpoint
from vbiopsy.train.cross_validation import build_model
from vbiopsy.train.export import OPSET, TOLERANCE, export_formats

HAS_ONNX = all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))
needs_onnx = pytest.mark.skipif(not HAS_ONNX, reason="onnx/onnxruntime not installed (optional: the export extra)")


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def reference_outputs(run: Path, fold: int, task: str, config: object, inputs: tuple[torch.Tensor, ...]) -> np.ndarray:
    """What the run's own PyTorch model says (rebuilt here, independently of the export code)."""
    state, _ = load_checkpoint(run / f"fold_{fold}" / "model.safetensors")
    model = build_model(config)
    model.load_state_dict(state)
    with torch.no_grad():
        return probabilities(task, model.eval()(*inputs)).numpy()  # type: ignore[arg-type]


@needs_onnx
@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("task", ["grade", "survival"])
def test_export_both_formats_match_pytorch_and_carry_the_preprocessing(tmp_path: Path, task: str) -> None:
    import onnx
    import onnxruntime

    torch.set_num_threads(1)
    run, config = trained_looking_run(tmp_path, task)
    code, output = invoke("export", str(run), "--out", str(tmp_path / "exported"), "--format", "both")
    assert code == 0, output
    info = json.loads((tmp_path / "exported" / "export.json").read_text())
    assert info["parity"]["passed"] and info["parity"]["tolerance_max_abs_diff"] == TOLERANCE == 1e-4
    assert [m["name"] for m in info["models"]] == ["fold_0", "fold_1", "ensemble"]
    for entry in info["models"]:
        assert {p["format"] for p in entry["parity"]} == {"onnx", "torchscript"}
        assert all(p["passed"] and 0 <= p["max_abs_diff"] <= TOLERANCE for p in entry["parity"])
    _, metadata = load_checkpoint(run / "fold_1" / "model.safetensors")
    pre = info["models"][1]["preprocessing"]
    assert pre["roi"] == metadata["roi"] and pre["spacing_mm"] == [2.0, 2.0, 2.0] and pre["modality"] == "asl"
    assert pre["input_shape"] == [4, 6, 6, 6] and pre["tabular"] == metadata["tabular"]
    assert pre["channels"] == ["raw", "zg", "zl", "log"]
    # an independent input (batch 5, another seed), run outside the export code
    generator = torch.Generator().manual_seed(42)
    inputs: tuple[torch.Tensor, ...] = (torch.randn((5, 4, 6, 6, 6), generator=generator),)
    if config.uses_tabular:
        inputs += (torch.tensor([[50.0, 1.0, 0.0], [70.0, 0.0, 2.0], [30.0, 1.0, 1.0], [62.0, 0.0, 0.0],
                                 [81.0, 1.0, 2.0]]),)
    expected = reference_outputs(run, 1, task, config, inputs)
    path = tmp_path / "exported" / "fold_1.onnx"
    model = onnx.load(str(path))
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == OPSET >= 17
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {i.name: t.numpy() for i, t in zip(session.get_inputs(), inputs)}
    np.testing.assert_allclose(session.run(None, feeds)[0], expected, atol=1e-4, rtol=0)
    traced = torch.jit.load(str(tmp_path / "exported" / "fold_1.torchscript.pt"))
    np.testing.assert_allclose(traced(*inputs).detach().numpy(), expected, atol=1e-5, rtol=0)
    # the ensemble averages the folds' probabilities
    mean = np.mean([reference_outputs(run, k, task, config, inputs) for k in (0, 1)], axis=0)
    ensemble = onnxruntime.InferenceSession(str(tmp_path / "exported" / "ensemble.onnx"),
                                            providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(ensemble.run(None, feeds)[0], mean, atol=1e-4, rtol=0)


def test_torchscript_export_alone_needs_no_onnx(tmp_path: Path) -> None:
    run, _ = trained_looking_run(tmp_path, "grade")
    code, output = invoke("export", str(run), "--out", str(tmp_path / "ts"), "--format", "torchscript")
    assert code == 0, output
    names = sorted(p.name for p in (tmp_path / "ts").iterdir())
    assert names == ["ensemble.torchscript.pt", "export.json", "fold_0.torchscript.pt", "fold_1.torchscript.pt"]
    info = json.loads((tmp_path / "ts" / "export.json").read_text())
    assert info["opset"] is None and info["parity"]["passed"]


def test_a_failed_parity_check_is_recorded_and_fails_the_command(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    run, _ = trained_looking_run(tmp_path, "grade")
    real = export_module.run_exported
    monkeypatch.setattr(export_module, "run_exported", lambda path, fmt, inputs: real(path, fmt, inputs) + 1e-3)
    code, output = invoke("export", str(run), "--out", str(tmp_path / "bad"), "--format", "torchscript")
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "parity check failed for fold_0" in errors[0], output
    assert "Traceback" not in output
    info = json.loads((tmp_path / "bad" / "export.json").read_text())
    assert not info["parity"]["passed"]
    assert info["models"][0]["parity"][0]["max_abs_diff"] == pytest.approx(1e-3, rel=1e-3)


def test_export_refuses_bad_input_with_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, output = invoke("export", str(tmp_path), "--out", str(tmp_path / "x"))
    assert code == 2 and "not a finished training run" in output and "Traceback" not in output
    assert not (tmp_path / "x").exists()
    run, _ = trained_looking_run(tmp_path, "grade")
    code, output = invoke("export", str(run), "--out", str(tmp_path / "x"), "--format", "tflite")
    assert code == 2 and "--format 'tflite'" in output
    (run / "fold_1" / "model.safetensors").write_bytes(b"\x80\x04not a checkpoint")
    code, output = invoke("export", str(run), "--out", str(tmp_path / "x"), "--format", "torchscript")
    assert code == 2 and "fold_1" in output and "pickle" in output and not (tmp_path / "x").exists()
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name.startswith("onnx") else object())
    with pytest.raises(ConfigError, match="onnx and onnxruntime"):
        export_formats("both")
    assert export_formats("torchscript") == ("torchscript",)
