"""visual-anomaly-heatmap templates: PatchCore (recommended) and PaDiM, written here on
EfficientNet-Lite0 patch features (its ImageNet weights ship with modelmill), fitted on normal
images only; no anomalib.
"""

from modelmill.training.templates.visual_anomaly.params import PaDiMParams, PatchCoreParams
from modelmill.training.templates.visual_anomaly.template import AnomalyTemplate

# Estimate coefficients (A s/image at 224 px, B s): rough CPU figures from the 2-core VM's
# bench/anomaly.py runs (feature extraction dominates; the coreset adds with the bank) until
# `modelmill calibrate` measures them; CUDA ones rough guesses.
PATCHCORE = AnomalyTemplate(
    "PatchCore",
    "patchcore",
    PatchCoreParams,
    "PatchCore on EfficientNet-Lite0 patch features (strides 8 and 16, locally aware): a "
    "memory bank of normal patches thinned by greedy coreset selection, nearest-neighbour "
    "distances (faiss) as anomaly scores and a smoothed heatmap. Trains on normal images only.",
    {"cpu": (0.08, 5.0), "cuda": (0.004, 15.0)},
    aliases=("Anomalib_PatchCore",),
    recommended=True,
)
PADIM = AnomalyTemplate(
    "PaDiM",
    "padim",
    PaDiMParams,
    "PaDiM on EfficientNet-Lite0 features (strides 4, 8 and 16, a random subset of "
    "channels): a Gaussian per image position, Mahalanobis distances as anomaly scores. "
    "Trains on normal images only.",
    {"cpu": (0.06, 5.0), "cuda": (0.003, 15.0)},
    aliases=("Anomalib_PaDiM",),
)

__all__ = ["PADIM", "PATCHCORE", "AnomalyTemplate"]
