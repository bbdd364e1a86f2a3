"""Campfire (Hubens et al., 2021) inside fine-tuning: ``finetune --method campfire``.

Gradual structured sparsity: every ``every`` steps between ``start`` and ``end`` of the run, each
weight tensor loses its lowest-norm blocks until the fraction ``s_t`` of Zhu & Gupta's cubic
schedule (:func:`cubic_sparsity`, 0 → ``sparsity``) is reached; from ``freeze_after`` on the mask is
fixed and training continues on the surviving weights. A block is a whole k×k kernel of a Conv
weight (``block: kernel``) or a whole filter (``block: filter``, all the weights of one output
channel); Gemm/MatMul weights are pruned as the ``linear`` option says.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from typing import TYPE_CHECKING, Any

from onnxprune.errors import RecipeError
from onnxprune.passes._base import check_choice
from onnxprune.passes._keep import keep_largest
from onnxprune.passes._layouts import layouts
from onnxprune.passes._schedules import cubic_sparsity
from onnxprune.passes._sparse_methods import SPARSE_METHODS, MethodOptions, MethodRun, SparseMethod, StepState

if TYPE_CHECKING:
    import torch

    from onnxprune.passes._train import Masks, TrainSettings
    from onnxprune.torchview import TorchView

__all__ = ["CampfireOptions", "CampfireRun", "block_index"]

BLOCKS = ("kernel", "filter")
LINEAR = ("unstructured", "rows", "keep")
NORMS = ("l1", "l2")


@dataclasses.dataclass(frozen=True)
class CampfireOptions(MethodOptions):
    """Campfire's options (the paper: ResNet-50 at 70-80% sparsity, first conv and FC kept dense).

    Attributes:
        sparsity: Fraction of the blocks of each tensor pruned at ``end``.
        block: ``kernel`` (a whole k×k kernel of one input/output channel pair) or ``filter`` (all
            the weights of one output channel).
        norm: Block score: ``l1`` or ``l2`` norm of its weights.
        linear: Gemm/MatMul weights: ``unstructured`` (each weight its own block, a 1×1 kernel),
            ``rows`` (whole output neurons) or ``keep`` (left dense, as the paper's FC layer).
        start: Fraction of the run at which pruning starts.
        end: Fraction of the run at which ``sparsity`` is reached.
        every: Steps between two pruning steps.
        freeze_after: Fraction of the run after which the mask is fixed (default: ``end``; earlier
            stops the schedule short of ``sparsity``).
        exclude: Globs on weight tensor names left dense (e.g. the first conv).
    """

    sparsity: float = 0.5
    block: str = "kernel"
    norm: str = "l1"
    linear: str = "unstructured"
    start: float = 0.0
    end: float = 0.5
    every: int = 10
    freeze_after: float | None = None
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("method option block", self.block, BLOCKS)
        check_choice("method option norm", self.norm, NORMS)
        check_choice("method option linear", self.linear, LINEAR)
        if not 0 < self.sparsity < 1:
            raise RecipeError(f"method option sparsity must be in (0, 1), got {self.sparsity}")
        if not 0 <= self.start < self.end <= 1:
            raise RecipeError(f"method options need 0 <= start < end <= 1, got start {self.start}, end {self.end}")
        if self.freeze_after is not None and not self.start < self.freeze_after <= 1:
            raise RecipeError(f"method option freeze_after must be in (start, 1], got {self.freeze_after}")
        if self.every < 1:
            raise RecipeError(f"method option every must be >= 1, got {self.every}")


def block_index(shape: tuple[int, ...], out_axis: int, block: str, linear: str) -> torch.Tensor | None:
    """Flat element indices of each block, one row per block (``None``: the tensor stays dense)."""
    import torch

    flat = torch.arange(int(torch.Size(shape).numel())).reshape(shape)
    if len(shape) == 2:
        if linear == "keep":
            return None
        return (
            flat.reshape(-1, 1) if linear == "unstructured" else flat.movedim(out_axis, 0).reshape(shape[out_axis], -1)
        )
    if block == "kernel":
        return flat.reshape(-1, int(torch.Size(shape[2:]).numel()))
    return flat.movedim(out_axis, 0).reshape(shape[out_axis], -1)


class CampfireRun(MethodRun):
    """The blocks of each tensor and the schedule's pruning steps."""

    def __init__(self, options: CampfireOptions, settings: TrainSettings, masks: Masks, view: TorchView) -> None:
        self.options = options
        self.first = int(options.start * settings.steps)
        self.last = max(self.first + 1, int(options.end * settings.steps))
        freeze = self.last if options.freeze_after is None else int(options.freeze_after * settings.steps)
        self.frozen_after = max(self.first + 1, freeze)
        axes = layouts(view, list(masks.params))
        self.blocks: dict[str, torch.Tensor] = {}
        for name, param in masks.params.items():
            if any(fnmatch.fnmatchcase(name, glob) for glob in options.exclude):
                continue
            index = block_index(tuple(param.shape), axes[name].out_axis, options.block, options.linear)
            if index is not None:
                self.blocks[name] = index
        self.schedule: list[dict[str, float]] = []

    def settled_at(self, steps: int) -> int:
        return min(self.last, self.frozen_after) + 1

    def target(self, step: int) -> float | None:
        """The block sparsity to prune to before ``step`` (``None``: no pruning at this step)."""
        if step < self.first or step > min(self.last, self.frozen_after):
            return None
        if (step - self.first) % self.options.every and step != self.last:
            return None
        return cubic_sparsity(step - self.first, self.last - self.first, 0.0, self.options.sparsity)

    def before_step(self, state: StepState) -> None:
        sparsity = self.target(state.step)
        if not sparsity:
            return
        power = 1 if self.options.norm == "l1" else 2
        for name, index in self.blocks.items():
            keep = state.masks.keep[name].reshape(-1)
            values = state.masks.params[name].detach().reshape(-1)[index].abs().pow(power).sum(1)
            alive = keep[index].any(1)
            chosen = keep_largest({name: values.masked_fill(~alive, float("-inf"))}, sparsity)[name]
            keep[index[~chosen].reshape(-1)] = False
            state.masks.keep[name] = keep.reshape(state.masks.keep[name].shape)
        state.masks.apply()
        self.schedule.append({"step": state.step, "target": sparsity, **self.block_sparsity(state.masks)})

    def block_sparsity(self, masks: Masks) -> dict[str, float]:
        """Fraction of the blocks fully zero, and of the weights, over the tensors this method prunes."""
        blocks = sum(int((~masks.keep[n].reshape(-1)[i].any(1)).sum()) for n, i in self.blocks.items())
        total = sum(i.shape[0] for i in self.blocks.values())
        weights = sum(int((~masks.keep[n]).sum()) for n in self.blocks)
        size = sum(i.numel() for i in self.blocks.values())
        return {"block_sparsity": blocks / max(total, 1), "weight_sparsity": weights / max(size, 1)}

    def summary(self) -> dict[str, Any]:
        return {
            "schedule": self.schedule,
            "frozen_after": min(self.last, self.frozen_after),
            "pruned": sorted(self.blocks),
        }


@dataclasses.dataclass(frozen=True)
class Campfire(SparseMethod):
    """Campfire: gradual kernel/filter-level structured sparsity, then a frozen mask."""

    name: str = "campfire"
    description: str = "Campfire: whole kernels (or filters) pruned by norm on a cubic schedule, then the mask frozen"
    options: type[MethodOptions] = CampfireOptions
    paper: str = (
        "Hubens et al., Campfire: Compressible, Regularization-Free, Structured Sparse Training "
        "for Hardware Accelerators, 2021"
    )

    def start(self, options: MethodOptions, settings: TrainSettings, masks: Masks, view: TorchView) -> MethodRun:
        assert isinstance(options, CampfireOptions)
        return CampfireRun(options, settings, masks, view)


SPARSE_METHODS.register(Campfire())
