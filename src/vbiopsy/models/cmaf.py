"""Modality fusion at the input of MGMT-Net: Cross-Modality Attention Fusion (CMAF) and plain concatenation.

Both map an image (B, M, X, Y, Z) with a modality mask (B, M) to fused features (B, C', X, Y, Z)
and return ``(fused, weights)``; ``weights`` is None for :class:`ConcatFusion` (the paper's
"naive concatenation" ablation).

CMAF (paper §3.1): one SHARED 3³ conv + norm + ReLU embeds each modality separately
(1 channel → C'); per voxel an MLP of 1³ convs over the concatenated embeddings (M·C' → 4C' →
dropout → C'/2 → M) scores each modality; a softmax over the PRESENT modalities gives weights
α (B, M, X, Y, Z), and ``fused = Σ_m α_m · E_m``.

Missing modalities: an absent modality (mask 0) has its input and its embedding replaced by 0
(``torch.where``, so even NaN in an absent channel cannot leak), and its score is set to −∞
before the softmax, so its weight is exactly 0 and the output does not depend on its values.

Normalisation: GroupNorm (per sample, per modality; groups = gcd(min(8, C'), C')), not the
paper's BatchNorm: training runs at batch 2 and inference at batch 1 in sliding windows, where
batch statistics are noisy or differ from training; and BatchNorm would pool the statistics of
an absent (zeroed) modality into those of the present ones, breaking missing-modality
independence. InstanceNorm is also per sample but degenerates on the tiny grids deeper in the
network, so GroupNorm is used throughout MGMT-Net.

Brain-only statistics (:func:`normalise_over_brain`, :class:`BrainGroupNorm`): plain GroupNorm
takes its mean and variance over the whole window, so a voxel's features depend on how much zero
background (outside the brain, or sliding-window padding) the window holds. MGMT-Net trains on
24³ tumour-centred patches (~10–30 % background) and infers on larger windows (a 48³ window over
a 4 mm brain is ~70 % zeros): the background shrinks the variance and shifts the mean, brain
features are blown up, and a model can label half the brain as tumour (measured: one phantom
fold went from WT Dice ≈ 0.9 on its training patches to 0.25 on whole volumes). Inside
``normalise_over_brain(image)`` every MGMT-Net GroupNorm takes its statistics over the brain
voxels only (any modality non-zero, max-pooled to the layer's grid) and sets the background to
its shift β, so the amount of background no longer matters; a window with no brain voxel, or
with no background at all, uses ordinary GroupNorm.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from vbiopsy.errors import ConfigError, InputError
from vbiopsy.models.film import check_int, check_rate
from vbiopsy.models.resnet3d import conv3d, group_norm

#: GroupNorm group budget used by every MGMT-Net block.
GN_GROUPS = 8
#: the per-voxel attention runs on slabs of about this many voxels, so that its 4C'-channel
#: hidden layer never exists for the whole volume (at 128³ and C' = 16 that would be 0.5 GB).
VOXELS_PER_SLAB = 2 ** 16


#: the brain mask of the forward pass in progress, with its max-pooled versions by grid size.
_BRAIN_MASK: ContextVar[dict[tuple[int, ...], Tensor] | None] = ContextVar("mgmtnet_brain_mask", default=None)


def brain_mask(image: Tensor) -> Tensor:
    """(B, 1, X, Y, Z) bool: voxels where any modality of ``image`` (B, M, X, Y, Z) is non-zero.

    Preprocessing zeroes everything outside the brain (and absent modalities), and sliding-window
    padding is zero too, so this is the brain. A sample without any non-zero voxel counts as all brain.
    """
    mask = (image != 0).any(dim=1, keepdim=True)
    empty = ~mask.flatten(1).any(dim=1)
    if bool(empty.any()):
        mask = mask | empty.reshape(-1, 1, 1, 1, 1)
    return mask


@contextmanager
def normalise_over_brain(image: Tensor) -> Iterator[None]:
    """Inside, :class:`BrainGroupNorm` and the CMAF embedding norm take statistics over the brain of
    ``image`` (B, M, X, Y, Z) only (see the module docstring); without background, nothing changes."""
    mask = brain_mask(image)
    token = _BRAIN_MASK.set(None if bool(mask.all()) else {tuple(mask.shape[2:]): mask})
    try:
        yield
    finally:
        _BRAIN_MASK.reset(token)


def _active_mask(x: Tensor) -> Tensor | None:
    """The active brain mask max-pooled to the grid of ``x`` (B, C, *grid), or None outside
    :func:`normalise_over_brain` or for a batch it does not belong to."""
    masks = _BRAIN_MASK.get()
    if masks is None or x.dim() < 3:
        return None
    grid = tuple(x.shape[2:])
    if grid not in masks:
        full = next(iter(masks.values()))
        if full.shape[0] != x.shape[0] or len(grid) != full.dim() - 2:
            return None
        masks[grid] = F.adaptive_max_pool3d(full.float(), grid) > 0
    mask = masks[grid]
    return mask if mask.shape[0] == x.shape[0] else None


def masked_group_norm(x: Tensor, mask: Tensor | None, groups: int, weight: Tensor | None, bias: Tensor | None,
                      eps: float = 1e-5) -> Tensor:
    """GroupNorm of ``x`` (B, C, *grid) whose per-sample, per-group mean and variance are taken over the
    voxels where ``mask`` (B, 1, *grid) is True; voxels outside the mask are set to 0 before the affine
    (output = bias): background carries no information, and normalised with the brain's statistics
    its values could be extreme and leak into the brain through the next convolutions. ``mask`` None
    or all True: exactly ``torch.group_norm``. A sample whose mask is empty is all background."""
    if mask is None or bool(mask.all()):
        return torch.group_norm(x, groups, weight, bias, eps)
    batch, channels = x.shape[:2]
    if mask.shape != (batch, 1, *x.shape[2:]):
        raise InputError("mask", f"expected shape {(batch, 1, *x.shape[2:])}, got {tuple(mask.shape)}")
    if channels % groups:
        raise ConfigError(f"groups {groups} must divide the channels {channels}")
    values = x.reshape(batch, groups, -1, x.shape[2:].numel())
    inside = mask.reshape(batch, 1, 1, -1).to(x.dtype)
    count = inside.sum(dim=-1, keepdim=True).clamp_min(1.0) * values.shape[2]
    mean = (values * inside).sum(dim=(2, 3), keepdim=True) / count
    centred = values - mean
    var = (centred.square() * inside).sum(dim=(2, 3), keepdim=True) / count
    out = (centred * torch.rsqrt(var + eps) * inside).reshape(x.shape)
    shape = (1, channels) + (1,) * (x.dim() - 2)
    if weight is not None:
        out = out * weight.reshape(shape)
    if bias is not None:
        out = out + bias.reshape(shape)
    return out


class BrainGroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` (same parameters and state dict) with brain-only statistics inside
    :func:`normalise_over_brain`; ordinary GroupNorm elsewhere (a group may hold one value, as in
    :class:`~vbiopsy.models.resnet3d.GroupNorm3d`)."""

    def forward(self, x: Tensor) -> Tensor:
        return masked_group_norm(x, _active_mask(x), self.num_groups, self.weight, self.bias, self.eps)


