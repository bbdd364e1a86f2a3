"""Sparse-training methods that run inside fine-tuning, registered by name (``finetune --method``).

A method is a frozen registry entry -- its name, one line, the frozen dataclass of its options --
whose :meth:`SparseMethod.start` returns a :class:`MethodRun`: the per-run state with the hooks the
training loop (:func:`onnxprune.passes._train.train`) calls at every step:

* ``before_step``: before the forward pass; may prune or grow (edit ``masks.keep``, then ``masks.apply()``).
* ``after_backward``: gradients are on ``masks.params[name].grad`` -- dense: a masked weight is a zero
  entry of the parameter, so its gradient is the one a regrown connection would get (RigL, PLATON).
* ``after_step``: after the optimizer step and the mask re-application.
* ``values`` + ``penalty``: the forward's intermediate values a method reads (by name), and a term
  added to the loss before backward (K-FAC's spectral-radius regularizer).
* ``prune_to``: the scheduled pruning of a step (default: magnitude, :meth:`Masks.prune_to`) -- AP
  chooses part of each cycle's weights itself.
* ``finish``: after training and the restore of the kept weights (LRPET's last projection).
* ``learning_rate``: the rate of a step (default: the run's schedule) -- cyclic methods (Sup-tickets,
  FreeTickets) drive their own.
* ``outputs``: after training, models written next to the output (FreeTickets' members, by suffix).

``settled_at`` is the step after which the masks stop changing (held-out snapshots compete only
after it); setting ``stop`` ends training early (Early-Bird). Methods are registered by the modules
imported in ``onnxprune.passes``; this module imports no torch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from onnxprune._fields import check_fields, short
from onnxprune.errors import RecipeError
from onnxprune.passes._registry import Registry

if TYPE_CHECKING:
    import numpy as np
    import onnx_ir as ir
    import torch

    from onnxprune.passes._train import Masks, TrainSettings
    from onnxprune.torchview import TorchView

__all__ = ["SPARSE_METHODS", "MethodOptions", "MethodRun", "SparseMethod", "StepState", "method_options"]


@dataclasses.dataclass(frozen=True)
class MethodOptions:
    """Options of a method (subclass with frozen fields and defaults; checked against their types)."""

    def __post_init__(self) -> None:
        check_fields(self, "method option ")


@dataclasses.dataclass
class StepState:
    """What a hook sees: the step (0-based) of ``steps``, the learning rate, masks, view and RNG."""

    step: int
    steps: int
    lr: float
    masks: Masks
    view: TorchView
    generator: torch.Generator
    settings: TrainSettings


class MethodRun:
    """One run's state; the base does nothing (masks held as they are)."""

    #: Set by a hook to end training after the current step.
    stop: bool = False
    #: Names of the graph values :meth:`penalty` reads (they come with every training forward).
    values: tuple[str, ...] = ()

    def settled_at(self, steps: int) -> int:
        """The first step count after which the masks no longer change (0: they never change)."""
        return 0

    def before_step(self, state: StepState) -> None:
        """Before the forward pass of ``state.step``."""

    def after_backward(self, state: StepState) -> None:
        """Gradients computed, optimizer not stepped yet."""

    def after_step(self, state: StepState) -> None:
        """After the optimizer step and ``masks.apply()``."""

    def penalty(self, state: StepState, loss: torch.Tensor, values: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
        """A term added to ``loss`` before backward (``values``: the forward's, by name); ``None``: none."""
        return None

    def prune_to(self, masks: Masks, target: float, generator: torch.Generator, settings: TrainSettings) -> None:
        """Prune to the scheduled ``target`` sparsity (default: by magnitude, with the run's drop/scope)."""
        masks.prune_to(target, generator, settings.drop_out, settings.drop_in, settings.prune_scope)

    def finish(self, masks: Masks, view: TorchView) -> None:
        """After the last step and the restore of the kept weights."""

    def learning_rate(self, step: int, steps: int, lr: float) -> float:
        """The learning rate of ``step``; ``lr`` is the run's schedule there (kept by default)."""
        return lr

    def outputs(self, model: ir.Model, inputs: Mapping[str, np.ndarray]) -> dict[str, ir.Model]:
        """Models to save next to the output, by file-name suffix (``_member0``), built from the trained ``model``.

        ``inputs``: training samples stacked along axis 0, to check them on. Default: none.
        """
        return {}

    def summary(self) -> dict[str, Any]:
        """Figures for the pass report (JSON-serializable)."""
        return {}


@dataclasses.dataclass(frozen=True)
class SparseMethod:
    """``none``: the masks the model came with are held (``final_sparsity`` schedules still prune).

    Attributes:
        name: Registry name (``--method``).
        description: One line for ``--help`` and ``onnxprune passes``.
        options: The frozen dataclass of its options (``--method-option KEY=VALUE``).
        paper: The paper it follows (empty for ``none``).
    """

    name: str = "none"
    description: str = "hold the model's masks (plus the final_sparsity schedules)"
    options: type[MethodOptions] = MethodOptions
    paper: str = ""

    def start(self, options: MethodOptions, settings: TrainSettings, masks: Masks, view: TorchView) -> MethodRun:
        """A fresh run of the method."""
        return MethodRun()


SPARSE_METHODS: Registry[SparseMethod] = Registry("method")
SPARSE_METHODS.register(SparseMethod())


def method_options(name: str, raw: Mapping[str, Any]) -> MethodOptions:
    """The checked options of method ``name`` from a mapping (unknown keys refused, with the known ones)."""
    name = SPARSE_METHODS.canonical("method", name)
    method = SPARSE_METHODS[name]
    known = {f.name for f in dataclasses.fields(method.options)}
    unknown = sorted(set(raw) - known)
    if unknown:
        hint = ", ".join(sorted(known)) or "none"
        raise RecipeError(f"method '{name}' has no option {short(unknown[0])} (its options: {hint})")
    return method.options(**raw)
