"""Presets of the in-loop schedule methods: PLATON (M34), Campfire (M2) and Early-Bird tickets (M27).

Each is a ``finetune`` pass with ``method`` set (``passes/_platon.py``, ``_campfire.py``,
``_early_bird.py``); Early-Bird then cuts the ticket with the ``channels`` pass and retrains it.
"""

from __future__ import annotations

from onnxprune.presets._preset import PRESETS, Preset

__all__ = ["CAMPFIRE", "EARLY_BIRD", "PLATON"]

PLATON = PRESETS.register(
    Preset(
        name="platon",
        method="M34",
        paper="Zhang et al., PLATON: Pruning Large Transformer Models with Upper Confidence Bound of Weight "
        "Importance, ICML 2022",
        description="unstructured pruning during fine-tuning by smoothed |θ·∇L| × its uncertainty, cubic schedule",
        passes=(
            {
                "name": "finetune",
                "config": {
                    "steps": 400,
                    "method": "platon",
                    "method_options": {"sparsity": 0.5, "beta1": 0.85, "beta2": 0.95, "every": 10},
                },
            },
        ),
        needs=("calibration", "torch"),
        notes="a brief distillation fine-tune stands in for the paper's task fine-tuning (add labels for "
        "cross-entropy); warm-ups are fractions of the run (10% before pruning, the last 30% at the final "
        "mask) and the mask is fixed once the schedule ends",
    )
)

CAMPFIRE = PRESETS.register(
    Preset(
        name="campfire",
        method="M2",
        paper="Hubens et al., Campfire: Compressible, Regularization-Free, Structured Sparse Training for "
        "Hardware Accelerators, 2021",
        description="whole k×k kernels pruned by L1 norm on a cubic schedule during fine-tuning, then the mask frozen",
        passes=(
            {
                "name": "finetune",
                "config": {
                    "steps": 400,
                    "method": "campfire",
                    "method_options": {"sparsity": 0.7, "block": "kernel", "norm": "l1", "end": 0.5},
                },
            },
        ),
        needs=("calibration", "torch"),
        notes="the paper trains from scratch for 90 epochs (pruning over ~30); here a brief fine-tune of a "
        "trained model; Gemm/MatMul weights are pruned weight by weight (1×1 kernels) unless "
        "method_options.linear says rows or keep",
    )
)

EARLY_BIRD = PRESETS.register(
    Preset(
        name="early-bird",
        method="M27",
        paper="You et al., Drawing Early-Bird Tickets: Towards More Efficient Training of Deep Networks, ICLR 2020",
        description="train until the channel mask at the ratio stabilizes (Early-Bird ticket), cut it, retrain",
        passes=(
            {
                "name": "finetune",
                "config": {
                    "steps": 400,
                    "method": "early_bird",
                    "method_options": {"ratio": 0.5, "importance": "l1", "every": 10, "window": 5, "eps": 0.1},
                },
            },
            {"name": "channels", "config": {"ratio": 0.5, "importance": "l1"}},
            {"name": "finetune", "config": {"steps": 200}},
        ),
        needs=("calibration", "torch"),
        notes="the mask uses the L1 norm of each output channel (|γ| with importance bn on models that keep "
        "their BatchNormalization); the channels pass's l1 also counts the consumers' columns, so the cut "
        "ticket can differ from the detected mask in a few channels",
    )
)
