"""The fold ensemble of a finished run as one ``nn.Module`` (what predictions and explanations use).

The ensemble averages the fold models' *probabilities* (the reference code's rule) and returns
logits of that average — ``log p̄`` for classes, ``logit(p̄)`` for one binary output, the mean risk
for Cox — so any code that applies softmax/sigmoid to a model's logits gets the ensemble's
probabilities. Explanations therefore describe the model that made the prediction, not fold 1
(the reference code's attribution came from fold 1 while its predictions came from the ensemble).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from vbiopsy.errors import InputError
from vbiopsy.train.checkpoint import load_checkpoint
from vbiopsy.train.config import TrainConfig


class FoldEnsemble(nn.Module):
    """Mean-probability ensemble of ``models`` for ``task`` (see the module docstring)."""

    def __init__(self, models: list[nn.Module], task: str, *, uses_tabular: bool) -> None:
        super().__init__()
        if not models:
            raise InputError("ensemble", "no fold models to combine")
        self.members = nn.ModuleList(models)
        self.task = task
        self.uses_tabular = uses_tabular

    def forward(self, image: Tensor, tabular: Tensor | None = None) -> Tensor:
        outputs = [m(image, tabular) if self.uses_tabular else m(image) for m in self.members]
        if self.task == "grade":
            mean = torch.stack([torch.softmax(o.float(), dim=1) for o in outputs]).mean(0)
            return torch.log(mean.clamp_min(1e-12))
        if self.task == "survival":
            mean = torch.stack([torch.sigmoid(o.float()) for o in outputs]).mean(0).clamp(1e-7, 1 - 1e-7)
            return torch.log(mean) - torch.log1p(-mean)
        return torch.stack([o.float() for o in outputs]).mean(0)


def load_ensemble(config: TrainConfig, run_dir: Path) -> FoldEnsemble:
    """Every ``fold_k/model.safetensors`` of ``run_dir``, checked against ``config``, in eval mode."""
    from vbiopsy.train.cross_validation import build_model

    paths = sorted(run_dir.glob("fold_*/model.safetensors"), key=lambda p: int(p.parent.name.split("_")[1]))
    if not paths:
        raise InputError(run_dir, "no fold models (fold_*/model.safetensors)")
    models = []
    for path in paths:
        state, _ = load_checkpoint(path, expect={"task": config.task, "model": config.model.model_dump(mode="json")})
        model = build_model(config)
        model.load_state_dict(state)
        models.append(model.eval())
    return FoldEnsemble(models, config.task, uses_tabular=config.uses_tabular).eval()
