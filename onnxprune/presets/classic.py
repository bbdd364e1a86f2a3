"""Presets of the methods the existing passes already implement (METHODS.md §3.7), plus common one-shot ones.

Iterative methods (IMP, rewinding, Drop Pruning, SILO, the cubic schedule) run inside ``finetune``:
a pretrained ONNX model is pruned while it is fine-tuned by distillation from the original (labels,
when given, add cross-entropy). Structured methods remove channels with ``channels`` and recover with
``finetune``. Budgets are the papers' (override them with ``--sparsity``, ``--channels`` or ``--set``).
"""

from __future__ import annotations

from typing import Any

from onnxprune.presets._preset import PRESETS, Preset

__all__ = ["CLASSIC_PRESETS"]

#: SGD as in the papers' retraining (momentum 0.9); the learning-rate probe tries 0.1 down to 1e-4.
_SGD: dict[str, Any] = {"optimizer": "sgd", "momentum": 0.9, "lr_max": 0.1}


def _finetune(**config: Any) -> dict[str, Any]:
    return {"name": "finetune", "config": config}


def _channels(**config: Any) -> dict[str, Any]:
    return {"name": "channels", "config": config}


_IN_FINETUNE = (
    "Runs during fine-tuning of the pretrained model (distillation from the original; labels add cross-entropy), "
    "not from a random initialization; the output layer is pruned too."
)

