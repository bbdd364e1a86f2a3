"""The runs of ``sup-tickets`` and ``free-tickets`` (see :mod:`onnxprune.passes._ticket_methods`); imports torch."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxprune.analysis.weights import write_tensor
from onnxprune.ensemble import build_ensemble, check_ensemble
from onnxprune.passes._sparse_methods import MethodRun, StepState
from onnxprune.passes._ticket_methods import FreeTicketsOptions, SupTicketsOptions
from onnxprune.passes._tickets import (
    Values,
    caa,
    cima,
    explore_lr,
    keep_largest,
    prune_and_regrow,
    snapshot,
    triangular_lr,
)
from onnxprune.passes._train import Masks, TrainSettings
from onnxprune.torchview import TorchView
from onnxprune.torchview.module import tensor_holders

__all__ = ["FreeTicketsRun", "SupTicketsRun", "phases"]

logger = logging.getLogger(__name__)

#: Samples the ensemble model is checked on in onnxruntime.
CHECK_SAMPLES = 8


def phases(steps: int, first: int, count: int) -> list[tuple[int, int]]:
    """``count`` equal (start, end) step ranges after step ``first``, the last ending at ``steps``."""
    length = max(1, (steps - first) // count)
    start = steps - length * count
    return [(start + k * length, start + (k + 1) * length) for k in range(count)]


def _sparsity(values: Mapping[str, Any], names: list[str]) -> float:
    total = sum(values[n].numel() for n in names)
    return 1 - sum(int((values[n] != 0).sum()) for n in names) / max(total, 1)


class _TicketRun(MethodRun):
    """What both methods share: the phases, the per-phase mask move and the tickets."""

    def __init__(self, settings: TrainSettings, masks: Masks, view: TorchView, first: int, count: int) -> None:
        self.settings, self.masks, self.view = settings, masks, view
        self.first = first
        self.phases = phases(settings.steps, first, count)
        self.moved: list[int] = []
        self.ticket_sparsity: list[float] = []

    def phase_of(self, step: int) -> tuple[int, int] | None:
        """(phase index, step within it), or None before the phases."""
        for index, (start, end) in enumerate(self.phases):
            if start <= step < end:
                return index, step - start
        return None

    def settled_at(self, steps: int) -> int:
        return steps  # the last step writes the result: only the final weights compete

    def take_ticket(self, state: StepState) -> Values:
        ticket = snapshot(state.view, state.masks)
        self.ticket_sparsity.append(round(_sparsity(ticket, list(state.masks.params)), 6))
        return ticket

    def is_phase_end(self, step: int) -> bool:
        return any(step == end - 1 for _, end in self.phases)

    def base_summary(self) -> dict[str, Any]:
        return {
            "phases": [list(p) for p in self.phases],
            "moved_at_phase_start": self.moved,
            "ticket_sparsity": self.ticket_sparsity,
        }


class SupTicketsRun(_TicketRun):
    """Cycles at the end of the run; at the last step the superposed, re-pruned tickets replace the weights."""

    def __init__(self, options: SupTicketsOptions, settings: TrainSettings, masks: Masks, view: TorchView) -> None:
        length = max(options.cycles, round(options.cycle_rate * settings.steps))
        super().__init__(settings, masks, view, max(0, settings.steps - length), options.cycles)
        self.options = options
        self.average: Values | None = None
        self.count = 0
        self.target: float | None = None
        self.kept: dict[str, int] = {}
        self.union_sparsity: float | None = None
        self.bn_nodes = sum(1 for step in getattr(view, "_steps", ()) if step.node.op_type == "BatchNormalization")

    def learning_rate(self, step: int, steps: int, lr: float) -> float:
        where = self.phase_of(step)
        if where is None:
            return explore_lr(self.settings, step, self.phases[0][0])
        length = self.phases[0][1] - self.phases[0][0]
        base = self.settings.lr
        return triangular_lr(self.options.lr_low * base, self.options.lr_high * base, where[1], length)

    def after_backward(self, state: StepState) -> None:
        where = self.phase_of(state.step)
        if where is None or where[1] != 0:
            return
        if self.target is None:
            self.target = max(state.masks.sparsity, self.settings.final_sparsity or 0.0)
            self.kept = {name: int(keep.sum()) for name, keep in state.masks.keep.items()}
        self.moved.append(prune_and_regrow(state.masks, self.options.reexplore, state.generator))

    def after_step(self, state: StepState) -> None:
        if not self.is_phase_end(state.step):
            return
        ticket = self.take_ticket(state)
        if self.options.combine == "caa":
            self.average = caa(self.average, ticket, self.count)
        else:
            self.average = cima(self.average, ticket, self.options.cima_factor)
        self.count += 1
        if self.count == len(self.phases):
            self.superpose(state)

    def superpose(self, state: StepState) -> None:
        """Write the average into the weights, then magnitude-re-prune it to the target sparsity."""
        import torch

        assert self.average is not None and self.target is not None
        masks = state.masks
        with torch.no_grad():
            for name, param in {**dict(state.view.named_tensors()), **masks.params}.items():
                if name in self.average:
                    param.copy_(self.average[name])
        masks.keep = {name: masks.params[name].detach() != 0 for name in masks.params}
        self.union_sparsity = masks.sparsity
        if self.options.reprune == "layer":
            keep_largest(masks, self.kept)
        else:
            masks.prune_to(self.target, state.generator, scope="global")

    def summary(self) -> dict[str, Any]:
        return {
            **self.base_summary(),
            "tickets": self.count,
            "combine": self.options.combine,
            "average_sparsity": self.union_sparsity,
            "target_sparsity": self.target,
            "sparsity": self.masks.sparsity,
            "bn_statistics": (
                f"{self.bn_nodes} un-folded BatchNormalization node(s): statistics not recomputed"
                if self.bn_nodes
                else "no un-folded BatchNormalization (folded on export): nothing to recompute"
            ),
        }


class FreeTicketsRun(_TicketRun):
    """Exploration with DST, then one refinement phase per member; each phase's end is a member."""

    def __init__(self, options: FreeTicketsOptions, settings: TrainSettings, masks: Masks, view: TorchView) -> None:
        super().__init__(settings, masks, view, round(options.explore * settings.steps), options.members)
        self.options = options
        self.tickets: list[Values] = []
        self.explore_moves = 0
        self.ensemble_error: float | None = None

    def learning_rate(self, step: int, steps: int, lr: float) -> float:
        where = self.phase_of(step)
        if where is None:
            return explore_lr(self.settings, step, self.phases[0][0])
        length = self.phases[0][1] - self.phases[0][0]
        return self.settings.lr if where[1] < length / 2 else self.settings.lr / 10

    def after_backward(self, state: StepState) -> None:
        where = self.phase_of(state.step)
        if where is not None:
            if where[1] == 0:
                self.moved.append(prune_and_regrow(state.masks, self.options.regrow, state.generator))
            return
        explore = self.phases[0][0]
        if state.step and state.step % self.options.update_every == 0:
            fraction = self.options.drop_fraction * 0.5 * (1 + math.cos(math.pi * state.step / max(explore, 1)))
            self.explore_moves += prune_and_regrow(state.masks, fraction, state.generator)

    def after_step(self, state: StepState) -> None:
        if self.is_phase_end(state.step):
            self.tickets.append({name: value.cpu() for name, value in self.take_ticket(state).items()})

    def outputs(self, model: ir.Model, inputs: Mapping[str, np.ndarray]) -> dict[str, ir.Model]:
        members = []
        for ticket in self.tickets:
            member = model.clone()
            holders = tensor_holders(member)
            for name, value in ticket.items():
                write_tensor(holders[name], value.numpy(), name)
            members.append(member)
        result = {f"_member{i}": member for i, member in enumerate(members)}
        if self.options.ensemble != "none" and members:
            ensemble = build_ensemble(members, self.options.ensemble)
            sample = {name: value[:CHECK_SAMPLES] for name, value in inputs.items()}
            self.ensemble_error = check_ensemble(ensemble, members, sample, self.options.ensemble)
            result["_ensemble"] = ensemble
        return result

    def summary(self) -> dict[str, Any]:
        return {
            **self.base_summary(),
            "explore_steps": self.phases[0][0],
            "explore_moved": self.explore_moves,
            "members": [
                {"member": i, "file_suffix": f"_member{i}", "sparsity": s, "step": end}
                for i, (s, (_, end)) in enumerate(zip(self.ticket_sparsity, self.phases, strict=False))
            ],
            "ensemble": self.options.ensemble,
            "ensemble_max_error": self.ensemble_error,
        }
