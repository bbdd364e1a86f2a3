"""Early-Bird tickets (You et al., ICLR 2020) inside fine-tuning: ``finetune --method early_bird``.

Every ``every`` steps the channel mask at ``ratio`` is computed -- by |γ| of the BatchNormalization
after a weight when there is one, else by the L1 norm of each output channel of the Conv/Gemm/MatMul
weight -- and compared with the previous ones by the normalized Hamming distance
``d = 1 − mean(m_last == m_i)``. When the largest distance over the last ``window`` masks falls below
``eps`` the ticket has emerged and training stops. The method only watches (no weight is masked);
the ticket is then cut by the ``channels`` pass at the same ratio (the ``early-bird`` preset).
"""

from __future__ import annotations

import collections
import dataclasses
from typing import TYPE_CHECKING, Any

from onnxprune._fields import check_choices
from onnxprune.errors import RecipeError
from onnxprune.passes._base import check_choice
from onnxprune.passes._keep import keep_largest
from onnxprune.passes._layouts import layouts
from onnxprune.passes._sparse_methods import SPARSE_METHODS, MethodOptions, MethodRun, SparseMethod, StepState
from onnxprune.passes._vocab import SCOPES, choice_field

if TYPE_CHECKING:
    import torch

    from onnxprune.passes._train import Masks, TrainSettings
    from onnxprune.torchview import TorchView

__all__ = ["EarlyBirdOptions", "EarlyBirdRun", "MaskWindow", "mask_distance"]

IMPORTANCES = ("auto", "bn", "l1")


@dataclasses.dataclass(frozen=True)
class EarlyBirdOptions(MethodOptions):
    """Early-Bird's options (the paper: ε 0.1, a window of 5 masks, one check per epoch).

    Attributes:
        ratio: Fraction of the channels the mask drops (the ``channels`` pass's ``ratio`` later).
        every: Steps between two masks (the paper: one epoch).
        window: Masks compared: the newest against each of the ``window − 1`` before it.
        eps: The ticket has emerged when every distance in the window is below this.
        importance: ``bn`` (|γ| of the BatchNormalization after the weight), ``l1`` (L1 norm of each
            output channel of the weight) or ``auto`` (``bn`` where there is one, else ``l1``).
        scope: ``layer`` (each weight drops ``ratio`` of its channels) or ``global`` (one threshold
            over all the scores, the paper's BN-γ rule).
        bn_l1: Network slimming's L1 penalty on the BN scales during the search (the paper: 1e-4).
    """

    ratio: float = 0.5
    every: int = 10
    window: int = 5
    eps: float = 0.1
    importance: str = "auto"
    scope: str = choice_field("layer", SCOPES)
    bn_l1: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choices(self, "method option ")
        check_choice("method option importance", self.importance, IMPORTANCES)
        if not 0 < self.ratio < 1:
            raise RecipeError(f"method option ratio must be in (0, 1), got {self.ratio}")
        if self.every < 1 or self.window < 2:
            raise RecipeError(f"method options every must be >= 1 and window >= 2, got {self.every}, {self.window}")
        if not 0 <= self.eps <= 1 or self.bn_l1 < 0:
            raise RecipeError(f"method options eps must be in [0, 1] and bn_l1 >= 0, got {self.eps}, {self.bn_l1}")


def mask_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Normalized Hamming distance of two boolean masks: the fraction of entries that differ."""
    return float((a != b).float().mean())


class MaskWindow:
    """The last ``size`` masks; :meth:`push` returns the largest distance of the newest to the others."""

    def __init__(self, size: int) -> None:
        self.masks: collections.deque[torch.Tensor] = collections.deque(maxlen=size)

    def push(self, mask: torch.Tensor) -> float | None:
        """Add ``mask``; ``None`` until the window is full."""
        self.masks.append(mask)
        if len(self.masks) < (self.masks.maxlen or 0):
            return None
        return max(mask_distance(mask, old) for old in list(self.masks)[:-1])


class EarlyBirdRun(MethodRun):
    """The channel scores' sources, the window of masks and the distance curve."""

    def __init__(self, options: EarlyBirdOptions, masks: Masks, view: TorchView) -> None:
        self.options = options
        found = layouts(view, list(masks.params))
        params = view.named_tensors()
        self.units = {name: layout for name, layout in found.items() if not layout.feeds_output}
        if options.importance == "bn" and not any(layout.bn_scale for layout in self.units.values()):
            raise RecipeError("early_bird importance bn: no BatchNormalization follows the model's weights (use l1)")
        use_bn = options.importance != "l1"
        self.sources = {
            name: (params[layout.bn_scale], None)
            if use_bn and layout.bn_scale
            else (masks.params[name], layout.out_axis)
            for name, layout in self.units.items()
        }
        self.window = MaskWindow(options.window)
        self.curve: list[dict[str, Any]] = []
        self.found_at: int | None = None
        self.previous: torch.Tensor | None = None

    def scores(self) -> dict[str, torch.Tensor]:
        """One score per output channel of each watched weight."""
        out = {}
        for name, (tensor, axis) in self.sources.items():
            values = tensor.detach().abs().float()
            out[name] = values if axis is None else values.movedim(axis, 0).reshape(tensor.shape[axis], -1).sum(1)
        return out

    def channel_mask(self) -> torch.Tensor:
        """The kept channels at ``ratio``, all watched weights concatenated."""
        import torch

        scores = self.scores()
        if self.options.scope == "global":
            keep = keep_largest(scores, self.options.ratio)
        else:
            keep = {name: keep_largest({name: s}, self.options.ratio)[name] for name, s in scores.items()}
        return torch.cat([keep[name] for name in scores]) if keep else torch.zeros(0, dtype=torch.bool)

    def after_backward(self, state: StepState) -> None:
        if self.options.bn_l1 <= 0:
            return
        for tensor, axis in self.sources.values():
            if axis is None and tensor.grad is not None:
                tensor.grad.add_(self.options.bn_l1 * tensor.detach().sign())

    def after_step(self, state: StepState) -> None:
        done = state.step + 1
        if done % self.options.every or not self.sources:
            return
        mask = self.channel_mask()
        distance = self.window.push(mask)
        last = None if self.previous is None else mask_distance(mask, self.previous)
        self.previous = mask
        self.curve.append({"step": done, "distance": distance, "to_previous": last})
        if distance is not None and distance < self.options.eps:
            self.found_at, self.stop = done, True

    def summary(self) -> dict[str, Any]:
        return {
            "found_at": self.found_at,
            "channels": int(sum(s.numel() for s in self.scores().values())),
            "watched": sorted(self.sources),
            "curve": self.curve,
        }


@dataclasses.dataclass(frozen=True)
class EarlyBird(SparseMethod):
    """Early-Bird: stop training once the channel mask at ``ratio`` stops changing."""

    name: str = "early_bird"
    description: str = "Early-Bird tickets: stop when the channel mask (BN |γ| or L1) stabilizes; distances reported"
    options: type[MethodOptions] = EarlyBirdOptions
    paper: str = "You et al., Drawing Early-Bird Tickets: Towards More Efficient Training of Deep Networks, ICLR 2020"

    def start(self, options: MethodOptions, settings: TrainSettings, masks: Masks, view: TorchView) -> MethodRun:
        assert isinstance(options, EarlyBirdOptions)
        return EarlyBirdRun(options, masks, view)


SPARSE_METHODS.register(EarlyBird())
