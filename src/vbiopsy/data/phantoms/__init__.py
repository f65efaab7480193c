"""Phantom cohorts: seeded, synthetic but anatomically realistic brain-tumour cohorts.

Anatomy comes from the MNI ICBM152 2009a template bundled with nilearn, deformed per patient;
clinical and molecular variables are bootstrapped from the real UCSF-PDGM table (gliomas) or drawn
from documented models (lymphoma, germinoma, metastasis-like "other"); the imaging phenotype
depends on them with noise; scanner effects and optional raw acquisition geometry are added. A
``ground_truth.json`` records every latent factor and a cross-validated oracle per task.

Modules: :mod:`.config` (``PhantomConfig``), :mod:`.template`, :mod:`.sites`, :mod:`.clinical`,
:mod:`.phenotype`, :mod:`.fields`, :mod:`.anatomy`, :mod:`.tumour`, :mod:`.contrasts`,
:mod:`.scanner`, :mod:`.patient` (``generate_patient``), :mod:`.layout`, :mod:`.truth`,
:mod:`.cohort` (``generate_cohort``).
"""

from vbiopsy.data.phantoms.cohort import PhantomCohort, generate_cohort
from vbiopsy.data.phantoms.config import PhantomConfig
from vbiopsy.data.phantoms.patient import PhantomPatient, generate_patient

__all__ = ["PhantomCohort", "PhantomConfig", "PhantomPatient", "generate_cohort", "generate_patient"]
