"""``vbiopsy export RUN --out DIR``: a trained run's models as ONNX and TorchScript, checked — for every
task: ASLNet (grade, survival, survival_cox), MGMT-Net (``profile``) and the Adaptive-Diagnoser
(``diagnosis``).

Each fold model and the fold ensemble are wrapped (:mod:`vbiopsy.train.export_targets`: what each
task's exported model takes and returns) and written as:

- ``<name>.onnx``: ``torch.onnx.export`` (TorchScript-based exporter, opset :data:`OPSET`; the
  dynamo exporter would need the ``onnxscript`` package), dynamic batch axis. Two exporter rules
  are replaced while exporting (:func:`onnx_rules`), for ops ONNX expresses but the exporter
  refuses: a ``contiguous`` call with a memory format (a layout hint; ONNX tensors have no
  layout) and an adaptive average pool whose output size comes from a traced shape (written as
  the equal ``AveragePool`` when the input size is a multiple of the output size);
- ``<name>.torchscript.pt``: ``torch.jit.trace`` under ``torch.no_grad`` (inference code paths,
  e.g. MONAI's fused attention) + ``torch.jit.save``.

**Parity check**: every exported file is run (ONNX with onnxruntime on CPU, TorchScript with
``torch.jit.load``) on a seeded random batch of the model's input shapes — a batch size other than
the one traced, so a batch-specialised graph fails too — and compared with the PyTorch model over
all its outputs. The maximum absolute difference must be ≤ :data:`TOLERANCE` (1e-4) plus twice
PyTorch's own float32 error on that batch (max |float32 − float64| of the same model): an exported
model may be as far from exact arithmetic as PyTorch itself is. For probabilities (ASLNet,
diagnoser) that error is ~1e-7, so the limit is 1e-4 (observed differences ~1e-7); MGMT-Net's
logits sum GroupNorm statistics over whole patches, where float32 PyTorch itself is off by up to
2.6e-3 at the default 128³ patch (random weights; ONNX Runtime: 3e-4 from float64, 2.4e-3 from
float32 PyTorch; at 64³: 8e-5, 1e-5, 7e-5). Results go to ``DIR/export.json`` together with the
preprocessing a deployment must reproduce, copied from each fold checkpoint's metadata; the
command fails if any check fails.

A model that one format cannot represent (e.g. a backbone the ONNX exporter refuses) is recorded
in ``export.json`` under ``not_exported`` with the exporter's reason, reported in one line, and the
other format is still written; the command fails only when nothing could be exported. Known limits:
the diagnoser with masked channel attention (the paper's model) cannot be traced at all yet —
``resize_prior`` checks the feature-map size with ``check_int``, which a traced size (a 0-d tensor)
fails — and the diagnoser's Swin backbone has no ONNX form (its TorchScript is written).
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import json
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from vbiopsy import __version__
from vbiopsy.atomic import ensure_writable_dir, write_text_atomic, write_with_atomic
from vbiopsy.errors import ConfigError, InputError, VbiopsyError

OPSET = 17
"""ONNX opset written (GroupNorm is decomposed below opset 18; every runtime since 2022 reads 17)."""

TOLERANCE = 1e-4
"""Largest absolute difference allowed between an exported model's outputs and PyTorch's, on top of twice
PyTorch's own float32 error (see the module docstring)."""

FORMATS = ("onnx", "torchscript")

EXPORT_ERRORS = (RuntimeError, ValueError, TypeError, IndexError, VbiopsyError)
"""What tracing or converting a model can raise when a format cannot represent it (recorded, not fatal)."""


@dataclass(frozen=True)
class ParityResult:
    """One format of one model: the file written, how far its outputs are from PyTorch's and the largest
    difference ``allowed``, or why the format could not be written (``error``; then ``file`` is None)."""

    format: str
    file: str | None
    max_abs_diff: float
    passed: bool
    allowed: float = TOLERANCE
    error: str | None = None


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


def _contiguous(g: Any, value: Any, memory_format: Any) -> Any:
    """``x.contiguous(memory_format=...)``: the same tensor (ONNX tensors are logical, without a layout)."""
    return value


