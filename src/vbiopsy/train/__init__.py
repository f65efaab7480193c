"""Training: cross-validation runner, tabular encoding fitted per fold, post-hoc decision rules
(class scaling, temperature), the clinical-only baseline, and pickle-free checkpoints."""
