"""Sup-tickets (M31) and FreeTickets (M12) as fine-tuning methods (``finetune --method sup-tickets|free-tickets``).

Both spend the end of a fine-tuning run producing several sparse "tickets" with their own
learning-rate cycles and mask re-exploration (:mod:`onnxprune.passes._tickets`); they differ in what
they do with them:

* ``sup-tickets`` (Yin et al., UAI 2022) averages the tickets (CAA or CIMA) and magnitude-re-prunes the
  average to the target sparsity: one model, same graph. BatchNormalization is folded into Conv by the
  usual exporters, so there are no BN statistics to recompute; an un-folded BN's mean/var stay as
  imported (they are frozen in the torch view) -- the summary counts such nodes.
* ``free-tickets`` (Liu et al., ICLR 2022, EDST) keeps them as ensemble members: the output model is the
  last member, ``OUT_member{i}.onnx`` every member, and with ``ensemble`` one ``OUT_ensemble.onnx``
  averaging the members' softmax (or logits), checked against the members in onnxruntime.

This module imports no torch (the runs are built in :mod:`onnxprune.passes._ticket_runs`).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from onnxprune.errors import RecipeError
from onnxprune.passes._sparse_methods import SPARSE_METHODS, MethodOptions, MethodRun, SparseMethod

if TYPE_CHECKING:
    from onnxprune.passes._train import Masks, TrainSettings
    from onnxprune.torchview import TorchView

__all__ = ["ENSEMBLE_CHOICES", "FreeTicketsOptions", "SupTicketsOptions"]

#: ``none``: members only; otherwise one ensemble model besides them (see :mod:`onnxprune.ensemble`).
ENSEMBLE_CHOICES = ("none", "mean_softmax", "mean_logits")


def _fraction(name: str, value: float, *, open_low: bool = False) -> None:
    if not (0 < value <= 1 if open_low else 0 <= value <= 1):
        raise RecipeError(f"method option {name} must be in {'(0' if open_low else '[0'}, 1], got {value}")


@dataclasses.dataclass(frozen=True)
class SupTicketsOptions(MethodOptions):
    """Sup-tickets: the run's last part as cyclic-LR cycles, one ticket per cycle, averaged and re-pruned.

    Attributes:
        cycles: Tickets K (cycles of the triangular learning rate at the end of the run).
        cycle_rate: Fraction of the run the cycles take (its end; the paper: 0.1 of training). Before
            them, the run's own ``schedule`` squeezed into the remaining steps, masks held.
        lr_low: The cyclic rate at each cycle's start and end, as a factor of the run's ``lr`` (lr1; the
            paper's 0.001 against lr2 0.005).
        lr_high: The cyclic rate at mid-cycle, as a factor of the run's ``lr`` (lr2).
        reexplore: At each cycle's start, this fraction of each tensor's active weights is dropped
            (smallest magnitude) and as many inactive ones regrown (largest gradient) at 0 (the paper's
            ``large_death_rate`` 0.5).
        combine: ``caa`` (cumulative average: the arithmetic mean of the tickets) or ``cima``
            (exponential moving average, ``avg = (1 - cima_factor) * avg + cima_factor * ticket``).
        cima_factor: The weight of the newest ticket with ``cima``.
        reprune: How the average is magnitude-re-pruned: ``global`` (one threshold over all tensors, to
            the sparsity the cycles started at, or ``final_sparsity`` when higher; the paper's) or
            ``layer`` (each tensor back to the count of weights it kept when the cycles started).
    """

    cycles: int = 3
    cycle_rate: float = 0.3
    lr_low: float = 0.2
    lr_high: float = 1.0
    reexplore: float = 0.5
    combine: str = "caa"
    cima_factor: float = 0.5
    reprune: str = "global"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.cycles < 1:
            raise RecipeError(f"method option cycles must be >= 1, got {self.cycles}")
        _fraction("cycle_rate", self.cycle_rate, open_low=True)
        _fraction("reexplore", self.reexplore)
        _fraction("cima_factor", self.cima_factor, open_low=True)
        if self.lr_low <= 0 or self.lr_high <= 0:
            raise RecipeError(f"method options lr_low and lr_high must be > 0, got {self.lr_low}, {self.lr_high}")
        if self.combine not in ("caa", "cima"):
            raise RecipeError(f"method option combine must be caa or cima, got {self.combine!r}")
        if self.reprune not in ("global", "layer"):
            raise RecipeError(f"method option reprune must be global or layer, got {self.reprune!r}")


@dataclasses.dataclass(frozen=True)
class FreeTicketsOptions(MethodOptions):
    """FreeTickets (EDST): explore with dynamic sparse training, then one refinement phase per member.

    Attributes:
        members: Ensemble members M (one ticket at the end of each refinement phase).
        explore: Fraction of the run spent exploring (the run's ``schedule`` squeezed into it): every
            ``update_every`` steps ``drop_fraction`` (cosine-decayed to 0) of each tensor's active
            weights move (magnitude drop, gradient growth).
        update_every: Steps between two exploration updates.
        drop_fraction: The fraction moved at the first exploration update.
        regrow: At each refinement phase's start this fraction of each tensor's active weights moves
            (the paper's ``large_death_rate`` 0.8) and the learning rate is reset to the run's ``lr``,
            divided by 10 at mid-phase.
        ensemble: ``none``, ``mean_softmax`` or ``mean_logits``: also write ``OUT_ensemble.onnx``, the
            members' outputs averaged (after a softmax over the last axis with ``mean_softmax``: the
            ensemble then outputs probabilities).
    """

    members: int = 3
    explore: float = 0.4
    update_every: int = 50
    drop_fraction: float = 0.3
    regrow: float = 0.8
    ensemble: str = "none"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.members < 1 or self.update_every < 1:
            raise RecipeError(
                f"method options members and update_every must be >= 1, got {self.members}, {self.update_every}"
            )
        if not 0 <= self.explore < 1:
            raise RecipeError(f"method option explore must be in [0, 1), got {self.explore}")
        _fraction("drop_fraction", self.drop_fraction)
        _fraction("regrow", self.regrow)
        if self.ensemble not in ENSEMBLE_CHOICES:
            choices = ", ".join(ENSEMBLE_CHOICES)
            raise RecipeError(f"method option ensemble must be one of {choices}, got {self.ensemble!r}")


@dataclasses.dataclass(frozen=True)
class _SupTickets(SparseMethod):
    def start(self, options: MethodOptions, settings: TrainSettings, masks: Masks, view: TorchView) -> MethodRun:
        from onnxprune.passes._ticket_runs import SupTicketsRun

        assert isinstance(options, SupTicketsOptions)
        return SupTicketsRun(options, settings, masks, view)


@dataclasses.dataclass(frozen=True)
class _FreeTickets(SparseMethod):
    def start(self, options: MethodOptions, settings: TrainSettings, masks: Masks, view: TorchView) -> MethodRun:
        from onnxprune.passes._ticket_runs import FreeTicketsRun

        assert isinstance(options, FreeTicketsOptions)
        return FreeTicketsRun(options, settings, masks, view)


SPARSE_METHODS.register(
    _SupTickets(
        "sup-tickets",
        "cyclic-LR tickets with mask re-exploration, averaged and re-pruned (Sup-tickets)",
        SupTicketsOptions,
        "Yin et al., Superposing Many Tickets into One, UAI 2022",
    )
)
SPARSE_METHODS.register(
    _FreeTickets(
        "free-tickets",
        "sparse ensemble members from one run, written as OUT_member{i}.onnx (+ an ensemble model)",
        FreeTicketsOptions,
        "Liu et al., Deep Ensembling with No Overhead for either Training or Testing (FreeTickets), ICLR 2022",
    )
)
