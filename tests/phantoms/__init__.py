"""Tests of the phantom cohort generator (vbiopsy.data.phantoms)."""
