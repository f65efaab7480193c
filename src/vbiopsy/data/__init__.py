"""Cohort data layer: NIfTI I/O, label conventions, manifests, layout readers, splits, phantoms."""
