"""Examples that end each verb's ``--help``: real command lines, run by ``tests/test_cli_help.py``.

The test runs every line in one folder holding ``model.onnx`` (the bundled digits CNN), ``calib.npz``
(its calibration samples), ``test.npz`` (held-out samples with labels), ``resnet.onnx`` with
``resnet_calib.npz`` (a small residual CNN), in the order given here: ``prune``'s lines write
``pruned.onnx`` for the later verbs. ``> FILE`` sends a line's output to a file. A verb added to the
group gets its examples here too (the test refuses a verb without any).
"""

from __future__ import annotations

__all__ = ["EXAMPLES", "epilog"]

EXAMPLES: dict[str, tuple[str, ...]] = {
    "inspect": (
        "onnxprune inspect model.onnx",
        "onnxprune inspect model.onnx --groups",
        "onnxprune inspect model.onnx --ranks --json",
    ),
    "prune": (
        "onnxprune prune model.onnx -o pruned.onnx --sparsity 0.5 --calib calib.npz --data test.npz",
        "onnxprune prune model.onnx -o sparse24.onnx --preset 2:4 --calib calib.npz",
        "onnxprune prune model.onnx -o slim.onnx --channels 0.3 --scope global --normalize l2 --quiet",
    ),
    "lowrank": (
        "onnxprune lowrank model.onnx -o lowrank.onnx --energy 0.95",
        "onnxprune lowrank model.onnx -o lowrank.onnx --target-params 0.7 --activation-aware --calib calib.npz",
    ),
    "depth": (
        "onnxprune depth resnet.onnx -o shallow.onnx --blocks 1 --criterion angular",
        "onnxprune depth resnet.onnx -o shallow.onnx --max-error 0.05 --calib resnet_calib.npz",
    ),
    "finetune": (
        "onnxprune finetune pruned.onnx -o tuned.onnx --teacher model.onnx --calib calib.npz --steps 20 --lr 1e-4",
        "onnxprune finetune pruned.onnx -o tuned.onnx --teacher model.onnx --calib calib.npz --steps 20"
        " --final-sparsity 0.7",
        "onnxprune finetune pruned.onnx -o tickets.onnx --teacher model.onnx --calib calib.npz --steps 20 --lr 1e-3"
        " --method free-tickets --method-option ensemble=mean_softmax",
    ),
    "quantize": (
        "onnxprune quantize model.onnx -o int8.onnx --calib calib.npz --data test.npz",
        "onnxprune quantize pruned.onnx -o pruned_int8.onnx --calib calib.npz --reference model.onnx --per-tensor",
    ),
    "validate": (
        "onnxprune validate model.onnx pruned.onnx --data test.npz",
        "onnxprune validate model.onnx sparse24.onnx --data test.npz --fail-below agree=0.9 --report check.json",
        "onnxprune validate model.onnx pruned.onnx --data test.npz --ep cpu --threads 1",
    ),
    "compare": (
        "onnxprune compare pruned.onnx sparse24.onnx",
        "onnxprune compare pruned.onnx sparse24.onnx --structure --json",
    ),
    "analyze": (
        "onnxprune analyze model.onnx --calib calib.npz --data test.npz --grid 0.25,0.5 --no-cache",
        "onnxprune analyze model.onnx --calib calib.npz --kinds channels -o digits --no-cache",
    ),
    "run": (
        "onnxprune prune model.onnx -o pruned.onnx --sparsity 0.5 --calib calib.npz --dump-recipe > recipe.yaml",
        "onnxprune run recipe.yaml",
        "onnxprune run recipe.yaml -o other.onnx --report report.json",
    ),
    "passes": (
        "onnxprune passes",
        "onnxprune passes channels unstructured",
    ),
    "presets": (
        "onnxprune presets",
        "onnxprune presets lth-rewind --json",
        "onnxprune prune model.onnx -o imp.onnx --preset imp-slr --sparsity 0.6 --calib calib.npz"
        " --set finetune.steps=8 --set finetune.lr=1e-3 --quiet",
    ),
}


def epilog(verb: str) -> str | None:
    """The ``--help`` epilog of ``verb`` (``None``: it has no examples yet)."""
    lines = EXAMPLES.get(verb)
    if not lines:
        return None
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)