def _adaptive_avg_pool3d(g: Any, value: Any, output_size: Any) -> Any:
    """Adaptive 3-D average pooling from the traced input and output sizes: ``AveragePool`` with kernel =
    stride = input / output size, exactly the adaptive pool when the sizes divide (refused otherwise)."""
    from torch.onnx.errors import SymbolicValueError

    node = g.original_node
    size_in, size_out = node.inputsAt(0).type().sizes(), node.output().type().sizes()
    if size_in is None or size_out is None or any(i % o for i, o in zip(size_in[2:], size_out[2:])):
        raise SymbolicValueError(f"adaptive_avg_pool3d from {size_in} to {size_out}: output sizes must divide "
                                 "the input sizes", value)
    kernel = [i // o for i, o in zip(size_in[2:], size_out[2:])]
    return g.op("AveragePool", value, kernel_shape_i=kernel, strides_i=kernel)


@contextlib.contextmanager
def onnx_rules() -> Iterator[None]:
    """Exporter rules for ``aten::contiguous`` and ``aten::adaptive_avg_pool3d`` (see the module docstring),
    registered for the duration of one export, then the exporter's own rules restored."""
    rules = {"aten::contiguous": _contiguous, "aten::adaptive_avg_pool3d": _adaptive_avg_pool3d}
    for name, rule in rules.items():
        torch.onnx.register_custom_op_symbolic(name, rule, OPSET)
    try:
        yield
    finally:
        for name in rules:
            torch.onnx.unregister_custom_op_symbolic(name, OPSET)


def write_onnx(module: nn.Module, inputs: tuple[Tensor, ...], path: Path, input_names: Sequence[str] = ("image",),
               output_names: Sequence[str] = ("output",)) -> Path:
    """ONNX file of ``module`` traced on ``inputs`` (dynamic batch axis), checked by ``onnx.checker``."""
    import onnx

    if len(input_names) != len(inputs):
        raise ConfigError(f"{len(inputs)} inputs but {len(input_names)} input names {list(input_names)}")
    axes = {name: {0: "batch"} for name in [*input_names, *output_names]}

    def write(tmp: Path) -> None:
        with warnings.catch_warnings(), onnx_rules():
            warnings.simplefilter("ignore")  # the TorchScript-based exporter's deprecation notice, tracer warnings
            torch.onnx.export(module, inputs, str(tmp), dynamo=False, opset_version=OPSET,
                              input_names=list(input_names), output_names=list(output_names), dynamic_axes=axes)
        onnx.checker.check_model(str(tmp))
        graph_inputs = [i.name for i in onnx.load(str(tmp)).graph.input]
        if graph_inputs != list(input_names):  # an input the traced graph ignores is dropped by the exporter
            raise InputError(path, f"the ONNX graph takes inputs {graph_inputs}, expected {list(input_names)}")

    return write_with_atomic(path, write)


def write_torchscript(module: nn.Module, inputs: tuple[Tensor, ...], path: Path) -> Path:
    """TorchScript file of ``module`` traced on ``inputs`` (no autograd: the inference code paths)."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # torch.jit deprecation notices, tracer warnings
        traced = torch.jit.trace(module, inputs, check_trace=True)
        return write_with_atomic(path, lambda tmp: torch.jit.save(traced, str(tmp)))


def flat_outputs(outputs: Tensor | Sequence[Tensor]) -> np.ndarray:
    """A model's output tensor(s) as one float64 vector (each flattened, concatenated in output order)."""
    parts = [outputs] if isinstance(outputs, Tensor) else list(outputs)
    return np.concatenate([np.asarray(p.detach().cpu().numpy() if isinstance(p, Tensor) else p,
                                      dtype=np.float64).ravel() for p in parts])


def run_exported(path: Path, fmt: str, inputs: tuple[Tensor, ...]) -> np.ndarray:
    """Outputs of an exported file on ``inputs`` (onnxruntime CPU, or ``torch.jit.load``), as :func:`flat_outputs`."""
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feeds = {i.name: tensor.numpy() for i, tensor in zip(session.get_inputs(), inputs, strict=True)}
        return flat_outputs(session.run(None, feeds))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = torch.jit.load(str(path), map_location="cpu")
    with torch.no_grad():
        return flat_outputs(loaded(*inputs))


def float32_error(module: nn.Module, inputs: tuple[Tensor, ...], outputs: np.ndarray) -> float:
    """max |``outputs`` − the same module's outputs in float64| (PyTorch's own float32 rounding on ``inputs``);
    0 for a module that cannot run in float64."""
    try:
        exact = copy.deepcopy(module).double().eval()
        with torch.no_grad():
            reference = flat_outputs(exact(*[t.double() if t.is_floating_point() else t for t in inputs]))
    except EXPORT_ERRORS:
        return 0.0
    return float(np.max(np.abs(outputs - reference))) if reference.shape == outputs.shape else 0.0


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:300] if text else ''}"


