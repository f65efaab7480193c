"""Refinement (paper Eq. 5): a voxel MLP trained per scan on the prior's own confident voxels.

Pseudo-labels come from the coarse prior alone: tumour = brain voxels with prior ≥
``tumour_threshold``; background = brain voxels with prior ≤ ``background_threshold``, half of
them (``near_fraction``) from the ring around the coarse mask — the same tissue that fills the
boxes' corners, so the MLP cannot separate "inside a box" from "elsewhere" by tissue type alone
— and half from the rest of the brain. Classes are balanced. The MLP then labels every brain
voxel within ``support_margin_mm`` of the coarse mask; positive voxels connected to the
high-confidence core are kept and united with it:

    refined = (prior ≥ union_threshold) ∪ connected(MLP probability ≥ probability_threshold)

The union keeps the paper's recall-first intent; taking the core at a high threshold instead of
the whole coarse mask lets the MLP drop the dilation margin where the tissue is normal, so the
refined mask is usually smaller than the coarse one at equal or better recall.

If the prior peaks below ``tumour_threshold`` (a proposer that is never sure), the three prior
thresholds are scaled by the prior's maximum; this is recorded.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from vbiopsy.localize.config import RefineConfig
from vbiopsy.localize.features import FeatureSource, Standardiser, feature_source
from vbiopsy.localize.geometry import bounding_slices
from vbiopsy.localize.scan import Scan
from vbiopsy.preprocess.morphology import distance_to

PREDICT_CHUNK = 1 << 18


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one thread, then restore the caller's setting.

    The network is tiny: one thread is as fast, and it avoids thread oversubscription when
    several scans run in parallel worker processes.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class VoxelMLP(nn.Module):
    """Fully connected ReLU network, features (N, F) → tumour logits (N,)."""

    def __init__(self, n_features: int, hidden: tuple[int, ...] = (32, 32)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = n_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


def _sample(index: tuple[np.ndarray, ...], n: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """``n`` voxels of ``index`` drawn without replacement (all of them if fewer)."""
    count = len(index[0])
    if n >= count:
        return index
    pick = np.sort(rng.choice(count, size=n, replace=False))
    return tuple(axis[pick] for axis in index)


def train_mlp(positive: np.ndarray, negative: np.ndarray, config: RefineConfig) -> tuple[VoxelMLP, list[float]]:
    """Train on standardised features (balanced batches); return the model and the loss per step."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = VoxelMLP(positive.shape[1], config.hidden)
    generator = torch.Generator().manual_seed(config.seed)
    pos, neg = torch.from_numpy(positive), torch.from_numpy(negative)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    half = max(1, config.batch_size // 2)
    target = torch.cat([torch.ones(half), torch.zeros(half)])
    losses = []
    model.train()
    for _ in range(config.steps):
        batch = torch.cat([pos[torch.randint(len(pos), (half,), generator=generator)],
                           neg[torch.randint(len(neg), (half,), generator=generator)]])
        loss = nn.functional.binary_cross_entropy_with_logits(model(batch), target)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    model.eval()
    return model, losses


def predict(model: VoxelMLP, source: FeatureSource, scale: Standardiser,
            index: tuple[np.ndarray, ...]) -> np.ndarray:
    """Tumour probability of the voxels ``index`` (chunked, no gradients)."""
    out = np.empty(len(index[0]), dtype=np.float32)
    with torch.no_grad():
        for start in range(0, len(out), PREDICT_CHUNK):
            part = tuple(axis[start:start + PREDICT_CHUNK] for axis in index)
            logits = model(torch.from_numpy(scale(source.take(part))))
            out[start:start + PREDICT_CHUNK] = torch.sigmoid(logits).numpy()
    return out


def connected_to(mask: np.ndarray, core: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` in a 6-connected component of ``mask | core`` that touches ``core``."""
    labels, _ = ndimage.label(mask | core)
    touching = np.unique(labels[core])
    return np.isin(labels, touching[touching > 0]) & mask


def refine_prior(scan: Scan, prior: np.ndarray, config: RefineConfig, *,
                 mask_threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """MLP probability (float32, 0 outside the support), refined mask (bool) and record."""
    started = time.perf_counter()
    brain = scan.brain
    peak = float(prior.max()) if prior.size else 0.0
    scale = 1.0 if peak >= config.tumour_threshold or peak <= 0 else peak
    hi, lo, union = (config.tumour_threshold * scale, config.background_threshold * scale,
                     config.union_threshold * scale)
    core = (prior >= union) & brain if peak > 0 else np.zeros(brain.shape, dtype=bool)
    probability = np.zeros(brain.shape, dtype=np.float32)
    record: dict[str, Any] = {"enabled": config.enabled, "tumour_threshold": hi, "background_threshold": lo,
                              "union_threshold": union, "probability_threshold": config.probability_threshold,
                              "thresholds_scaled_by_peak": scale if scale != 1.0 else None,
                              "core_voxels": int(np.count_nonzero(core))}
    if not config.enabled or peak <= 0:
        record["skipped"] = "disabled" if not config.enabled else "empty prior"
        return probability, core, record
    coarse_mask = prior >= mask_threshold * scale
    support = brain & (distance_to(coarse_mask, scan.spacing) <= config.support_margin_mm)
    positive = np.nonzero((prior >= hi) & brain)
    background = (prior <= lo) & brain
    near, far = np.nonzero(background & support), np.nonzero(background & ~support)
    n_pos, n_bg = len(positive[0]), len(near[0]) + len(far[0])
    record.update(tumour_candidates=n_pos, background_candidates=n_bg, support_voxels=int(np.count_nonzero(support)))
    if min(n_pos, n_bg) < config.min_samples:
        record["skipped"] = (f"too few pseudo-labelled voxels (tumour {n_pos}, background {n_bg}; "
                             f"need {config.min_samples} each)")
        return probability, core, record

    rng = np.random.default_rng(config.seed)
    n = min(n_pos, config.max_samples)
    n_near = min(round(config.near_fraction * n), len(near[0]))
    n_far = min(n - n_near, len(far[0]))
    n_near = min(n - n_far, len(near[0]))
    pos_index = _sample(positive, n, rng)
    neg_index = tuple(np.concatenate(parts) for parts in zip(_sample(near, n_near, rng), _sample(far, n_far, rng)))
    source = feature_source(scan, config.scales_mm, prior, position=config.position_feature,
                            core_threshold=mask_threshold * scale)
    x_pos, x_neg = source.take(pos_index), source.take(neg_index)
    standardise = Standardiser.fit(np.concatenate([x_pos, x_neg]))
    with single_thread():
        model, losses = train_mlp(standardise(x_pos), standardise(x_neg), config)

    window = bounding_slices(support, (1, 1, 1))
    sub_support = support[window]
    local = np.nonzero(sub_support)
    global_index = tuple(axis + w.start for axis, w in zip(local, window))
    with single_thread():
        probs = predict(model, source, standardise, global_index)
    probability[global_index] = probs
    positive_mlp = np.zeros(sub_support.shape, dtype=bool)
    positive_mlp[local] = probs >= config.probability_threshold
    anchor = core | ((prior >= hi) & brain)  # never empty here: there are tumour pseudo-labels
    kept = connected_to(positive_mlp, anchor[window])
    refined = core.copy()
    refined[window] |= kept
    tail = losses[-20:]
    record.update(
        features=list(source.feature_names), samples={"tumour": len(pos_index[0]), "near": n_near, "far": n_far},
        loss_first=round(losses[0], 4), loss_final=round(float(np.mean(tail)), 4), steps=config.steps,
        mlp_positive_voxels=int(np.count_nonzero(positive_mlp)), mlp_kept_voxels=int(np.count_nonzero(kept)),
        added_voxels=int(np.count_nonzero(kept & ~core[window])), refined_voxels=int(np.count_nonzero(refined)),
        seconds=round(time.perf_counter() - started, 3))
    return probability, refined, record
