"""A small 3D CNN that turns a tumour-centred crop into one feature vector for the diagnoser's head.

The whole-brain backbone sees the tumour at the working grid's resolution; this branch sees a
crop around the tumour prior's centre at the scan's resolution (:mod:`vbiopsy.train.diagnosis_crop`),
where the enhancement pattern lives. Layout (``stages`` = 4, ``width`` = w)::

    [conv3 → BN → ReLU] w → maxpool 2 → [..] 2w → maxpool 2 → [..] 4w → maxpool 2 → [..] 4w → GAP → (B, 4w)

Channels double per stage up to 4w; every stage but the last halves the grid, so a crop needs
at least 2^(stages − 1) voxels per axis. Not in the paper.
"""

from __future__ import annotations

from torch import Tensor, nn

from vbiopsy.errors import ConfigError, InputError
from vbiopsy.models.film import check_int


def stage_channels(width: int, stages: int) -> list[int]:
    """Output channels of each stage: w, 2w, 4w, 4w, ... (doubling, capped at 4w)."""
    return [width * min(2**i, 4) for i in range(stages)]


class LesionCropEncoder(nn.Module):
    """(B, in_channels, X, Y, Z) crop → (B, out_channels) pooled features (see the module docstring).

    Args:
        in_channels: crop channels (one per modality).
        width: channels of the first stage (w).
        stages: conv stages (≥ 1), max-pooling by 2 between them.
    """

    def __init__(self, in_channels: int, width: int = 16, stages: int = 4) -> None:
        super().__init__()
        self.in_channels = check_int("in_channels", in_channels)
        self.width = check_int("width", width)
        self.stages = check_int("stages", stages)
        if self.stages > 6:
            raise ConfigError(f"stages must be at most 6, got {stages!r}")
        layers: list[nn.Module] = []
        previous = self.in_channels
        for index, channels in enumerate(stage_channels(self.width, self.stages)):
            if index:
                layers.append(nn.MaxPool3d(2))
            layers += [nn.Conv3d(previous, channels, 3, padding=1, bias=False), nn.BatchNorm3d(channels),
                       nn.ReLU(inplace=True)]
            previous = channels
        self.features = nn.Sequential(*layers)
        self.out_channels = previous

    @property
    def min_size(self) -> int:
        """The smallest crop side (voxels) the pooling stages accept."""
        return 2 ** (self.stages - 1)

    def forward(self, crop: Tensor) -> Tensor:
        """(B, out_channels) features of ``crop`` (B, in_channels, X, Y, Z)."""
        if not isinstance(crop, Tensor) or crop.dim() != 5 or crop.shape[1] != self.in_channels \
                or not crop.is_floating_point() or min(crop.shape[2:]) < self.min_size:
            got = tuple(crop.shape) if isinstance(crop, Tensor) else type(crop).__name__
            raise InputError("crop", f"expected a float tensor (B, {self.in_channels}, X, Y, Z) with every side "
                                     f">= {self.min_size}, got {got}")
        return self.features(crop).mean(dim=(2, 3, 4))

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, width={self.width}, stages={self.stages}"
