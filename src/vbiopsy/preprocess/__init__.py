"""MRI-Processor: raw scans → model-ready volumes on one grid, with a record to map results back.

Steps (each a small backend, composed by :func:`preprocess_subject` from a
:class:`PreprocessConfig`): N4 bias correction (:mod:`.bias`), resampling (:mod:`.resample`),
rigid co-registration to a reference modality (:mod:`.coregister`), rigid + affine registration
to the MNI152 template or ANTsPy SyN (:mod:`.template_registration`, :mod:`.syn`), skull stripping
(:mod:`.skullstrip`, backends in :mod:`.strippers`), z-score normalisation (:mod:`.normalize`);
:func:`to_native` maps output-space maps back onto a native scan.
"""

from vbiopsy.preprocess.bias import n4_correct
from vbiopsy.preprocess.config import BiasFieldConfig
from vbiopsy.preprocess.config import CoregistrationConfig
from vbiopsy.preprocess.config import NormalizeConfig
from vbiopsy.preprocess.config import PreprocessConfig
from vbiopsy.preprocess.config import RegistrationConfig
from vbiopsy.preprocess.config import ResampleConfig
from vbiopsy.preprocess.config import SkullStripConfig
from vbiopsy.preprocess.native import to_native
from vbiopsy.preprocess.normalize import zscore
from vbiopsy.preprocess.pipeline import ProcessedSubject
from vbiopsy.preprocess.pipeline import preprocess_subject
from vbiopsy.preprocess.resample import grid_at_spacing
from vbiopsy.preprocess.resample import resample_volume
from vbiopsy.preprocess.skullstrip import RefineOptions
from vbiopsy.preprocess.skullstrip import refine_brain_mask
from vbiopsy.preprocess.strippers import EXTERNAL_TOOLS
from vbiopsy.preprocess.strippers import SkullStripper
from vbiopsy.preprocess.strippers import StripInputs
from vbiopsy.preprocess.strippers import make_stripper
