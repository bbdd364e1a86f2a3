"""Dynamic sparse training presets: RigL (M23), SET, GaP (M26), SCL (M32), each a ``finetune --method`` recipe.

RigL and SET prune inside the method (ERK densities of the target sparsity, by magnitude, before the
first step); GaP starts from a uniform magnitude prune; SCL learns its masks from the dense model.
Labels, when given, add cross-entropy to the distillation (as in the papers' supervised training).
"""

from __future__ import annotations

from onnxprune.presets._preset import PRESETS, Preset

__all__: list[str] = []

_FT_NOTE = "the paper trains from scratch; here the method runs during a brief fine-tuning of a trained model"
_RIGL = "Evci, Gale, Menick, Castro, Elsen: Rigging the Lottery: Making All Tickets Winners (ICML 2020)"


def _finetune(method: str, options: dict, steps: int = 1000) -> dict:
    return {"name": "finetune", "config": {"steps": steps, "method": method, "method_options": options}}


PRESETS.register(
    Preset(
        name="rigl",
        method="M23",
        paper=_RIGL,
        description="90% sparse (ERK), masks updated every 100 steps: drop the smallest, regrow by |gradient|",
        passes=(_finetune("rigl", {"sparsity": 0.9, "update_every": 100, "drop_fraction": 0.3, "grow": "gradient"}),),
        needs=("calibration", "torch"),
        notes=f"{_FT_NOTE}; the ERK masks start from magnitude (the paper: random)",
    )
)
PRESETS.register(
    Preset(
        name="set",
        method="M23",
        paper="Mocanu et al.: Scalable training of artificial neural networks with adaptive sparse connectivity "
        "(Nature Communications 2018), as RigL's random-growth baseline",
        description="RigL with random regrowth (SET): 90% sparse (ERK), drop the smallest, regrow at random",
        passes=(_finetune("rigl", {"sparsity": 0.9, "update_every": 100, "drop_fraction": 0.3, "grow": "random"}),),
        needs=("calibration", "torch"),
        notes=f"{_FT_NOTE}; cosine-decayed drop fraction as in RigL's SET runs (the SET paper keeps it constant)",
    )
)
PRESETS.register(
    Preset(
        name="gap",
        method="M26",
        paper="Ma et al.: Effective Model Sparsification by Scheduled Grow-and-Prune Methods (ICLR 2022)",
        description="90% uniform magnitude prune, then grow each of 4 parts to dense in turn, train, prune it back",
        passes=(
            {"name": "unstructured", "config": {"sparsity": 0.9, "importance": "magnitude", "scope": "layer"}},
            _finetune("gap", {"partitions": 4, "partition": "cyclic"}),
        ),
        needs=("calibration", "torch"),
        notes=f"{_FT_NOTE}; sequential GaP (S-GaP), parts are whole tensors",
    )
)
PRESETS.register(
    Preset(
        name="scl",
        method="M32",
        paper="Tang et al.: Automatic Sparse Connectivity Learning for Neural Networks (IEEE TNNLS 2022)",
        description="learn binary masks with the weights (identity STE), connection penalty annealed to 10% density",
        passes=(_finetune("scl", {"target_density": 0.1}),),
        needs=("calibration", "torch"),
        notes=f"{_FT_NOTE}; λ set each step to meet a cubic density schedule, masks fixed at the target at 75%",
    )
)