def export_module(module: nn.Module, trace_inputs: tuple[Tensor, ...], check_inputs: tuple[Tensor, ...],
                  out: Path, name: str, formats: Sequence[str], tolerance: float = TOLERANCE,
                  input_names: Sequence[str] = ("image",), output_names: Sequence[str] = ("output",)
                  ) -> list[ParityResult]:
    """Write ``module`` in each of ``formats`` as ``out/name.*`` and check it against PyTorch on ``check_inputs``
    (max |diff| ≤ ``tolerance`` + 2 × :func:`float32_error`); a format that cannot represent the module gives
    a result with its ``error`` (and no file)."""
    if not 0 < tolerance < 1:
        raise ConfigError(f"tolerance must be in (0, 1), got {tolerance!r}")
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ConfigError(f"formats must be a non-empty subset of {FORMATS}, got {list(formats)}")
    module = module.eval()
    with torch.no_grad():
        expected = flat_outputs(module(*check_inputs))
    allowed = tolerance + 2 * float32_error(module, check_inputs, expected)
    results = []
    for fmt in formats:
        path = out / (f"{name}.onnx" if fmt == "onnx" else f"{name}.torchscript.pt")
        try:
            if fmt == "onnx":
                write_onnx(module, trace_inputs, path, input_names, output_names)
            else:
                write_torchscript(module, trace_inputs, path)
        except EXPORT_ERRORS as err:
            path.unlink(missing_ok=True)
            results.append(ParityResult(fmt, None, float("inf"), False, allowed, _one_line(err)))
            continue
        got = run_exported(path, fmt, check_inputs)
        diff = float(np.max(np.abs(got - expected))) if got.shape == expected.shape else float("inf")
        results.append(ParityResult(fmt, path.name, diff, bool(diff <= allowed), allowed))
    return results


def export_run(run_dir: str | Path, out: str | Path, *, formats: Sequence[str] = FORMATS,
               tolerance: float | None = None, seed: int = 0) -> Path:
    """Export every fold model and the fold ensemble of ``run_dir`` into ``out``; write ``export.json``.

    ``tolerance``: :data:`TOLERANCE` when None (plus twice PyTorch's own float32 error, see the module docstring).

    Raises:
        InputError: not a finished run, a fold checkpoint that does not match the run, a parity check
            above the tolerance, or no model exportable in any format (``export.json`` is still
            written, naming the failure).
    """
    from vbiopsy.commands import say
    from vbiopsy.train.export_targets import export_plan
    from vbiopsy.train.run import load_run_config

    run_dir, out = Path(run_dir), Path(out)
    plan = export_plan(load_run_config(run_dir), run_dir)
    limit = TOLERANCE if tolerance is None else tolerance
    folder = ensure_writable_dir(out)
    entries, failures, skipped = [], [], []
    for index, target in enumerate(plan.targets):
        trace_inputs = target.example_inputs(2, seed + index)
        check_inputs = target.example_inputs(3, seed + 1000 + index)
        results = export_module(target.module, trace_inputs, check_inputs, folder, target.name, formats, limit,
                                plan.input_names, plan.output_names)
        entries.append({"name": target.name, "source": target.source, "preprocessing": target.preprocessing,
                        "outputs": plan.outputs, "parity": [_jsonable(r) for r in results if r.error is None]})
        failures += [(target.name, r) for r in results if r.error is None and not r.passed]
        skipped += [{"model": target.name, "format": r.format, "error": r.error} for r in results if r.error]
    exported = sum(len(e["parity"]) for e in entries)
    info = {"vbiopsy": __version__, "torch": torch.__version__, "run": str(run_dir.absolute()), "task": plan.task,
            "formats": list(formats), "opset": OPSET if "onnx" in formats else None,
            "parity": {"tolerance_max_abs_diff": limit, "compared": plan.tolerance_note,
                       "rule": "max |exported - PyTorch| <= tolerance + 2 * max |PyTorch float32 - float64| "
                               "(the 'allowed' of each file)", "check_batch": 3, "seed": seed,
                       "passed": not failures and exported > 0},
            "inputs": plan.inputs, "output_names": list(plan.output_names), "models": entries,
            "not_exported": skipped}
    path = write_text_atomic(folder / "export.json", json.dumps(info, indent=1) + "\n")
    for fmt in dict.fromkeys(s["format"] for s in skipped) if exported else ():  # else: the error below says it
        names = [s["model"] for s in skipped if s["format"] == fmt]
        first = next(s["error"] for s in skipped if s["format"] == fmt)
        say(f"{fmt}: not exported for {', '.join(names)} ({first}); recorded in {path}")
    if failures:
        name, result = failures[0]
        raise InputError(path, f"parity check failed for {name} ({result.format}): max |diff| "
                               f"{result.max_abs_diff:.3g} > {result.allowed:.3g}")
    if not exported:
        raise InputError(path, f"no model could be exported as {' or '.join(formats)}: {skipped[0]['error']}")
    return path


def _jsonable(result: ParityResult) -> dict[str, Any]:
    finite = bool(np.isfinite(result.max_abs_diff))
    record = {k: v for k, v in result.__dict__.items() if k != "error"}
    return {**record, "max_abs_diff": result.max_abs_diff if finite else None}