def use_brain_group_norm(module: nn.Module) -> int:
    """Replace every ``nn.GroupNorm`` inside ``module`` by a :class:`BrainGroupNorm` with the same
    parameters (in place; state dicts stay compatible); returns how many were replaced."""
    replaced = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.GroupNorm) and not isinstance(child, BrainGroupNorm):
                norm = BrainGroupNorm(child.num_groups, child.num_channels, child.eps, child.affine)
                if child.affine:
                    norm.weight, norm.bias = child.weight, child.bias
                setattr(parent, name, norm)
                replaced += 1
    return replaced


def check_image(image: Tensor, modalities: int) -> None:
    """InputError unless ``image`` is a floating (B ≥ 1, ``modalities``, X, Y, Z) tensor."""
    if not isinstance(image, Tensor) or image.dim() != 5 or image.shape[0] < 1 or image.shape[1] != modalities:
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise InputError("image", f"expected shape (batch, {modalities}, X, Y, Z), got {shape}")
    if not image.is_floating_point():
        raise InputError("image", f"expected a floating-point tensor, got dtype {image.dtype}")


def check_modality_mask(mask: Tensor | None, image: Tensor) -> Tensor:
    """The modality mask as a bool (B, M) tensor on the image's device; None means all present.

    Accepts bool or 0/1 numbers of shape (B, M), or (1, M) broadcast to the batch (handy for
    MONAI's sliding-window inference, which batches windows of one volume). InputError for any
    other shape, values other than 0/1, or a sample with no modality present.
    """
    batch, modalities = image.shape[:2]
    if mask is None:
        return torch.ones(batch, modalities, dtype=torch.bool, device=image.device)
    if not isinstance(mask, Tensor) or mask.dim() != 2 or mask.shape[1] != modalities or \
            mask.shape[0] not in (1, batch):
        shape = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
        raise InputError("modality_mask", f"expected shape ({batch}, {modalities}) or (1, {modalities}), got {shape}")
    if mask.dtype != torch.bool:
        if mask.is_complex() or not bool(((mask == 0) | (mask == 1)).all()):
            raise InputError("modality_mask", f"values must be 0/1 or bool, got {mask.flatten().tolist()}")
        mask = mask != 0
    mask = mask.to(image.device).expand(batch, modalities)
    empty = (~mask.any(dim=1)).nonzero().flatten().tolist()
    if empty:
        raise InputError("modality_mask", f"sample(s) {empty} have no modality present (all {modalities} masked)")
    return mask


