"""Presets of the ticket-ensemble family: Sup-tickets (M31), FreeTickets (M12), Rethinking's scratch baselines (M3)."""

from onnxprune.presets._preset import PRESETS, Preset

_SPARSE = {"name": "unstructured", "config": {"sparsity": 0.9, "scope": "global", "importance": "magnitude"}}
_CHANNELS = {"name": "channels", "config": {"ratio": 0.5, "importance": "l1", "reconstruct": False}}

PRESETS.register(
    Preset(
        name="sup-tickets",
        method="M31",
        paper="Yin, Menkovski, Fang, Huang, Pei, Pechenizkiy, Mocanu, Liu: Superposing Many Tickets into One, UAI 2022",
        description="90% global magnitude sparsity, then fine-tuning whose last 30% is 3 cyclic-LR tickets with mask "
        "re-exploration, averaged (CAA) and re-pruned to 90%",
        passes=(
            _SPARSE,
            {"name": "finetune", "config": {"steps": 600, "method": "sup-tickets", "method_options": {"cycles": 3}}},
        ),
        needs=("calibration", "torch"),
        notes="The paper superposes tickets at the end of a dynamic-sparse-training run from scratch; here the cycles "
        "end a brief fine-tuning of the imported model (distillation, plus cross-entropy when labels are given).",
    )
)
PRESETS.register(
    Preset(
        name="free-tickets",
        method="M12",
        paper="Liu, Chen, Atashgahi, Yin, Kou, Shen, Pechenizkiy, Wang, Mocanu: Deep Ensembling with No Overhead "
        "for either Training or Testing: The All-Round Blessings of Dynamic Sparsity (FreeTickets), ICLR 2022",
        description="80% sparsity, then EDST fine-tuning: exploration, then 3 refinement phases each opened by an 80% "
        "prune-and-regrow; writes OUT_member{0,1,2}.onnx and OUT_ensemble.onnx (mean of the members' softmax)",
        passes=(
            {**_SPARSE, "config": {**_SPARSE["config"], "sparsity": 0.8}},
            {
                "name": "finetune",
                "config": {
                    "steps": 600,
                    "method": "free-tickets",
                    "method_options": {"members": 3, "ensemble": "mean_softmax"},
                },
            },
        ),
        needs=("calibration", "torch"),
        notes="EDST's exploration and refinements run inside a brief fine-tuning of the imported model, not a "
        "450-epoch training from scratch; OUT is the last member (the ensemble outputs probabilities).",
    )
)
for _budget, _what in (("E", "the same steps as fine-tuning"), ("B", "the steps x FLOPs(full)/FLOPs(pruned)")):
    PRESETS.register(
        Preset(
            name=f"scratch-{_budget.lower()}",
            method="M3",
            paper="Liu, Sun, Zhou, Huang, Darrell: Rethinking the Value of Network Pruning, ICLR 2019",
            description=f"50% of the channels removed (L1 filters), then the pruned architecture re-initialised "
            f"and trained from scratch on the labels with {_what} (Scratch-{_budget})",
            passes=(
                _CHANNELS,
                {"name": "scratch", "config": {"budget": _budget, "steps": 600, "distill_weight": 0.0}},
            ),
            needs=("calibration", "labels", "torch"),
            notes="A baseline to compare with fine-tuning the inherited weights at the same budget; the paper trains "
            "160 CIFAR epochs with SGD, here a brief Adam run on the calibration samples.",
        )
    )
