"""The install keeps the pinned PyTorch build (a stray dependency must not replace it)."""

from __future__ import annotations

import re
from pathlib import Path

import torch

CONSTRAINTS = Path(__file__).resolve().parents[1] / "constraints.txt"


def test_torch_is_the_pinned_build() -> None:
    pins = re.findall(r"^torch==(\S+)", CONSTRAINTS.read_text(), flags=re.MULTILINE)
    assert len(pins) == 1, "constraints.txt must pin torch exactly once"
    assert torch.__version__.split("+")[0] == pins[0]


def test_package_imports_lightly() -> None:
    """``import vbiopsy`` and the CLI module must not pull torch/monai (fast --help)."""
    import subprocess
    import sys

    code = "import sys, vbiopsy.cli; print(','.join(m for m in ('torch', 'monai', 'nibabel', 'SimpleITK') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""
