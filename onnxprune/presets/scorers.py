"""Presets of the seed scorers: i-SpaSP (M24), NNrelief (M29), SNIP and GraSP (M18), DRIVE (M8)."""

from __future__ import annotations

from onnxprune.presets._preset import PRESETS, Preset

PRESETS.register(
    Preset(
        name="ispasp",
        method="M24",
        paper="Wolfe, Kyrillidis, i-SpaSP: Structured Neural Pruning via Sparse Signal Recovery, L4DC 2022",
        description="remove 60% of every channel group, kept units chosen by i-SpaSP's support recovery (T=20)",
        passes=({"name": "channels", "config": {"importance": "ispasp", "ratio": 0.6, "reconstruct": False}},),
        needs=("calibration",),
        notes="one shot on the calibration data, every group at the same ratio (the paper keeps 40% in ResNet-34's"
        " layers 1-3); the paper then fine-tunes (add a finetune pass). Groups whose consumers are not"
        " Conv/Gemm/MatMul are scored by L2 (reported per group).",
    )
)
PRESETS.register(
    Preset(
        name="nnrelief",
        method="M29",
        paper="Dekhovich, Tax, Sluiter, Bessa, Neural network relief: a pruning algorithm based on neural activity,"
        " arXiv 2109.10795",
        description="per neuron, keep the connections carrying 95% (Conv kernels: 90%) of the mean |x·w| flowing in",
        passes=({"name": "cumulative", "config": {"importance": "relief", "alpha_conv": 0.9, "alpha_fc": 0.95}},),
        needs=("calibration",),
        notes="one pruning iteration; the paper repeats prune + retrain (20 iterations on LeNets). The sparsity"
        " follows from alpha and is reported.",
    )
)
PRESETS.register(
    Preset(
        name="snip",
        method="M18",
        paper="Lee, Ajanthan, Torr, SNIP: Single-shot Network Pruning based on Connection Sensitivity, ICLR 2019",
        description="zero the 90% of weights with the lowest connection sensitivity |w·g| (one global threshold)",
        passes=({"name": "gradient", "config": {"importance": "snip", "sparsity": 0.9, "scope": "global"}},),
        needs=("calibration", "labels", "torch"),
        notes="the papers prune at initialization and then train; on a trained model it is a one-shot criterion.",
    )
)
PRESETS.register(
    Preset(
        name="grasp",
        method="M18",
        paper="Wang, Zhang, Grosse, Picking Winning Tickets Before Training by Preserving Gradient Flow, ICLR 2020",
        description="zero the 90% of weights whose removal least reduces the gradient flow (-w·Hg, T=200, global)",
        passes=({"name": "gradient", "config": {"importance": "grasp", "sparsity": 0.9, "scope": "global"}},),
        needs=("calibration", "labels", "torch"),
        notes="Hg by double backprop on the calibration samples (the official code takes 10 per class);"
        " meant for a model at initialization, then trained.",
    )
)
PRESETS.register(
    Preset(
        name="drive",
        method="M8",
        paper="DRIVE: Dual Gradient-Based Rapid Iterative Pruning, arXiv 2404.03687, 2024",
        description="prune to 90% in 20 rounds of re-scoring |w|·(|g| + |Hg|), density d^(k/K), no training between",
        passes=(
            {"name": "gradient", "config": {"importance": "drive", "sparsity": 0.9, "scope": "global", "rounds": 20}},
        ),
        needs=("calibration", "labels", "torch"),
        notes="the score is reconstructed from the abstract (METHODS.md marks it unverified); the paper trains"
        " dense for a few epochs first and iterates about 100 times.",
    )
)
