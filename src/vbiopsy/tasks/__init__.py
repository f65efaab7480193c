"""Tasks: label definitions (:mod:`.labels`), losses (:mod:`.losses`) and the LightningModules that
glue a model to them. Only the light label API is re-exported; import the rest from its module."""

from vbiopsy.tasks.labels import (
    GRADE_CLASSES, SURVIVAL_CLASSES, SURVIVAL_DEFINITIONS, TASKS, TaskLabels, cox_labels, grade_labels,
    parsed_column, subject_ids_of, survival_labels, task_labels,
)

__all__ = [
    "GRADE_CLASSES", "SURVIVAL_CLASSES", "SURVIVAL_DEFINITIONS", "TASKS", "TaskLabels", "cox_labels",
    "grade_labels", "parsed_column", "subject_ids_of", "survival_labels", "task_labels",
]
