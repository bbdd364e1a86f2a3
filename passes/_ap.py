"""AP, Activating-while-Pruning (M19), as ``finetune --method ap`` on an iterative pruning run.

Liu et al., "AP: Selective Activation for De-sparsifying Pruned Neural Networks".

Pruning raises the share of ReLU units that are dead for an input (the dynamic dead-neuron rate); AP
is an add-on to any iterative pruning. At each scheduled pruning step the base method (magnitude,
global or per layer as the run's ``prune_scope``) removes ``1 − fraction`` of the weights that step
prunes, and AP removes the rest: among the surviving **negative** weights, the ones that moved least
since the previous pruning step (``|w − w₀|``, ``w₀`` the weights the cycle started from -- after
rewinding, when the run rewinds). Removing negative weights that training leaves alone raises the
pre-activations they fed, so fewer units die. The paper prunes 20% per cycle of which AP chooses 2%
(``fraction`` 0.1), on IMP with rewinding (``cycles``, ``rewind``); AP needs one trained cycle, so
the first pruning step is the base method's alone.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from onnxprune.errors import RecipeError
from onnxprune.passes._sparse_methods import SPARSE_METHODS, MethodOptions, MethodRun, SparseMethod, StepState

if TYPE_CHECKING:
    import torch

    from onnxprune.passes._train import Masks, TrainSettings
    from onnxprune.torchview import TorchView

__all__ = ["APOptions", "APRun", "least_moved_negative"]


@dataclasses.dataclass(frozen=True)
class APOptions(MethodOptions):
    """AP's options (the paper: 2% of the 20% pruned per cycle, from the first cycle on).

    Attributes:
        fraction: Share of each pruning step's weights chosen by AP instead of the base method.
        from_cycle: The first pruning step (0-based) AP takes part in (at least 1: it needs a
            cycle's movement).
    """

    fraction: float = 0.1
    from_cycle: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.fraction <= 1 or self.from_cycle < 1:
            raise RecipeError(
                f"method options fraction must be in [0, 1] and from_cycle >= 1; got {self.fraction}, {self.from_cycle}"
            )


def least_moved_negative(
    params: dict[str, torch.Tensor], start: dict[str, torch.Tensor], keep: dict[str, torch.Tensor], count: int
) -> dict[str, torch.Tensor]:
    """The ``count`` kept negative weights with the smallest ``|w − w₀|`` over all tensors, as masks by name."""
    import torch

    names = list(params)
    movement = torch.cat([(params[n].detach() - start[n]).abs().reshape(-1) for n in names])
    eligible = torch.cat([(keep[n] & (params[n].detach() < 0)).reshape(-1) for n in names])
    movement = movement.masked_fill(~eligible, float("inf"))
    count = min(count, int(eligible.sum()))
    chosen = torch.zeros_like(eligible)
    chosen[torch.argsort(movement, stable=True)[:count]] = True
    out, offset = {}, 0
    for n in names:
        size = keep[n].numel()
        out[n] = chosen[offset : offset + size].reshape(keep[n].shape)
        offset += size
    return out


class APRun(MethodRun):
    """The weights the current cycle started from and what AP removed at each pruning step."""

    def __init__(self, options: APOptions) -> None:
        self.options = options
        self.start: dict[str, torch.Tensor] | None = None
        self.capture = True
        self.cycle = 0
        self.removed: list[int] = []

    def before_step(self, state: StepState) -> None:
        if self.capture:  # the first step of a cycle: after the pruning (and the rewinding) before it
            self.start = {n: p.detach().clone() for n, p in state.masks.params.items()}
            self.capture = False

    def prune_to(self, masks: Masks, target: float, generator: torch.Generator, settings: TrainSettings) -> None:
        total = sum(k.numel() for k in masks.keep.values())
        pruned = total - sum(int(k.sum()) for k in masks.keep.values())
        count = int(round(target * total)) - pruned
        extra = 0
        if self.start is not None and self.cycle >= self.options.from_cycle and count > 0:
            extra = int(round(self.options.fraction * count))
        base = (pruned + count - extra) / total
        masks.prune_to(base, generator, settings.drop_out, settings.drop_in, settings.prune_scope)
        if extra:
            assert self.start is not None
            chosen = least_moved_negative(masks.params, self.start, masks.keep, extra)
            masks.keep = {n: k & ~chosen[n] for n, k in masks.keep.items()}
            masks.apply()
            extra = sum(int(c.sum()) for c in chosen.values())
        self.removed.append(extra)
        self.cycle += 1
        self.capture = True

    def summary(self) -> dict[str, Any]:
        return {"pruning_steps": self.cycle, "removed_by_ap": self.removed}


@dataclasses.dataclass(frozen=True)
class _AP(SparseMethod):
    def start(self, options: MethodOptions, settings: TrainSettings, masks: Masks, view: TorchView) -> MethodRun:
        assert isinstance(options, APOptions)
        if settings.final_sparsity is None:
            raise RecipeError("method ap adds to an iterative pruning run: set final_sparsity (and cycles)")
        return APRun(options)


SPARSE_METHODS.register(
    _AP(
        "ap",
        "AP add-on to iterative pruning: part of each pruning step removes the surviving negative weights that"
        " moved least",
        APOptions,
        "Liu, Xu, Fu, Zhang, Wang, Yan, Xu: AP: Selective Activation for De-sparsifying Pruned Neural Networks (2022)",
    )
)
