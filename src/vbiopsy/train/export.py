"""``vbiopsy export RUN --out DIR``: a trained ASLNet run's models as ONNX and TorchScript, checked.

Each fold model and the fold ensemble (mean probability, what ``vbiopsy predict`` uses) is wrapped
so that it returns what the run's prediction CSVs hold — class probabilities (grade), P(death
within the horizon) (survival), the risk score (survival_cox) — and written as:

- ``<name>.onnx``: ``torch.onnx.export`` (TorchScript-based exporter, opset :data:`OPSET`; the
  dynamo exporter would need the ``onnxscript`` package), dynamic batch axis;
- ``<name>.torchscript.pt``: ``torch.jit.trace`` + ``torch.jit.save``.

**Parity check**: every exported file is run (ONNX with onnxruntime on CPU, TorchScript with
``torch.jit.load``) on a seeded random batch of the checkpoint's input shape — a batch size other
than the one traced, so a batch-specialised graph fails too — and compared with the PyTorch
model. The maximum absolute difference must be ≤ :data:`TOLERANCE` (1e-4, float32 outputs in
[0, 1] for probabilities; observed differences are ~1e-7). Results go to ``DIR/export.json``
together with the preprocessing a deployment must reproduce (modality, ROI rule, spacing, channel
definitions, tabular features with their imputation and normalisation, class names), copied from
each fold checkpoint's metadata; the command fails if any check fails.

Inputs of an exported model: ``image`` float32 (B, 4, X, Y, Z) — the channels [raw, zg, zl, log] of
:meth:`vbiopsy.data.roi_cubes.RoiCube.channels` — and, for survival tasks, ``tabular`` float32
(B, 3) — age (years), sex (0/1), extent of resection (0/1/2), imputed with the fold's ``fill``
values (normalisation is inside the model).
"""

from __future__ import annotations

import importlib.util
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from vbiopsy import __version__
from vbiopsy.atomic import ensure_writable_dir, write_text_atomic, write_with_atomic
from vbiopsy.errors import ConfigError, InputError
from vbiopsy.tasks.aslnet import probabilities
from vbiopsy.train.checkpoint import load_checkpoint
from vbiopsy.train.config import TrainConfig

OPSET = 17
"""ONNX opset written (GroupNorm is decomposed below opset 18; every runtime since 2022 reads 17)."""

TOLERANCE = 1e-4
"""Largest absolute difference allowed between an exported model's outputs and PyTorch's."""

FORMATS = ("onnx", "torchscript")
CHANNELS = ("raw", "zg", "zl", "log")
"""ASLNet input channels: the ROI signal, its whole-scan z-score, local z-score and log (see
:mod:`vbiopsy.preprocess.aslnet_channels`)."""


class Deployable(nn.Module):
    """``model`` followed by the task's output transform (softmax / sigmoid / identity)."""

    def __init__(self, model: nn.Module, task: str, *, uses_tabular: bool) -> None:
        super().__init__()
        self.model = model.eval()
        self.task = task
        self.uses_tabular = uses_tabular

    def forward(self, image: Tensor, tabular: Tensor | None = None) -> Tensor:
        logits = self.model(image, tabular) if self.uses_tabular else self.model(image)
        return probabilities(self.task, logits)  # type: ignore[arg-type]


@dataclass(frozen=True)
class ParityResult:
    """One exported file and how far its outputs are from PyTorch's."""

    format: str
    file: str
    max_abs_diff: float
    passed: bool


