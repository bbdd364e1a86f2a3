"""PLATON (Zhang et al., ICML 2022) inside fine-tuning: ``finetune --method platon``.

Importance is the sensitivity ``I = |θ ⊙ ∇L|``, averaged over a window of ``every`` steps; at the end
of each window an exponential moving average ``Ī ← β₁Ī + (1−β₁)I`` and its uncertainty
``Ū ← β₂Ū + (1−β₂)|I − Ī|`` are updated and the weights are scored ``Ī ⊙ Ū`` (``Ī`` alone with
``β₂ = 1``). The pruned fraction follows the cubic schedule (:func:`cubic_sparsity`) between the
initial and final warm-ups, and each window's end re-selects the mask with one threshold over all the
masked weights (the Conv/Gemm/MatMul weights: on transformers the attention and FFN matrices --
embeddings and LayerNorm are not among them).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from onnxprune.errors import RecipeError
from onnxprune.passes._keep import keep_largest
from onnxprune.passes._schedules import cubic_sparsity
from onnxprune.passes._sparse_methods import SPARSE_METHODS, MethodOptions, MethodRun, SparseMethod, StepState

if TYPE_CHECKING:
    import torch

    from onnxprune.passes._train import Masks, TrainSettings
    from onnxprune.torchview import TorchView

__all__ = ["PlatonOptions", "PlatonRun", "platon_update", "platon_window"]


@dataclasses.dataclass(frozen=True)
class PlatonOptions(MethodOptions):
    """PLATON's options (the paper's defaults: β₁ 0.85, β₂ 0.95, ΔT 10).

    Attributes:
        sparsity: Fraction of all the masked weights pruned at the end of the schedule (one global
            threshold over the scores).
        beta1: Smoothing of the sensitivity's moving average ``Ī``.
        beta2: Smoothing of the uncertainty ``Ū``, in (0, 1]; ``1``: the score is ``Ī`` alone.
        every: Steps per window (ΔT): the sensitivity is averaged over a window, the averages and the
            mask are updated at its end.
        initial_warmup: Fraction of the run before pruning starts (the scores accumulate meanwhile).
        final_warmup: Fraction of the run at the end trained at the final sparsity with the mask fixed.
    """

    sparsity: float = 0.5
    beta1: float = 0.85
    beta2: float = 0.95
    every: int = 10
    initial_warmup: float = 0.1
    final_warmup: float = 0.3

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.sparsity < 1:
            raise RecipeError(f"method option sparsity must be in (0, 1), got {self.sparsity}")
        if not (0 <= self.beta1 < 1 and 0 < self.beta2 <= 1):
            raise RecipeError(
                f"method options beta1 must be in [0, 1) and beta2 in (0, 1], got {self.beta1}, {self.beta2}"
            )
        if self.every < 1:
            raise RecipeError(f"method option every must be >= 1, got {self.every}")
        if not (0 <= self.initial_warmup and 0 <= self.final_warmup and self.initial_warmup + self.final_warmup < 1):
            raise RecipeError("method options initial_warmup and final_warmup must be >= 0 with a sum below 1")


def platon_update(
    ema: torch.Tensor, uncertainty: torch.Tensor, importance: torch.Tensor, beta1: float, beta2: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """One window's update: ``Ī ← β₁Ī + (1−β₁)I``, then ``Ū ← β₂Ū + (1−β₂)|I − Ī|`` (with the new ``Ī``)."""
    ema = beta1 * ema + (1 - beta1) * importance
    return ema, beta2 * uncertainty + (1 - beta2) * (importance - ema).abs()


def platon_window(steps: int, options: PlatonOptions) -> tuple[int, int]:
    """(first, last) step counts of the pruning schedule: pruning runs for ``first < done <= last``."""
    first = int(options.initial_warmup * steps)
    last = max(first + 1, steps - int(options.final_warmup * steps))
    return first, min(last, steps)


class PlatonRun(MethodRun):
    """Window sums of ``|θ ⊙ ∇L|``, their moving averages, and the schedule's masking steps."""

    def __init__(self, options: PlatonOptions, settings: TrainSettings, masks: Masks) -> None:
        import torch

        self.options = options
        self.first, self.last = platon_window(settings.steps, options)
        self.initial = masks.sparsity
        self.window = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in masks.params.items()}
        self.ema = {n: torch.zeros_like(w) for n, w in self.window.items()}
        self.uncertainty = {n: torch.zeros_like(w) for n, w in self.window.items()}
        self.counted = 0
        self.schedule: list[dict[str, float]] = []

    def settled_at(self, steps: int) -> int:
        return self.last

    def target(self, done: int) -> float | None:
        """The pruned fraction to mask to after ``done`` steps (``None``: no masking then)."""
        if done <= self.first or done > self.last or (done % self.options.every and done != self.last):
            return None
        return cubic_sparsity(done - self.first, self.last - self.first, self.initial, self.options.sparsity)

    def after_backward(self, state: StepState) -> None:
        for name, param in state.masks.params.items():
            if param.grad is not None:
                self.window[name] += (param.detach() * param.grad).abs().float()
        self.counted += 1

    def after_step(self, state: StepState) -> None:
        done = state.step + 1
        if done % self.options.every == 0 or done == state.steps:
            self._update()
        sparsity = self.target(done)
        if sparsity is None or sparsity <= 0:
            return
        state.masks.keep = keep_largest(self.scores(), sparsity)
        state.masks.apply()
        self.schedule.append({"step": done, "target": sparsity, "sparsity": state.masks.sparsity})

    def _update(self) -> None:
        if not self.counted:
            return
        o = self.options
        for name, total in self.window.items():
            self.ema[name], self.uncertainty[name] = platon_update(
                self.ema[name], self.uncertainty[name], total / self.counted, o.beta1, o.beta2
            )
            total.zero_()
        self.counted = 0

    def scores(self) -> dict[str, torch.Tensor]:
        """``Ī ⊙ Ū`` per masked weight (``Ī`` with ``β₂ = 1``)."""
        if self.options.beta2 == 1:
            return dict(self.ema)
        return {name: self.ema[name] * self.uncertainty[name] for name in self.ema}

    def summary(self) -> dict[str, Any]:
        return {"schedule": self.schedule, "warmup_until": self.first, "final_from": self.last}


@dataclasses.dataclass(frozen=True)
class Platon(SparseMethod):
    """PLATON: prune by the upper confidence bound of the smoothed sensitivity, cubic schedule."""

    name: str = "platon"
    description: str = "PLATON: |θ·∇L| smoothed (β₁) × its uncertainty (β₂), global mask on a cubic schedule"
    options: type[MethodOptions] = PlatonOptions
    paper: str = (
        "Zhang et al., PLATON: Pruning Large Transformer Models with Upper Confidence Bound of Weight Importance, "
        "ICML 2022"
    )

    def start(self, options: MethodOptions, settings: TrainSettings, masks: Masks, view: TorchView) -> MethodRun:
        assert isinstance(options, PlatonOptions)
        return PlatonRun(options, settings, masks)


SPARSE_METHODS.register(Platon())
