"""Dynamic sparse training inside fine-tuning: RigL/SET (M23), GaP (M26), SCL (M32) as ``finetune --method``.

This module registers the methods and their option dataclasses and imports no torch; each method's
run lives in its own module (``_dst_rigl``, ``_dst_gap``, ``_dst_scl``), imported when a run starts.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from onnxprune.errors import RecipeError
from onnxprune.passes._base import check_choice
from onnxprune.passes._sparse_methods import SPARSE_METHODS, MethodOptions, MethodRun, SparseMethod

if TYPE_CHECKING:
    from onnxprune.passes._train import Masks, TrainSettings
    from onnxprune.torchview import TorchView

__all__ = ["GaPOptions", "RigLOptions", "SCLOptions"]


def _fraction(name: str, value: float, *, low_open: bool = False, high_open: bool = False) -> None:
    low_ok = value > 0 if low_open else value >= 0
    high_ok = value < 1 if high_open else value <= 1
    if not (low_ok and high_ok):
        interval = f"{'(' if low_open else '['}0, 1{')' if high_open else ']'}"
        raise RecipeError(f"method option {name} must be in {interval}, got {value}")


def _at_least(name: str, value: int | None, low: int) -> None:
    if value is not None and value < low:
        raise RecipeError(f"method option {name} must be >= {low}, got {value}")


@dataclasses.dataclass(frozen=True)
class RigLOptions(MethodOptions):
    """RigL (Evci et al. 2020) options; ``grow: random`` is SET (Mocanu et al. 2018).

    Attributes:
        update_every: ΔT, steps between two mask updates (no optimizer step at an update, as in RigL).
        drop_fraction: f₀, the fraction of each tensor's active weights dropped, and as many regrown, at
            the first update.
        decay: How the drop fraction falls over the run: ``cosine`` (f₀·½(1 + cos(π t / T_end))) or ``constant``.
        end: Fraction of the run (T_end) after which the masks no longer change.
        grow: ``gradient`` (RigL: the largest |dense gradient| among the inactive weights) or ``random`` (SET).
        init: Value of a regrown weight: ``zeros``.
        sparsity: ``None``: every tensor keeps the sparsity it has. A number: before the first step each
            tensor is magnitude-pruned to its Erdős–Rényi-Kernel density for that overall sparsity (a
            tensor already sparser stays so); the count per tensor is then fixed.
        erk_power: Exponent on ERK's Σ dims / Π dims (0: the same density for every tensor).
    """

    update_every: int = 100
    drop_fraction: float = 0.3
    decay: str = "cosine"
    end: float = 0.75
    grow: str = "gradient"
    init: str = "zeros"
    sparsity: float | None = None
    erk_power: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _at_least("update_every", self.update_every, 1)
        _fraction("drop_fraction", self.drop_fraction)
        _fraction("end", self.end, low_open=True)
        check_choice("method option decay", self.decay, ("cosine", "constant"))
        check_choice("method option grow", self.grow, ("gradient", "random"))
        check_choice("method option init", self.init, ("zeros",))
        if self.sparsity is not None:
            _fraction("sparsity", self.sparsity, high_open=True)
        if self.erk_power < 0:
            raise RecipeError(f"method option erk_power must be >= 0, got {self.erk_power}")


@dataclasses.dataclass(frozen=True)
class GaPOptions(MethodOptions):
    """GaP, scheduled grow-and-prune (Ma et al., ICLR 2022), sequential (S-GaP) options.

    Attributes:
        partitions: K, the parts the weight tensors are split into (at most one per tensor: fewer
            tensors than K gives one part per tensor).
        partition: How tensors are assigned to parts: ``cyclic`` (tensor i in graph order to part i mod K)
            or ``random`` (a seeded shuffle, then cyclic).
        steps_per_phase: Steps one part stays dense; default: the run divided into ``cycles``·K + 1 equal
            phases, the last one training the fully sparse model.
        cycles: How many times every part is grown (phases = cycles·K, in part order 0, 1, ..., K-1, 0, ...).
        sparsity: ``None``: every tensor's target is the sparsity it has. A number: before the first
            step each tensor is magnitude-pruned to that sparsity (uniform targets).
    """

    partitions: int = 4
    partition: str = "cyclic"
    steps_per_phase: int | None = None
    cycles: int = 1
    sparsity: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _at_least("partitions", self.partitions, 1)
        _at_least("steps_per_phase", self.steps_per_phase, 1)
        _at_least("cycles", self.cycles, 1)
        check_choice("method option partition", self.partition, ("cyclic", "random"))
        if self.sparsity is not None:
            _fraction("sparsity", self.sparsity, high_open=True)


@dataclasses.dataclass(frozen=True)
class SCLOptions(MethodOptions):
    """SCL, sparse connectivity learning (Tang et al., TNNLS 2022) options.

    Every weight has a mask logit m; the forward uses θ ⊙ 1[m > 0]; the identity straight-through
    estimator gives m the gradient of the masked weight times θ, normalised per output feature; the
    connection-count penalty λ·Σ 1[m > 0] pushes every logit down by ``mask_lr``·λ. λ is annealed as
    the count's multiplier: at each step the smallest λ >= 0 that brings the density (over all tensors
    at once) down to a cubic schedule from the start density to ``target_density`` at ``end``. From
    ``end`` on the masks are fixed at exactly ``target_density`` and only θ trains.

    Attributes:
        target_density: Fraction of the prunable weights kept at the end, in (0, 1].
        mask_lr: Step size of the mask logits (plain gradient descent).
        mask_init: Starting logit of an active weight (a pruned weight starts at ``-mask_init``).
        normalize: ``per_feature`` (each output neuron's mask gradient scaled to unit norm) or ``none``.
        end: Fraction of the run after which the masks are fixed.
    """

    target_density: float = 0.1
    mask_lr: float = 0.05
    mask_init: float = 1.0
    normalize: str = "per_feature"
    end: float = 0.75

    def __post_init__(self) -> None:
        super().__post_init__()
        _fraction("target_density", self.target_density, low_open=True)
        _fraction("end", self.end, low_open=True)
        check_choice("method option normalize", self.normalize, ("per_feature", "none"))
        if self.mask_lr <= 0 or self.mask_init <= 0:
            raise RecipeError("method options mask_lr and mask_init must be > 0")


@dataclasses.dataclass(frozen=True)
class _RigL(SparseMethod):
    def start(self, options: MethodOptions, settings: TrainSettings, masks: Masks, view: TorchView) -> MethodRun:
        from onnxprune.passes._dst_rigl import RigLRun

        assert isinstance(options, RigLOptions)
        return RigLRun(options, settings, masks)


@dataclasses.dataclass(frozen=True)
class _GaP(SparseMethod):
    def start(self, options: MethodOptions, settings: TrainSettings, masks: Masks, view: TorchView) -> MethodRun:
        from onnxprune.passes._dst_gap import GaPRun

        assert isinstance(options, GaPOptions)
        return GaPRun(options, settings, masks)


@dataclasses.dataclass(frozen=True)
class _SCL(SparseMethod):
    def start(self, options: MethodOptions, settings: TrainSettings, masks: Masks, view: TorchView) -> MethodRun:
        from onnxprune.passes._dst_scl import SCLRun

        assert isinstance(options, SCLOptions)
        return SCLRun(options, settings, masks)


_RIGL_PAPER = "Evci, Gale, Menick, Castro, Elsen: Rigging the Lottery: Making All Tickets Winners (ICML 2020)"
SPARSE_METHODS.register(
    _RigL(
        "rigl",
        "RigL: every update_every steps drop the smallest weights, regrow as many by |gradient| (or at random: SET)",
        RigLOptions,
        _RIGL_PAPER,
    )
)
SPARSE_METHODS.register(
    _GaP(
        "gap",
        "GaP: grow one part of the tensors to dense, train, prune it back by magnitude; cycle through the parts",
        GaPOptions,
        "Ma et al.: Effective Model Sparsification by Scheduled Grow-and-Prune Methods (ICLR 2022)",
    )
)
SPARSE_METHODS.register(
    _SCL(
        "scl",
        "SCL: learn binary masks with the weights (straight-through), a connection-count penalty to target_density",
        SCLOptions,
        "Tang et al.: Automatic Sparse Connectivity Learning for Neural Networks (IEEE TNNLS 2022)",
    )
)
