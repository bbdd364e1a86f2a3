"""Weights as steps of the layer-sequential calibration engine."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import onnx_ir as ir

from onnxprune.analysis.weights import Weight
from onnxprune.calibration.collect import StatRequest
from onnxprune.calibration.sequential import Step, each_step
from onnxprune.calibration.stats import ChannelStats
from onnxprune.context import PassContext

__all__ = ["WeightFn", "each_weight", "weight_step"]

#: Changes one weight, given the statistics of its requests, which it owns and may free or overwrite
#: (``None`` when nothing was collected).
WeightFn = Callable[[Weight, Mapping[str, ChannelStats] | None], None]


def weight_step(weight: Weight, requests: Sequence[StatRequest]) -> Step:
    """The sequential-calibration step that changes ``weight`` and needs ``requests``."""
    features = weight.size // weight.shape[weight.out_axis]
    return Step(weight.name, tuple(use.node for use in weight.uses), tuple(requests), (features,) * len(requests))


def each_weight(
    context: PassContext,
    model: ir.Model,
    weights: Sequence[Weight],
    requests: Callable[[Weight], Sequence[StatRequest]],
    change: WeightFn,
    *,
    needed_by: str,
    sequential: bool = True,
    changes_model: bool = True,
) -> int:
    """Call ``change`` on every weight in topological blocks (see :meth:`PassContext.run_blocks`).

    ``sequential`` is the pass's preference; ``changes_model=False`` says ``change`` only reads.
    Without any request nothing is collected and ``change`` gets ``None``. Returns the number of blocks.
    """
    steps = [weight_step(weight, requests(weight)) for weight in weights]
    by_name = {weight.name: weight for weight in weights}
    if not any(step.requests for step in steps):
        for weight in weights:
            change(weight, None)
        return 0

    def process(block: Sequence[Step], stats: dict[str, ChannelStats]) -> None:
        for step, own in each_step(block, stats):
            change(by_name[step.key], own)

    return context.run_blocks(
        model, steps, process, needed_by=needed_by, sequential=sequential, changes_model=changes_model
    )
