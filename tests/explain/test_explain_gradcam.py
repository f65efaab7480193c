"""3-D Grad-CAM: localises the one region that carries evidence, matches a by-hand computation, shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vbiopsy.errors import ConfigError
from vbiopsy.explain import grad_cam

torch.set_num_threads(1)
SHAPE = (16, 16, 16)


class BlobNet(nn.Module):
    """Positive filters, so activations are high where the input is bright; class 1 likes brightness."""

    def __init__(self, n_out: int = 2) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv3d(1, 3, 3, padding=1), nn.ReLU())
        self.stage = nn.Sequential(nn.Conv3d(3, 4, 3, padding=1, stride=2), nn.ReLU())
        self.head = nn.Linear(4, n_out)
        with torch.no_grad():
            for conv in (self.stem[0], self.stage[0]):
                conv.weight.abs_()
                conv.bias.zero_()
            slopes = torch.linspace(-1.0, 1.0, n_out) if n_out > 1 else torch.ones(1)
            self.head.weight.copy_(slopes[:, None].expand(n_out, 4))

    def forward(self, image: Tensor) -> Tensor:
        return self.head(self.stage(self.stem(image)).mean(dim=(2, 3, 4)))


def _blob_image(corner: tuple[int, int, int]) -> Tensor:
    torch.manual_seed(0)
    image = 0.05 * torch.rand(1, 1, *SHAPE)
    x, y, z = corner
    image[0, 0, x:x + 4, y:y + 4, z:z + 4] += 1.0
    return image


def test_map_peaks_on_the_only_bright_region() -> None:
    torch.manual_seed(1)
    model = BlobNet()
    for corner in [(2, 3, 9), (10, 8, 1)]:
        image = _blob_image(corner)
        cam = grad_cam(model, model.stage, image, 1)
        assert cam.shape == (1, *SHAPE) and cam.dtype == np.float32
        assert cam.max() == pytest.approx(1.0) and cam.min() >= 0
        peak = np.unravel_index(np.argmax(cam[0]), SHAPE)
        assert all(c - 1 <= p <= c + 4 for p, c in zip(peak, corner)), (peak, corner)
        inside = np.zeros(SHAPE, bool)
        x, y, z = corner
        inside[max(x - 2, 0):x + 6, max(y - 2, 0):y + 6, max(z - 2, 0):z + 6] = True
        assert cam[0][~inside].max() < 0.3  # measured 0.15–0.19 away from the blob
        assert cam[0][inside].mean() > 4 * cam[0][~inside].mean()  # measured 6.4


def test_matches_grad_cam_computed_by_hand() -> None:
    torch.manual_seed(2)
    model = BlobNet(n_out=3)
    with torch.no_grad():
        model.head.weight.normal_()
    images = torch.cat([_blob_image((2, 3, 9)), _blob_image((10, 8, 1))])
    cam = grad_cam(model, model.stage, images, [0, 2], out_shape=(10, 12, 14))
    expected = []
    for image, target in zip(images, [0, 2]):
        activation = model.stage(model.stem(image[None]))
        score = model.head(activation.mean(dim=(2, 3, 4)))[0, target]
        (gradient,) = torch.autograd.grad(score, activation)
        weights = gradient.mean(dim=(2, 3, 4), keepdim=True)
        raw = F.relu((weights * activation).sum(dim=1, keepdim=True))
        up = F.interpolate(raw, size=(10, 12, 14), mode="trilinear", align_corners=False)[0, 0].detach().numpy()
        expected.append(up / up.max() if up.max() > 0 else up)
    assert cam.shape == (2, 10, 12, 14)
    np.testing.assert_allclose(cam, np.stack(expected), rtol=1e-5, atol=1e-6)


def test_binary_model_and_bad_layers() -> None:
    torch.manual_seed(3)
    model = BlobNet(n_out=1)
    image = _blob_image((5, 5, 5))
    positive = grad_cam(model, model.stage, image, 1)
    negative = grad_cam(model, model.stage, image, 0)  # −z: the bright blob argues against class 0
    assert positive.max() == pytest.approx(1.0) and np.all(negative == 0)
    with pytest.raises(ConfigError, match="target class 2 does not exist"):
        grad_cam(model, model.stage, image, 2)
    with pytest.raises(ConfigError, match="not a submodule"):
        grad_cam(model, nn.Conv3d(1, 1, 1), image, 1)
    with pytest.raises(ConfigError, match=r"\(B, C, x, y, z\)"):
        grad_cam(model, model.head, image, 1)
    with pytest.raises(ConfigError, match="out_shape"):
        grad_cam(model, model.stage, image, 1, out_shape=(4, 4))