def export_formats(choice: str) -> tuple[str, ...]:
    """``onnx`` / ``torchscript`` / ``both`` → formats; refuses ONNX when onnx/onnxruntime are missing."""
    options = {"onnx": ("onnx",), "torchscript": ("torchscript",), "both": FORMATS}
    if choice not in options:
        raise ConfigError(f"--format {choice!r}: expected one of {', '.join(options)}")
    formats = options[choice]
    missing = [m for m in ("onnx", "onnxruntime") if "onnx" in formats and importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(f"--format {choice}: the {' and '.join(missing)} package(s) are not installed "
                          "(pip install onnx onnxruntime); --format torchscript needs neither")
    return formats


def example_inputs(input_shape: Sequence[int], tabular: dict[str, Any] | None, batch: int, seed: int) -> tuple[Tensor, ...]:
    """A seeded random batch: image (batch, *input_shape) ~ N(0, 1); tabular drawn around the fold's
    training mean ± std (so FiLM sees values of a realistic scale)."""
    generator = torch.Generator().manual_seed(seed)
    image = torch.randn((batch, *input_shape), generator=generator)
    if tabular is None:
        return (image,)
    mean = torch.tensor(tabular["mean"], dtype=torch.float32)
    std = torch.tensor(tabular["std"], dtype=torch.float32)
    return image, mean + std * torch.randn((batch, len(mean)), generator=generator)


def _names(inputs: tuple[Tensor, ...]) -> list[str]:
    return ["image", "tabular"][: len(inputs)]


def write_onnx(module: nn.Module, inputs: tuple[Tensor, ...], path: Path) -> Path:
    """ONNX file of ``module`` traced on ``inputs`` (dynamic batch axis), checked by ``onnx.checker``."""
    import onnx

    names = _names(inputs)
    axes = {name: {0: "batch"} for name in [*names, "output"]}

    def write(tmp: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript-based exporter's deprecation notice
            torch.onnx.export(module, inputs, str(tmp), dynamo=False, opset_version=OPSET, input_names=names,
                              output_names=["output"], dynamic_axes=axes)
        onnx.checker.check_model(str(tmp))

    return write_with_atomic(path, write)


def write_torchscript(module: nn.Module, inputs: tuple[Tensor, ...], path: Path) -> Path:
    """TorchScript file of ``module`` traced on ``inputs``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit deprecation notices
        traced = torch.jit.trace(module, inputs, check_trace=True)
        return write_with_atomic(path, lambda tmp: torch.jit.save(traced, str(tmp)))


def run_exported(path: Path, fmt: str, inputs: tuple[Tensor, ...]) -> np.ndarray:
    """Outputs of an exported file on ``inputs`` (onnxruntime CPU, or ``torch.jit.load``)."""
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feeds = {name: tensor.numpy() for name, tensor in zip(_names(inputs), inputs)}
        return np.asarray(session.run(["output"], feeds)[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = torch.jit.load(str(path), map_location="cpu")
    with torch.no_grad():
        return loaded(*inputs).numpy()


def export_module(module: nn.Module, trace_inputs: tuple[Tensor, ...], check_inputs: tuple[Tensor, ...],
                  out: Path, name: str, formats: Sequence[str], tolerance: float = TOLERANCE) -> list[ParityResult]:
    """Write ``module`` in each of ``formats`` as ``out/name.*`` and check it against PyTorch on ``check_inputs``."""
    if not 0 < tolerance < 1:
        raise ConfigError(f"tolerance must be in (0, 1), got {tolerance!r}")
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ConfigError(f"formats must be a non-empty subset of {FORMATS}, got {list(formats)}")
    module = module.eval()
    with torch.no_grad():
        expected = module(*check_inputs).numpy()
    results = []
    for fmt in formats:
        path = out / (f"{name}.onnx" if fmt == "onnx" else f"{name}.torchscript.pt")
        (write_onnx if fmt == "onnx" else write_torchscript)(module, trace_inputs, path)
        got = run_exported(path, fmt, check_inputs)
        diff = float(np.max(np.abs(got - expected))) if got.shape == expected.shape else float("inf")
        results.append(ParityResult(fmt, path.name, diff, bool(diff <= tolerance)))
    return results


def _fold_models(config: TrainConfig, run_dir: Path) -> list[tuple[str, nn.Module, dict[str, Any]]]:
    """(name, model in eval mode, checkpoint metadata) of every fold of a finished run."""
    from vbiopsy.train.cross_validation import build_model

    paths = sorted(run_dir.glob("fold_*/model.safetensors"), key=lambda p: int(p.parent.name.split("_")[1]))
    if not paths:
        raise InputError(run_dir, "no fold models (fold_*/model.safetensors)")
    folds = []
    for path in paths:
        state, metadata = load_checkpoint(path, expect={"task": config.task,
                                                        "model": config.model.model_dump(mode="json")})
        if "input_shape" not in metadata:
            raise InputError(path, "key 'input_shape': missing (trained by an older vbiopsy); retrain to export")
        model = build_model(config)
        model.load_state_dict(state)
        folds.append((path.parent.name, model.eval(), metadata))
    return folds


def preprocessing_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """What a deployment must reproduce before calling an exported model (from a fold checkpoint)."""
    keep = ("task", "classes", "modality", "roi", "spacing_mm", "input_shape", "tabular", "model", "dropout", "vbiopsy")
    return {**{k: metadata.get(k) for k in keep}, "channels": list(CHANNELS)}


def export_run(run_dir: str | Path, out: str | Path, *, formats: Sequence[str] = FORMATS,
               tolerance: float = TOLERANCE, seed: int = 0) -> Path:
    """Export every fold model and the fold ensemble of ``run_dir`` into ``out``; write ``export.json``.

    Raises:
        InputError: not a finished ASLNet run, a fold checkpoint that does not match the run, or a
            parity check above ``tolerance`` (``export.json`` is still written, naming the failure).
    """
    from vbiopsy.train.ensemble import FoldEnsemble
    from vbiopsy.train.run import load_run_config

    run_dir, out = Path(run_dir), Path(out)
    config = load_run_config(run_dir)
    if not isinstance(config, TrainConfig):
        raise InputError(run_dir, f"export supports ASLNet runs (grade, survival, survival_cox), not {config.task!r}")
    folds = _fold_models(config, run_dir)
    folder = ensure_writable_dir(out)
    entries, failures = [], []
    for index, (name, model, metadata) in enumerate([*folds, ("ensemble", FoldEnsemble(
            [m for _, m, _ in folds], config.task, uses_tabular=config.uses_tabular).eval(), folds[0][2])]):
        tabular = metadata.get("tabular") if config.uses_tabular else None
        shape = metadata["input_shape"]
        trace_inputs = example_inputs(shape, tabular, batch=2, seed=seed + index)
        check_inputs = example_inputs(shape, tabular, batch=3, seed=seed + 1000 + index)
        wrapped = Deployable(model, config.task, uses_tabular=config.uses_tabular)
        results = export_module(wrapped, trace_inputs, check_inputs, folder, name, formats, tolerance)
        entries.append({"name": name, "source": "fold ensemble (mean probability)" if name == "ensemble"
                        else f"{name}/model.safetensors", "preprocessing": preprocessing_metadata(metadata),
                        "outputs": metadata["classes"], "parity": [_jsonable(r) for r in results]})
        failures += [(name, r) for r in results if not r.passed]
    info = {"vbiopsy": __version__, "torch": torch.__version__, "run": str(run_dir.absolute()), "task": config.task,
            "formats": list(formats), "opset": OPSET if "onnx" in formats else None,
            "parity": {"tolerance_max_abs_diff": tolerance, "check_batch": 3, "seed": seed, "passed": not failures},
            "inputs": {"image": "float32 (batch, 4, X, Y, Z): channels raw, zg, zl, log of the ROI cube",
                       **({"tabular": "float32 (batch, 3): age, sex, eor imputed with the fold's fill values"}
                          if config.uses_tabular else {})},
            "models": entries}
    path = write_text_atomic(folder / "export.json", json.dumps(info, indent=1) + "\n")
    if failures:
        name, result = failures[0]
        raise InputError(path, f"parity check failed for {name} ({result.format}): max |diff| "
                               f"{result.max_abs_diff:.3g} > {tolerance:g}")
    return path


def _jsonable(result: ParityResult) -> dict[str, Any]:
    finite = bool(np.isfinite(result.max_abs_diff))
    return {**result.__dict__, "max_abs_diff": result.max_abs_diff if finite else None}
