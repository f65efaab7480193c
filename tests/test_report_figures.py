"""Static figures: the saliency panels the README and reports show."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest

from vbiopsy.report.figures import saliency_panels


def test_saliency_panels_draw_one_panel_per_patient_on_the_slice_with_most_saliency(tmp_path: Path) -> None:
    image = np.random.default_rng(0).random((12, 12, 10)).astype(np.float32)
    saliency = np.zeros_like(image)
    saliency[4:7, 4:7, 6] = 1.0
    seg = (saliency > 0).astype(np.int16)
    out = saliency_panels([("a", image, saliency, seg), ("b", image, saliency, None)], tmp_path / "p.png",
                          title="t")
    pixels = mpimg.imread(out)
    assert pixels.shape[1] > pixels.shape[0] > 100  # two panels side by side
    assert not list(tmp_path.glob("*.tmp*"))
    with pytest.raises(ValueError, match="at least one panel"):
        saliency_panels([], tmp_path / "none.png")