CLASSIC_PRESETS: tuple[Preset, ...] = (
    Preset(
        name="imp-slr",
        method="M21",
        paper="Zimmer, Spiegel, Pokutta: How I Learned to Stop Worrying and Love Retraining (ICLR 2023)",
        description="Iterative global magnitude pruning to 80% in 4 prune-retrain phases, SLR schedule"
        " (warm-up + cosine restarted every phase)",
        passes=(
            _finetune(
                final_sparsity=0.8, cycles=4, prune_scope="global", schedule="slr", weight_decay=1e-4, steps=400, **_SGD
            ),
        ),
        notes=_IN_FINETUNE,
    ),
    Preset(
        name="lth-rewind",
        method="M28",
        paper="Frankle, Carbin: The Lottery Ticket Hypothesis (ICLR 2019)",
        description="Iterative global magnitude pruning, 20% of the remaining weights per level (7 levels, 79%),"
        " survivors rewound to the starting weights after each prune",
        passes=(
            _finetune(
                final_sparsity=0.79, cycles=7, rewind=True, prune_scope="global", schedule="slr", steps=700, **_SGD
            ),
        ),
        notes="Rewinds to the imported (trained) weights, not to an initialization or an early-training checkpoint. "
        + _IN_FINETUNE,
    ),
    Preset(
        name="ap",
        method="M19",
        paper="Liu, Xu, Fu, Zhang, Wang, Yan, Xu: AP: Selective Activation for De-sparsifying Pruned Neural"
        " Networks (arXiv 2212.06145)",
        description="Lottery-ticket IMP with rewinding (7 levels to 79%) where AP chooses a tenth of each level's"
        " weights: the surviving negative weights that moved least, so fewer ReLU units die",
        passes=(
            _finetune(
                final_sparsity=0.79,
                cycles=7,
                rewind=True,
                prune_scope="global",
                schedule="slr",
                steps=700,
                method="ap",
                method_options={"fraction": 0.1},
                **_SGD,
            ),
        ),
        notes="The paper's 2% of each 20% level; the first level is plain magnitude (AP needs a trained cycle). "
        + _IN_FINETUNE,
    ),
    Preset(
        name="drop-pruning",
        method="M1",
        paper="Jia et al.: DropPruning for Model Compression (arXiv 1812.02035)",
        description="Iterative global magnitude pruning to 93% (14.3x) in 8 steps, each stochastic: drop-out 0.8"
        " of the smallest candidates, drop-in 0.02 of the pruned weights",
        passes=(
            _finetune(
                final_sparsity=0.93,
                cycles=8,
                drop_out=0.8,
                drop_in=0.02,
                prune_scope="global",
                schedule="slr",
                steps=800,
                **_SGD,
            ),  # fmt: skip
        ),
        notes="Candidates are twice the step's count of the smallest surviving weights; restored weights restart"
        " at 0. " + _IN_FINETUNE,
    ),
    Preset(
        name="silo",
        method="M20",
        paper="Liu, Ghosh, Tan, Motani: Optimizing Learning Rate Schedules for Iterative Pruning (SILO, TMLR 2023)",
        description="Iterative global magnitude pruning, 20% per cycle (7 cycles, 79%), each cycle's peak learning"
        " rate raised along an S-curve of the pruned fraction",
        passes=(
            _finetune(
                final_sparsity=0.79,
                cycles=7,
                prune_scope="global",
                schedule="silo",
                silo_alpha=0.04,
                silo_beta=5.0,
                weight_decay=5e-4,
                steps=700,
                **_SGD,
            ),  # fmt: skip
        ),
        notes="The base learning rate (SILO's offset) comes from the probe unless finetune.lr is set; magnitude,"
        " not the released code's movement score. " + _IN_FINETUNE,
    ),
    Preset(
        name="gradual-magnitude",
        method="",
        paper="Zhu, Gupta: To prune, or not to prune (ICLR 2018 workshop)",
        description="Gradual magnitude pruning to 80%, every layer at the same sparsity, on the cubic schedule"
        " (every 10 steps until 75% of the run)",
        passes=(_finetune(final_sparsity=0.8, prune_every=10, prune_end=0.75, prune_scope="layer", steps=400),),
        notes="The cubic schedule Campfire (M2), DRIVE (M8) and PLATON (M34) build on. " + _IN_FINETUNE,
    ),
    Preset(
        name="dropnet",
        method="M22",
        paper="Tan, Motani: DropNet: Reducing Neural Network Complexity via Iterative Pruning (ICML 2020)",
        description="Three cycles: remove the 20% of each layer's remaining channels with the lowest mean"
        " |activation|, then retrain",
        passes=tuple(
            entry
            for _ in range(3)
            for entry in (
                _channels(ratio=0.2, importance="act_mean", scope="layer", reconstruct=False),
                _finetune(steps=100),
            )
        ),
        needs=("calibration",),
        notes="The paper's per-layer variant (min_layer); its global one (min: --set channels.scope=global"
        " --set channels.normalize=none) left the digits CNN at 8% top-1 after three cycles of 30 steps, against 89%"
        " per layer. Weights are kept and fine-tuned between cycles (the paper re-initializes and retrains to early"
        " stopping); overrides of channels.* or finetune.* apply to all three cycles.",
    ),
    Preset(
        name="apoz",
        method="M22",
        paper="Hu, Peng, Tai, Tang: Network Trimming (APoZ, arXiv 1607.03250); DropNet's baseline",
        description="Remove 30% of every layer's channels, those with the highest average percentage of zero"
        " activations (APoZ), then fine-tune",
        passes=(_channels(ratio=0.3, importance="apoz", scope="layer", reconstruct=False), _finetune(steps=200)),
        needs=("calibration",),
        notes="One trimming step (the paper iterates trimming and retraining).",
    ),
    Preset(
        name="activation-density",
        method="M7",
        paper="Foldy-Porto, Venkatesha, Panda: Activation Density driven Energy-Efficient Pruning in Training"
        " (arXiv 2002.02949)",
        description="Remove the 30% of channels with the lowest activation density (fraction of nonzero outputs),"
        " one global ranking, then fine-tune",
        passes=(
            _channels(ratio=0.3, importance="density", scope="global", normalize="none", reconstruct=False),
            _finetune(steps=200),
        ),
        needs=("calibration",),
        notes="Layers shrink where their channels are sparsest under one global threshold; the paper sets each"
        " layer's width to its density x width, during training from scratch.",
    ),
    Preset(
        name="lrpet",
        method="M36",
        paper="Guo, Lin, Xing, Liu, Xu: Compact Model Training by Low-Rank Projection with Energy Transfer"
        " (TNNLS 2024)",
        description="Train in full rank, projecting every hidden weight onto half its rank (energy kept) every 50"
        " steps, then factorize the low-rank weights into two layers each",
        passes=(
            _finetune(steps=500, method="lrpet", method_options={"rank_ratio": 0.5, "every": 50}),
            {"name": "lowrank", "config": {"energy": 0.999999, "round_to": 1, "bn_rectify": False}},
        ),
        notes="The weights leave fine-tuning at exactly rank (1 - rank_ratio) x n (to float rounding), so lowrank"
        " at energy 1 - 1e-6 recovers those ranks; a weight whose factors would not be smaller (a square layer at half"
        " its rank) is neither projected nor factorized (method option only_if_smaller). The"
        " paper trains from scratch (400 epochs); here a pretrained model is fine-tuned. BatchNorm folded into a"
        " Conv by the exporter is rectified implicitly; the classifier keeps its full rank (method option keep_last).",
    ),
    Preset(
        name="global-magnitude",
        method="M35",
        paper="Blalock, Gonzalez Ortiz, Frankle, Guttag: What is the State of Neural Network Pruning?"
        " (ShrinkBench, MLSys 2020)",
        description="ShrinkBench's Global Magnitude baseline: zero the 75% smallest weights (4x compression) under"
        " one threshold, then fine-tune",
        passes=(
            {"name": "unstructured", "config": {"sparsity": 0.75, "importance": "magnitude", "scope": "global"}},
            _finetune(steps=200),
        ),
        notes="The classifier is pruned too unless excluded (--exclude, or --set unstructured.keep_last=true).",
    ),
    Preset(
        name="wanda",
        method="",
        paper="Sun, Liu, Bair, Kolter: A Simple and Effective Pruning Approach for Large Language Models"
        " (Wanda, ICLR 2024)",
        description="One-shot: zero 50% of each output row's weights by |W| x input norm, no retraining",
        passes=({"name": "unstructured", "config": {"sparsity": 0.5, "importance": "wanda"}},),
        needs=("calibration",),
    ),
    Preset(
        name="sparsegpt",
        method="",
        paper="Frantar, Alistarh: SparseGPT: Massive Language Models Can Be Accurately Pruned in One-Shot (ICML 2023)",
        description="One-shot: 50% unstructured sparsity, the remaining weights updated to reconstruct each layer's"
        " outputs",
        passes=({"name": "sparsegpt", "config": {"sparsity": 0.5}},),
        needs=("calibration",),
    ),
    Preset(
        name="2:4",
        method="",
        paper="Mishra et al.: Accelerating Sparse Deep Neural Networks (arXiv 2104.08378); fitted by SparseGPT",
        description="One-shot 2:4 semi-structured sparsity (sparse tensor cores), fitted by SparseGPT",
        passes=({"name": "sparsegpt", "config": {"n": 2, "m": 4, "sparsity": 0.5}},),
        needs=("calibration",),
    ),
)

for _preset in CLASSIC_PRESETS:
    PRESETS.register(_preset)