def _zero_absent(values: Tensor, mask: Tensor) -> Tensor:
    """``values`` (B, M, …) with the entries of absent modalities (mask (B, M) False) set to exactly 0."""
    view = mask.reshape(*mask.shape, *([1] * (values.dim() - 2)))
    return torch.where(view, values, values.new_zeros(()))


class CrossModalityAttentionFusion(nn.Module):
    """CMAF: per-voxel softmax attention over the present modalities of a shared embedding.

    Computed channels-last, which is several times faster on CPU than 1³ convs on contiguous
    maps: the shared embedding conv runs as ONE grouped conv (groups = M, the shared 1 → C'
    kernel repeated M times) whose channels-last output is already the per-voxel concatenation
    [E_1, …, E_M] (B, X, Y, Z, M·C'); GroupNorm with M·g groups over it is exactly a per-modality
    GroupNorm with g groups; the attention MLP is ``nn.Linear`` layers on that last axis (identical
    to 1³ convs), run on slabs of ``VOXELS_PER_SLAB`` voxels so that its 4C'-channel hidden layer
    never exists for the whole volume. The fused output is a channels-last strided view of the
    documented shape, so the convolutions after CMAF run channels-last too (faster on CPU).

    Args:
        in_modalities: M, number of input modalities (channels of the image).
        out_channels: C', channels of each modality embedding and of the fused output.
        hidden_factor: the attention MLP widens M·C' to ``hidden_factor``·C' (paper: 4).
        dropout: dropout after the first MLP layer (paper: 0.2).
    """

    def __init__(self, in_modalities: int, out_channels: int, hidden_factor: int = 4, dropout: float = 0.2) -> None:
        super().__init__()
        self.in_modalities = check_int("in_modalities", in_modalities)
        self.out_channels = check_int("out_channels (width)", out_channels)
        hidden_factor = check_int("hidden_factor", hidden_factor)
        rate = check_rate("cmaf_dropout", dropout)
        self.embed = conv3d(1, self.out_channels, 3)  # shared by all modalities
        self.norm = group_norm(self.out_channels, GN_GROUPS)  # per modality
        hidden = hidden_factor * self.out_channels
        compact = max(1, self.out_channels // 2)
        self.score = nn.Sequential(
            nn.Linear(self.in_modalities * self.out_channels, hidden), nn.ReLU(inplace=True),
            nn.Dropout(rate) if rate > 0 else nn.Identity(),
            nn.Linear(hidden, compact), nn.ReLU(inplace=True),
            nn.Linear(compact, self.in_modalities))

    def embed_modalities(self, image: Tensor) -> Tensor:
        """ReLU(GN(shared conv)) of every modality: (B, M, X, Y, Z) → channels-last (B, X, Y, Z, M·C')."""
        modalities = self.in_modalities
        weight = self.embed.weight.repeat(modalities, 1, 1, 1, 1)
        out = F.conv3d(image.contiguous(memory_format=torch.channels_last_3d), weight, padding=1, groups=modalities)
        out = masked_group_norm(out, _active_mask(out), self.norm.num_groups * modalities,
                                self.norm.weight.repeat(modalities), self.norm.bias.repeat(modalities), self.norm.eps)
        return torch.relu_(out).permute(0, 2, 3, 4, 1)

    def forward(self, image: Tensor, modality_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Fused features (B, C', X, Y, Z) and weights (B, M, X, Y, Z) for image (B, M, X, Y, Z).

        Weights sum to 1 over the present modalities at every voxel and are exactly 0 for absent ones.
        """
        check_image(image, self.in_modalities)
        mask = check_modality_mask(modality_mask, image)
        batch, modalities = mask.shape
        all_present = bool(mask.all())
        if not all_present:
            image = _zero_absent(image, mask)
        embedded = self.embed_modalities(image)  # (B, X, Y, Z, M·C')
        if not all_present:
            voxel_mask = mask.repeat_interleave(self.out_channels, dim=1).reshape(batch, 1, 1, 1, -1)
            embedded = torch.where(voxel_mask, embedded, embedded.new_zeros(()))
        absent = None if all_present else ~mask.reshape(batch, 1, 1, 1, modalities)
        rows = max(1, VOXELS_PER_SLAB // (embedded.shape[2] * embedded.shape[3]))
        parts = [self._attend(slab, absent) for slab in embedded.split(rows, dim=1)]
        fused = torch.cat([part[0] for part in parts], dim=1)
        weights = torch.cat([part[1] for part in parts], dim=1)
        return fused.permute(0, 4, 1, 2, 3), weights.permute(0, 4, 1, 2, 3).contiguous()

    def _attend(self, embedded: Tensor, absent: Tensor | None) -> tuple[Tensor, Tensor]:
        """Fused (…, C') and weights (…, M) for channels-last embeddings (B, x, Y, Z, M·C') of one slab."""
        scores = self.score(embedded)
        if absent is not None:
            scores = scores.masked_fill(absent, float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        width = self.out_channels
        fused = weights[..., 0:1] * embedded[..., :width]
        for index in range(1, self.in_modalities):
            fused = fused + weights[..., index:index + 1] * embedded[..., index * width:(index + 1) * width]
        return fused, weights

    def extra_repr(self) -> str:
        return f"in_modalities={self.in_modalities}, out_channels={self.out_channels}"


class ConcatFusion(nn.Module):
    """Ablation of CMAF: absent modalities zeroed, channels concatenated, 3³ conv + GN + ReLU → C'.

    Same call signature as :class:`CrossModalityAttentionFusion`; returns ``(fused, None)``.
    """

    def __init__(self, in_modalities: int, out_channels: int) -> None:
        super().__init__()
        self.in_modalities = check_int("in_modalities", in_modalities)
        self.out_channels = check_int("out_channels (width)", out_channels)
        self.project = nn.Sequential(conv3d(self.in_modalities, self.out_channels, 3),
                                     group_norm(self.out_channels, GN_GROUPS), nn.ReLU(inplace=True))

    def forward(self, image: Tensor, modality_mask: Tensor | None = None) -> tuple[Tensor, None]:
        """Fused features (B, C', X, Y, Z) for image (B, M, X, Y, Z); no attention weights."""
        check_image(image, self.in_modalities)
        mask = check_modality_mask(modality_mask, image)
        if not bool(mask.all()):
            image = _zero_absent(image, mask)
        return self.project(image), None

    def extra_repr(self) -> str:
        return f"in_modalities={self.in_modalities}, out_channels={self.out_channels}"


def build_fusion(kind: str, in_modalities: int, out_channels: int, dropout: float) -> nn.Module:
    """The fusion block named ``kind`` ("cmaf" or "concat"); ConfigError for any other name."""
    if kind == "cmaf":
        return CrossModalityAttentionFusion(in_modalities, out_channels, dropout=dropout)
    if kind == "concat":
        return ConcatFusion(in_modalities, out_channels)
    raise ConfigError(f"fusion must be 'cmaf' or 'concat', got {kind!r}")
