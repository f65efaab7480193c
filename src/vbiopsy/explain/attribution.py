"""Integrated Gradients of a class output, through captum, with bounded memory and seeded SmoothGrad.

Fixes of the ASLNet reference code (``../shared/reference/aslnet-reference-code-notes.md`` §7.1, §8.2):

- the explained output of a binary ``(B, 1)``-logit model is the sigmoid ``p`` for class 1 and
  ``1 − p`` for class 0 (the reference sliced column ``target`` of the one-column output, which is
  empty for class 1 and gave all-zero gradients);
- the SmoothGrad noise is seeded (the grade script used unseeded NumPy);
- the path integral uses captum's Gauss–Legendre rule by default (the reference averaged ``m``
  gradients at ``linspace(0, 1, m)``, both ends included; ``method="riemann_trapezoid"`` is the
  closest captum rule).

The default baseline is all zeros: zero is the background/pad value of every ASLNet channel (and
the brain median of the robust z channels), and of every z-scored MRI-Processor output outside the
brain, so the attribution answers "what does this image add over an empty head".
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

import numpy as np
import torch
from captum.attr import IntegratedGradients, NoiseTunnel
from scipy import ndimage
from torch import Tensor, nn

from vbiopsy.errors import ConfigError, InputError

Output = Literal["probability", "logit"]
"""What is explained: the class probability (softmax / sigmoid) or the class score (logit)."""
OUTPUTS: tuple[str, ...] = ("probability", "logit")
IG_METHODS: tuple[str, ...] = ("gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right",
                               "riemann_middle")
"""Path-integral rules accepted by captum's IntegratedGradients."""


