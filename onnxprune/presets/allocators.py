"""Allocator presets: PCA width (M4), SiPP (M6), K-FAC neurons (M25), PQ index (M33).

Each is one pruning pass with the seed allocator or importance (``passes/_pca_width.py``,
``_sipp.py``, ``_kfac.py``, ``_pqi.py``), followed where the paper retrains by a short fine-tune.
"""

from __future__ import annotations

from onnxprune.presets._preset import PRESETS, Preset

__all__: list[str] = []

_RETRAIN = {"name": "finetune", "config": {"steps": 300}}

PRESETS.register(
    Preset(
        name="pca-width",
        method="M4",
        paper="Riera, Arnau, González: (Pen-) Ultimate DNN Pruning (arXiv 1906.02535, 2019)",
        description="each layer keeps the principal components explaining 99% of its activations' variance,"
        " the channels by L2 magnitude, then one retraining",
        passes=(
            {
                "name": "channels",
                "config": {"ratio": 0.0, "allocation": "pca", "allocation_options": {"variance": 0.99}},
            },
            _RETRAIN,
        ),
        needs=("calibration", "torch"),
        notes="budget-free as in the paper (the width follows from the variance; allocation option fit: true"
        " meets a ratio or FLOPs target instead); the connection-pruning step is not included; the retraining"
        " is a 300-step distillation fine-tune",
    )
)
_SIPP_PAPER = (
    "Baykal, Liebenwein, Gilitschenski, Feldman, Rus: SiPPing Neural Networks: Sensitivity-informed"
    " Provable Pruning of Neural Networks (SIAM J. Math. Data Sci. 2022, arXiv 1910.05422)"
)


def _sipp(mode: str) -> tuple[dict, ...]:
    options = {"mode": mode}
    return ({"name": "unstructured", "config": {"sparsity": 0.5, "allocation": "sipp", "allocation_options": options}},)


PRESETS.register(
    Preset(
        name="sipp",
        method="M6",
        paper=_SIPP_PAPER,
        description="50% unstructured: empirical sensitivities on 128 calibration points, one global top-k"
        " gives each neuron its count (deterministic SiPP)",
        passes=_sipp("deterministic"),
        needs=("calibration",),
        notes="the reference's SiPPNet; a Conv's sensitivity is the mean over 64 evenly spaced patches; the"
        " reference's gradient-based propagation of pruned weights is not done",
    )
)
PRESETS.register(
    Preset(
        name="sipp-random",
        method="M6",
        paper=_SIPP_PAPER,
        description="50% unstructured: per-neuron sample sizes from the paper's error-bound program, weights"
        " sampled by sensitivity and reweighted (unbiased); seeded",
        passes=_sipp("random"),
        needs=("calibration",),
        notes="the reference's SiPPRandNet (C=3, delta=1e-16; allocation options C, delta, seed); the sparsity is"
        " met to within 0.2% of the kept weights",
    )
)
PRESETS.register(
    Preset(
        name="sipp-hybrid",
        method="M6",
        paper=_SIPP_PAPER,
        description="50% unstructured: the random sizes; each neuron side sampled or kept top-k, whichever has"
        " the smaller theoretical error",
        passes=_sipp("hybrid"),
        needs=("calibration",),
        notes="the reference's SiPPHybridNet; both errors on the max-over-patches sensitivities",
    )
)
PRESETS.register(
    Preset(
        name="kfac-neuron",
        method="M25",
        paper="Ebrahimi, Klabjan: Neuron-based Pruning of Deep Neural Networks with Better Generalization using"
        " Kronecker Factored Curvature Approximation (arXiv 2111.08577, 2021)",
        description="train with the K-FAC spectral-radius penalty (flat minima), remove 30% of neurons/channels by"
        " K-FAC OBD saliency, then fine-tune with the penalty",
        passes=(
            {"name": "finetune", "config": {"steps": 300, "method": "spectral", "method_options": {"mu": 1e-3}}},
            {"name": "channels", "config": {"ratio": 0.3, "importance": "kfac", "allocation": "global"}},
            {"name": "finetune", "config": {"steps": 300, "method": "spectral", "method_options": {"mu": 1e-3}}},
        ),
        needs=("calibration", "torch"),
        notes="penalize, prune once, penalize again (the paper interleaves pruning steps with the penalized"
        " training); without labels the scores' loss is ½‖y‖² of the first output, and the penalty's loss is the"
        " distillation loss, which is about 0 -- and so is the penalty -- until the model moves",
    )
)
PRESETS.register(
    Preset(
        name="pqi",
        method="M33",
        paper="Yang, Wang, Ding, Yang: A Theoretical Understanding of Neural Network Compression from Sparse"
        " Linear Approximation (arXiv 2206.05604); rule from Diao et al.: Pruning Deep Neural Networks from a"
        " Sparsity Perspective (PQ Index, ICLR 2023)",
        description="per neuron, prune the smallest |w| down to the PQ-index bound (p=0.5, q=1, eta=0, gamma=1,"
        " beta=0.9); the sparsity follows from the weights",
        passes=({"name": "unstructured", "config": {"sparsity": 0.0, "allocation": "pqi"}},),
        notes="one round of the paper's iterative prune-retrain; allocation option fit: true scales gamma to"
        " meet a given sparsity",
    )
)
