"""Explainability: Integrated Gradients, Grad-CAM, exact Shapley values, saliency maps in native space.

- :mod:`.attribution`: forward functions of a class probability / score, Integrated Gradients
  (captum, bounded memory, seeded SmoothGrad), the reference's IG channel shares;
- :mod:`.shapley`: exact Shapley values of a few players (image channels, clinical variables);
- :mod:`.gradcam`: 3-D Grad-CAM on a convolutional layer;
- :mod:`.marker_gradcam`: Grad-CAM of MGMT-Net's marker logits (positive class) on its bottleneck;
- :mod:`.saliency`: ``Σ|IG|`` and the ASLNet display rule, mass inside a region, the ROI cube →
  source grid → native scan, NIfTI output.
"""

from vbiopsy.explain.attribution import class_outputs
from vbiopsy.explain.attribution import class_probability
from vbiopsy.explain.attribution import eval_mode
from vbiopsy.explain.attribution import ig_channel_shares
from vbiopsy.explain.attribution import integrated_gradients
from vbiopsy.explain.gradcam import grad_cam
from vbiopsy.explain.marker_gradcam import marker_grad_cam
from vbiopsy.explain.marker_gradcam import marker_layer
from vbiopsy.explain.saliency import abs_saliency
from vbiopsy.explain.saliency import mass_inside
from vbiopsy.explain.saliency import postprocess_saliency
from vbiopsy.explain.saliency import saliency_foreground
from vbiopsy.explain.saliency import saliency_to_native
from vbiopsy.explain.saliency import save_saliency
from vbiopsy.explain.shapley import ShapleyResult
from vbiopsy.explain.shapley import channel_shapley
from vbiopsy.explain.shapley import coalition_matrix
from vbiopsy.explain.shapley import exact_shapley
from vbiopsy.explain.shapley import mean_shares
from vbiopsy.explain.shapley import shapley_from_values

__all__ = [
    "ShapleyResult",
    "abs_saliency",
    "channel_shapley",
    "class_outputs",
    "class_probability",
    "coalition_matrix",
    "eval_mode",
    "exact_shapley",
    "grad_cam",
    "ig_channel_shares",
    "integrated_gradients",
    "marker_grad_cam",
    "marker_layer",
    "mass_inside",
    "mean_shares",
    "postprocess_saliency",
    "saliency_foreground",
    "saliency_to_native",
    "save_saliency",
    "shapley_from_values",
]
