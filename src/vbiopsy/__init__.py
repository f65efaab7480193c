"""vbiopsy: non-invasive "virtual biopsy" of brain tumours from MRI.

Heavy modules (torch, monai, SimpleITK) are imported lazily by the sub-packages that need
them, so ``import vbiopsy`` and ``vbiopsy --help`` stay fast.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("vbiopsy")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