def check_count(name: str, value: object, minimum: int = 1) -> int:
    """Return ``value`` if it is an int ``>= minimum`` (not a bool); else raise :class:`ConfigError`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_model(model: object) -> nn.Module:
    """Return ``model`` if it is an ``nn.Module``; else raise :class:`ConfigError`."""
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return model


def check_output(output: object) -> str:
    """Return ``output`` if it is ``"probability"`` or ``"logit"``; else raise :class:`ConfigError`."""
    if output not in OUTPUTS:
        raise ConfigError(f"output must be one of {OUTPUTS}, got {output!r}")
    return str(output)


def as_tensor_tuple(inputs: Tensor | Sequence[Tensor], name: str = "inputs") -> tuple[Tensor, ...]:
    """``inputs`` as a non-empty tuple of finite floating tensors sharing batch size ``B >= 1``."""
    items = (inputs,) if isinstance(inputs, Tensor) else tuple(inputs)
    if not items or not all(isinstance(t, Tensor) for t in items):
        raise InputError(name, "expected a tensor or a non-empty tuple of tensors")
    for i, tensor in enumerate(items):
        where = name if len(items) == 1 else f"{name}[{i}]"
        if not tensor.is_floating_point():
            raise InputError(where, f"expected a floating tensor, got dtype {tensor.dtype}")
        if tensor.ndim < 2 or tensor.shape[0] < 1:
            raise InputError(where, f"expected a batch (B, ...) with B >= 1, got shape {tuple(tensor.shape)}")
        if not bool(torch.isfinite(tensor).all()):
            raise InputError(where, f"{int((~torch.isfinite(tensor)).sum())} values are NaN or infinite")
    batch = {int(t.shape[0]) for t in items}
    if len(batch) != 1:
        raise InputError(name, f"tensors disagree on the batch size: {[int(t.shape[0]) for t in items]}")
    return items


def check_targets(target: int | Sequence[int], batch: int) -> list[int]:
    """One class index per sample: an int for all, or a sequence of ``batch`` ints, each ``>= 0``."""
    targets = [target] * batch if isinstance(target, numbers.Integral) else list(target)  # type: ignore[arg-type]
    if len(targets) != batch or any(isinstance(t, bool) or not isinstance(t, numbers.Integral) or t < 0
                                    for t in targets):
        raise ConfigError(f"target must be a class index >= 0 or one per sample ({batch}), got {target!r}")
    return [int(t) for t in targets]


def check_class_count(forward: Callable[..., Tensor], sample: tuple[Any, ...], targets: Sequence[int]) -> int:
    """Run ``forward`` on one sample (no gradients) and raise :class:`ConfigError` for a target out of range."""
    with torch.no_grad():
        n_classes = int(forward(*sample).shape[1])
    if max(targets) >= n_classes:
        raise ConfigError(f"target class {max(targets)} does not exist: the model has {n_classes} classes")
    return n_classes


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode (dropout off, running norm statistics) and restore its modes after."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.train(training)


def class_outputs(model: nn.Module, *, output: Output = "probability",
                  binary: bool | None = None) -> Callable[..., Tensor]:
    """Forward function ``f(*inputs) → (B, K)`` of per-class probabilities or scores.

    ``(B, K)`` logits (``K >= 2``) give the softmax (or the logits themselves); ``(B, 1)`` logits
    ``z`` give the two columns ``[1 − σ(z), σ(z)]`` (or ``[−z, z]``, the log-odds of each class).
    ``binary`` only checks the logit shape: ``True`` demands ``(B, 1)``, ``False`` ``(B, K >= 2)``,
    ``None`` accepts both.
    """
    check_model(model)
    check_output(output)
    if binary is not None and not isinstance(binary, bool):
        raise ConfigError(f"binary must be True, False or None, got {binary!r}")

    def forward(*inputs: Any) -> Tensor:
        logits = model(*inputs)
        if not isinstance(logits, Tensor) or logits.ndim != 2 or logits.shape[1] < 1:
            shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
            raise InputError("model output", f"expected logits of shape (B, K), got {shape}")
        one_column = logits.shape[1] == 1
        if binary is not None and binary != one_column:
            kind = "(B, 1) logits" if binary else "(B, K >= 2) logits"
            raise ConfigError(f"binary={binary} expects {kind}, the model returned shape {tuple(logits.shape)}")
        if one_column:
            score = logits[:, 0]
            if output == "logit":
                return torch.stack([-score, score], dim=1)
            positive = torch.sigmoid(score)
            return torch.stack([1.0 - positive, positive], dim=1)
        return logits if output == "logit" else torch.softmax(logits, dim=1)

    return forward


def class_probability(model: nn.Module, target: int, *, binary: bool | None = None,
                      output: Output = "probability") -> Callable[..., Tensor]:
    """Forward function ``f(*inputs) → (B,)``: the probability (or score) of class ``target`` per sample.

    Softmax for ``(B, K)`` logits; for ``(B, 1)`` logits ``σ(z)`` for target 1 and ``1 − σ(z)``
    for target 0 (see :func:`class_outputs`).
    """
    (target,) = check_targets(target, 1)
    outputs = class_outputs(model, output=output, binary=binary)

    def forward(*inputs: Any) -> Tensor:
        values = outputs(*inputs)
        if target >= values.shape[1]:
            raise ConfigError(f"target class {target} does not exist: the model has {values.shape[1]} classes")
        return values[:, target]

    return forward


def _check_baselines(baselines: Tensor | Sequence[Tensor] | float | None,
                     inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """One baseline per input, each of the input's shape or of one sample's shape ``(1, ...)``."""
    if baselines is None:
        return tuple(torch.zeros_like(x) for x in inputs)
    if isinstance(baselines, numbers.Real) and not isinstance(baselines, bool):
        return tuple(torch.full_like(x, float(baselines)) for x in inputs)
    items = (baselines,) if isinstance(baselines, Tensor) else tuple(baselines)  # type: ignore[arg-type]
    if len(items) != len(inputs) or not all(isinstance(b, Tensor) for b in items):
        raise InputError("baselines", f"expected {len(inputs)} tensor(s), one per input, got {len(items)}")
    out = []
    for i, (base, x) in enumerate(zip(items, inputs)):
        if tuple(base.shape) not in (tuple(x.shape), (1, *x.shape[1:])):
            raise InputError(f"baselines[{i}]", f"shape {tuple(base.shape)} matches neither the input "
                                                f"{tuple(x.shape)} nor one sample (1, *{tuple(x.shape[1:])})")
        if not bool(torch.isfinite(base).all()):
            raise InputError(f"baselines[{i}]", "has NaN or infinite values")
        out.append(base.to(device=x.device, dtype=x.dtype).expand_as(x))
    return tuple(out)


def _sample(args: tuple[Any, ...], index: int, batch: int) -> tuple[Any, ...]:
    """Sample ``index`` of every batched tensor in ``args`` (kept 2-D+); other values unchanged."""
    return tuple(a[index:index + 1] if isinstance(a, Tensor) and a.ndim > 0 and a.shape[0] == batch else a
                 for a in args)


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's global generators for the block (captum's NoiseTunnel draws from them) and restore them."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def integrated_gradients(
    model: nn.Module,
    inputs: Tensor | tuple[Tensor, ...],
    target: int | Sequence[int],
    *,
    baselines: Tensor | tuple[Tensor, ...] | float | None = None,
    n_steps: int = 32,
    internal_batch_size: int = 8,
    smooth_repeats: int = 0,
    noise_fraction: float = 0.02,
    seed: int = 0,
    output: Output = "probability",
    method: str = "gausslegendre",
    additional_forward_args: tuple[Any, ...] | None = None,
) -> tuple[Tensor, ...]:
    """Integrated Gradients of class ``target``'s probability for each input, same shapes as ``inputs``.

    Args:
        model: returns logits ``(B, K)`` or ``(B, 1)`` from ``model(*inputs, *additional_forward_args)``.
        inputs: e.g. an image ``(B, C, X, Y, Z)`` or ``(image, tabular)``; every one is attributed.
        target: class index, one for all samples or one per sample.
        baselines: the reference input (default zeros, the background/pad value; see module doc):
            a number for every input, or a tensor per input of its shape or one sample's shape.
        n_steps: points of the path integral.
        internal_batch_size: forward/backward passes evaluated together. Samples are explained one
            at a time, so peak memory is that of ``internal_batch_size`` samples whatever ``B``.
        smooth_repeats: when > 0, SmoothGrad over that many noisy copies (captum ``NoiseTunnel``):
            Gaussian noise of std ``noise_fraction · std(sample)`` (std over all channels and voxels
            of that sample, as the reference) is added to each input with >= 3 dims (images); 2-D
            inputs (tabular) are not perturbed.
        noise_fraction: noise std as a fraction of the sample's std.
        seed: seeds the noise (global torch generators are restored afterwards).
        output: ``"probability"`` (default) or ``"logit"`` (the class score; linear models give
            ``w · (x − baseline)`` exactly).
        method: captum's path-integral rule (see :data:`IG_METHODS`).
        additional_forward_args: extra, non-attributed model arguments (batched tensors are split
            per sample), e.g. the tabular input held fixed while the image is explained.

    Returns:
        A tuple of detached attribution tensors, one per input. The model runs in eval mode; its
        modes are restored afterwards.
    """
    check_model(model)
    items = as_tensor_tuple(inputs)
    batch = int(items[0].shape[0])
    targets = check_targets(target, batch)
    check_count("n_steps", n_steps, 2 if method == "riemann_trapezoid" else 1)
    check_count("internal_batch_size", internal_batch_size)
    check_count("smooth_repeats", smooth_repeats, 0)
    if method not in IG_METHODS:
        raise ConfigError(f"method must be one of {IG_METHODS}, got {method!r}")
    if not (isinstance(noise_fraction, numbers.Real) and math.isfinite(noise_fraction) and noise_fraction >= 0):
        raise ConfigError(f"noise_fraction must be a finite number >= 0, got {noise_fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ConfigError(f"seed must be an integer, got {seed!r}")
    bases = _check_baselines(baselines, items)
    extra = tuple(additional_forward_args or ())
    forward = class_outputs(model, output=output)
    ig = IntegratedGradients(forward)
    settings: dict[str, Any] = {"n_steps": n_steps, "method": method, "internal_batch_size": internal_batch_size}
    pieces: list[tuple[Tensor, ...]] = []
    with eval_mode(model), _seeded(int(seed), items[0].device):
        check_class_count(forward, _sample(items, 0, batch) + _sample(extra, 0, batch), targets)
        for index, t in enumerate(targets):
            sample = _sample(items, index, batch)
            kwargs = {"baselines": _sample(bases, index, batch), "target": t,
                      "additional_forward_args": _sample(extra, index, batch) or None, **settings}
            if smooth_repeats:
                stdevs = tuple(float(noise_fraction * x.std(correction=0)) if x.ndim >= 3 else 0.0 for x in sample)
                result = NoiseTunnel(ig).attribute(sample, nt_type="smoothgrad", nt_samples=smooth_repeats,
                                                   nt_samples_batch_size=1, stdevs=stdevs, **kwargs)
            else:
                result = ig.attribute(sample, **kwargs)
            pieces.append(tuple(a.detach() for a in (result if isinstance(result, tuple) else (result,))))
    return tuple(torch.cat([p[i] for p in pieces]) for i in range(len(items)))


def ig_channel_shares(attribution: np.ndarray, *, sigma_vox: float = 0.0) -> np.ndarray:
    """The reference's channel "contributions" ``Σ|IG_c| / Σ_c Σ|IG_c|`` of one sample, shape (C,).

    ``attribution`` is ``(C, X, Y, Z)``; with ``sigma_vox > 0`` the signed IG is first Gaussian
    smoothed in space only (edge-replicate), as the reference did with σ = 1 voxel. These shares
    scale with input magnitude (a CBF channel in the hundreds dominates); prefer
    :func:`vbiopsy.explain.channel_shapley`. All-zero attributions give NaN shares.
    """
    array = np.asarray(attribution, dtype=float)
    if array.ndim != 4 or not np.isfinite(array).all():
        raise InputError("attribution", f"expected a finite (C, X, Y, Z) array, got shape {array.shape}")
    if not (isinstance(sigma_vox, numbers.Real) and math.isfinite(sigma_vox) and sigma_vox >= 0):
        raise ConfigError(f"sigma_vox must be a finite number >= 0, got {sigma_vox!r}")
    if sigma_vox > 0:
        array = ndimage.gaussian_filter(array, sigma=(0, sigma_vox, sigma_vox, sigma_vox), mode="nearest")
    per_channel = np.abs(array).reshape(array.shape[0], -1).sum(axis=1)
    total = per_channel.sum()
    return per_channel / total if total > 0 else np.full(array.shape[0], np.nan)
