"""Tumor-Localizer (Virtual Biopsy paper, Fig. 3): slice boxes → coarse prior → MLP-refined prior.

Proposal sources implement :class:`SliceProposer`: the built-in :class:`BuiltinProposer`
(abnormal and contralaterally asymmetric signal, no weights) and :class:`VLMProposer` (a
vision-language model behind an OpenAI-compatible endpoint the user runs). :func:`localize`
stacks their boxes into a coarse prior (:mod:`.prior`), refines it with a per-scan voxel MLP
(:mod:`.refine`) and returns both with a record; :func:`localize_files` and
:func:`save_localization` read and write NIfTI.
"""

from vbiopsy.localize.boxes import Box, ProposalError, Proposals, SliceBoxes, SliceProposer, stack_boxes
from vbiopsy.localize.builtin import BuiltinProposer
from vbiopsy.localize.config import BuiltinConfig, LocalizerConfig, PriorConfig, RefineConfig, VLMConfig
from vbiopsy.localize.midline import MidPlane, estimate_midplane
from vbiopsy.localize.pipeline import (
    LocalizationResult,
    NoLesionError,
    localize,
    localize_files,
    save_localization,
)
from vbiopsy.localize.scan import Scan, prepare_scan
from vbiopsy.localize.vlm import VLMProposer

__all__ = [
    "Box", "BuiltinConfig", "BuiltinProposer", "LocalizationResult", "LocalizerConfig", "MidPlane",
    "NoLesionError", "PriorConfig", "ProposalError", "Proposals", "RefineConfig", "Scan", "SliceBoxes",
    "SliceProposer", "VLMConfig", "VLMProposer", "estimate_midplane", "localize", "localize_files", "prepare_scan",
    "save_localization", "stack_boxes",
]
