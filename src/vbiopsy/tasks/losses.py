"""Losses: class-weighted smoothed cross-entropy (the Keras way), binary cross-entropy, Cox partial
likelihood, and balanced class weights.

Class weights are applied as Keras applies ``class_weight`` (reference notes, Appendix A): each
sample's loss — computed on the *smoothed* target — is multiplied by the weight of its *true*
class, then the plain mean is taken. PyTorch's ``CrossEntropyLoss(weight=…)`` instead divides by
the summed weights, which cancels the weight at batch size 1 (the ASLNet setting), and spreads
the weight over the smoothed classes; neither is what the reference trained with.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from vbiopsy.errors import ConfigError, InputError


def _check_smoothing(label_smoothing: float) -> float:
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float)) \
            or not 0.0 <= float(label_smoothing) < 1.0:
        raise ConfigError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
    return float(label_smoothing)


def _check_weight(weight: Tensor | None, n_classes: int, name: str, like: Tensor) -> Tensor | None:
    if weight is None:
        return None
    weight = torch.as_tensor(weight, dtype=like.dtype, device=like.device)
    if weight.shape != (n_classes,):
        raise ConfigError(f"{name} must have shape ({n_classes},), got {tuple(weight.shape)}")
    if not bool(torch.isfinite(weight).all()) or bool((weight < 0).any()):
        raise ConfigError(f"{name} must be finite and ≥ 0, got {weight.tolist()}")
    return weight


def _class_target(target: Tensor, n_classes: int, batch: int) -> Tensor:
    """``target`` as int64 class indices in ``[0, n_classes)``; floats must be whole numbers."""
    if target.shape != (batch,):
        raise InputError("target", f"expected shape ({batch},), got {tuple(target.shape)}")
    if target.is_floating_point():
        if not bool(torch.isfinite(target).all()) or bool((target != target.round()).any()):
            raise InputError("target", "class targets must be whole numbers")
    target = target.long()
    if batch and (int(target.min()) < 0 or int(target.max()) >= n_classes):
        raise InputError("target", f"class indices must be in [0, {n_classes}), got "
                                   f"[{int(target.min())}, {int(target.max())}]")
    return target


def weighted_smoothed_cross_entropy(logits: Tensor, target: Tensor, *, label_smoothing: float = 0.0,
                                    class_weight: Tensor | None = None) -> Tensor:
    """Mean over the batch of ``w[y] · CE(softmax(logits), (1 − ε)·onehot(y) + ε/K)``.

    Args:
        logits: ``(B, K)`` unnormalised class scores.
        target: ``(B,)`` class indices.
        label_smoothing: ε in ``[0, 1)``; the smoothed target is ``(1 − ε)·onehot + ε/K``
            (as Keras and ``nn.CrossEntropyLoss``).
        class_weight: ``(K,)`` weights, applied to each sample's loss by its true class; the mean
            is NOT divided by the summed weights (so a weight still matters at batch size 1).

    Returns:
        Scalar loss (nats). Without ``class_weight`` it equals
        ``nn.CrossEntropyLoss(label_smoothing=ε)``.
    """
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise InputError("logits", f"expected shape (batch, classes ≥ 2), got {tuple(logits.shape)}")
    n_classes = logits.shape[1]
    target = _class_target(target, n_classes, logits.shape[0])
    smoothing = _check_smoothing(label_smoothing)
    weight = _check_weight(class_weight, n_classes, "class_weight", logits)
    log_prob = F.log_softmax(logits, dim=1)
    soft = F.one_hot(target, n_classes).to(log_prob.dtype) * (1.0 - smoothing) + smoothing / n_classes
    per_sample = -(soft * log_prob).sum(dim=1)
    if weight is not None:
        per_sample = per_sample * weight[target]
    return per_sample.mean()


def binary_cross_entropy(logits: Tensor, target: Tensor, *, label_smoothing: float = 0.0,
                         pos_weight: float | Tensor | None = None, class_weight: Tensor | None = None) -> Tensor:
    """Mean binary cross-entropy on one logit per sample, optionally smoothed and class-weighted.

    Args:
        logits: ``(B,)`` or ``(B, 1)`` logits of the positive class.
        target: ``(B,)`` or ``(B, 1)`` labels in ``{0, 1}``.
        label_smoothing: ε; the target becomes ``y·(1 − ε) + ε/2`` (Keras binary smoothing).
        pos_weight: PyTorch semantics: multiplies the positive term ``−y·log σ(z)`` only.
        class_weight: ``(2,)`` Keras semantics: multiplies each sample's loss by ``w[y]``; plain mean.

    Returns:
        Scalar loss (nats).
    """
    if logits.ndim == 2 and logits.shape[1] == 1:
        logits = logits[:, 0]
    if logits.ndim != 1:
        raise InputError("logits", f"expected shape (batch,) or (batch, 1), got {tuple(logits.shape)}")
    target = target.reshape(-1) if target.ndim == 2 and target.shape[1] == 1 else target
    hard = _class_target(target, 2, logits.shape[0])
    smoothing = _check_smoothing(label_smoothing)
    soft = hard.to(logits.dtype) * (1.0 - smoothing) + smoothing / 2.0
    pw = None
    if pos_weight is not None:
        pw = torch.as_tensor(pos_weight, dtype=logits.dtype, device=logits.device)
        if pw.numel() != 1 or not bool(torch.isfinite(pw).all()) or float(pw) < 0:
            raise ConfigError(f"pos_weight must be one finite number ≥ 0, got {pos_weight!r}")
        pw = pw.reshape(())
    weight = _check_weight(class_weight, 2, "class_weight", logits)
    per_sample = F.binary_cross_entropy_with_logits(logits, soft, pos_weight=pw, reduction="none")
    if weight is not None:
        per_sample = per_sample * weight[hard]
    return per_sample.mean()


def cox_partial_likelihood(risk: Tensor, time: Tensor, event: Tensor) -> Tensor:
    """Negative log Cox partial likelihood (Breslow ties), averaged over the events of the batch.

    ``−(1/E) Σ_{i: event} [r_i − log Σ_{j: t_j ≥ t_i} exp(r_j)]``: with Breslow's approximation
    every tied death sees the full risk set, tied deaths included. The partial likelihood only
    compares patients within the batch, so a batch needs several patients and at least one event.

    Args:
        risk: ``(B,)`` or ``(B, 1)`` log-hazard scores (higher = shorter survival).
        time: ``(B,)`` survival or follow-up times (any unit, ≥ 0).
        event: ``(B,)`` 1 = death observed, 0 = censored.

    Returns:
        Scalar loss. A batch without events has no partial likelihood: it returns ``0·Σ risk``,
        a zero that is still attached to the graph (zero gradients), so training steps do not fail.
    """
    if risk.ndim == 2 and risk.shape[1] == 1:
        risk = risk[:, 0]
    if risk.ndim != 1:
        raise InputError("risk", f"expected shape (batch,) or (batch, 1), got {tuple(risk.shape)}")
    n = risk.shape[0]
    time = torch.as_tensor(time, device=risk.device).reshape(-1).to(risk.dtype)
    if time.shape != (n,):
        raise InputError("time", f"expected shape ({n},), got {tuple(time.shape)}")
    if not bool(torch.isfinite(time).all()) or bool((time < 0).any()):
        raise InputError("time", "survival times must be finite and ≥ 0")
    event = _class_target(torch.as_tensor(event, device=risk.device).reshape(-1), 2, n)
    n_events = int(event.sum())
    if n_events == 0:
        return (risk * 0.0).sum()
    order = torch.argsort(time)
    time_sorted, risk_sorted = time[order], risk[order]
    # tail_lse[k] = log Σ_{m ≥ k} exp(risk_sorted[m]): the risk set of anyone whose time is time_sorted[k]
    tail_lse = torch.flip(torch.logcumsumexp(torch.flip(risk_sorted, [0]), dim=0), [0])
    first_at_risk = torch.searchsorted(time_sorted.contiguous(), time.contiguous(), side="left")
    log_risk_set = tail_lse[first_at_risk]
    dead = event.bool()
    return -(risk[dead] - log_risk_set[dead]).sum() / n_events


def class_weights(y: np.ndarray, n_classes: int) -> np.ndarray:
    """Balanced class weights ``n / (K · count_k)`` (scikit-learn's ``"balanced"``).

    Compute them on the TRAINING patients of a fold only (the caller's job): counting validation
    or test patients leaks their label distribution. A class absent from ``y`` gets weight 0 — no
    training sample carries it, so the value never enters the loss (scikit-learn raises instead).

    Args:
        y: ``(n,)`` class indices in ``[0, n_classes)``.
        n_classes: K ≥ 2.

    Returns:
        ``(K,)`` float64 weights.
    """
    if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or n_classes < 2:
        raise ConfigError(f"n_classes must be an integer ≥ 2, got {n_classes!r}")
    y = np.asarray(y)
    if y.ndim != 1 or y.size == 0:
        raise InputError("y", f"expected a non-empty 1-D array of class indices, got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.issubdtype(y.dtype, np.floating) or not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            raise InputError("y", f"class indices must be whole numbers, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if y.min() < 0 or y.max() >= n_classes:
        raise InputError("y", f"class indices must be in [0, {n_classes}), got [{y.min()}, {y.max()}]")
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    weights = np.zeros(n_classes, dtype=np.float64)
    present = counts > 0
    weights[present] = len(y) / (n_classes * counts[present])
    return weights


def masked_marker_loss(logits: Tensor, target: Tensor, *, label_smoothing: float = 0.0,
                       pos_weight: Tensor | None = None, focal_gamma: float = 0.0) -> Tensor:
    """Mean binary loss over the *known* marker labels of a batch (unknown = NaN are left out).

    Args:
        logits: ``(B, K)`` one logit per marker.
        target: ``(B, K)`` 0/1, NaN where the marker is not known for the patient (1p/19q is only
            defined for some gliomas).
        label_smoothing: ε; targets become ``y·(1 − ε) + ε/2``.
        pos_weight: ``(K,)`` weight of the positive term per marker (class balance), or ``None``.
        focal_gamma: 0 = binary cross-entropy; > 0 = focal loss ``(1 − p_t)^γ · BCE`` (p_t of the hard label).

    Returns:
        Scalar; 0 (with a gradient path) when no label in the batch is known.
    """
    if logits.ndim != 2 or target.shape != logits.shape:
        raise InputError("markers", f"logits {tuple(logits.shape)} and target {tuple(target.shape)} must both be (B, K)")
    smoothing = _check_smoothing(label_smoothing)
    if focal_gamma < 0:
        raise ConfigError(f"focal_gamma must be ≥ 0, got {focal_gamma}")
    known = torch.isfinite(target)
    if not bool(known.any()):
        return logits.sum() * 0.0
    hard = torch.where(known, target, torch.zeros_like(target))
    if bool(((hard != 0) & (hard != 1)).any()):
        raise InputError("markers", "marker labels must be 0, 1 or NaN")
    soft = hard * (1.0 - smoothing) + smoothing / 2.0
    pw = None if pos_weight is None else torch.as_tensor(pos_weight, dtype=logits.dtype, device=logits.device)
    per = F.binary_cross_entropy_with_logits(logits.float(), soft.float(), pos_weight=pw, reduction="none")
    if focal_gamma > 0:
        p = torch.sigmoid(logits.float())
        p_t = torch.where(hard > 0.5, p, 1.0 - p)
        per = (1.0 - p_t).pow(focal_gamma) * per
    return per[known].mean()


def marker_pos_weight(markers: np.ndarray) -> np.ndarray:
    """``(K,)`` n_negative / n_positive per marker over the known labels of ``markers`` (n, K); 1 where
    a class is absent."""
    markers = np.asarray(markers, dtype=float)
    pos = np.nansum(markers == 1, axis=0).astype(float)
    neg = np.nansum(markers == 0, axis=0).astype(float)
    return np.where((pos > 0) & (neg > 0), neg / np.maximum(pos, 1.0), 1.0).astype(np.float32)
