"""Pass base: an ``onnx_ir`` in-place pass configured by a frozen dataclass, returning a report."""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Sequence
from typing import Any, ClassVar

import onnx_ir as ir

from onnxprune.analysis.weights import Weight
from onnxprune.context import PassContext
from onnxprune.errors import RecipeError

__all__ = ["OnnxPrunePass", "PassReport", "PruneResult", "check_choice", "matches"]


@dataclasses.dataclass
class PassReport:
    """What a pass did: one entry per changed tensor, one per skipped tensor with its reason."""

    name: str
    config: dict[str, Any]
    changed: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    skipped: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    summary: dict[str, Any] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0
    #: Pass-specific records too long for the summary (fine-tuning's held-out loss curve).
    details: dict[str, Any] = dataclasses.field(default_factory=dict)

    def skip(self, tensor: str, node: str, op_type: str, reason: str) -> None:
        """Record a tensor left alone."""
        self.skipped.append({"tensor": tensor, "node": node, "op": op_type, "reason": reason})

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return dataclasses.asdict(self)


class PruneResult(ir.passes.PassResult):
    """``PassResult`` carrying the pass's report."""

    def __init__(self, model: ir.Model, modified: bool, report: PassReport) -> None:
        super().__init__(model, modified)
        self.report = report


class OnnxPrunePass(ir.passes.InPlacePass):
    """Base of onnxprune passes: ``config`` (a frozen dataclass) plus a shared :class:`PassContext`.

    Subclasses set ``name`` and ``config_class`` and implement ``call``. Instances hold no state
    across runs, so one pass object can run on several models.
    """

    name: ClassVar[str]
    config_class: ClassVar[type]

    def __init__(self, config: Any = None, context: PassContext | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else self.config_class()
        if not isinstance(self.config, self.config_class):
            raise TypeError(f"{type(self).__name__} takes a {self.config_class.__name__}, got {type(config).__name__}")
        self.context = context if context is not None else PassContext()
        self.context_given = context is not None

    def new_report(self) -> PassReport:
        """An empty report for this pass and config."""
        return PassReport(self.name, dataclasses.asdict(self.config))


def matches(weight: Weight, patterns: Sequence[str]) -> bool:
    """True if a consuming node's name or the tensor's name matches any glob."""
    names = (*weight.node_names, weight.name)
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns for name in names)


def check_choice(field: str, value: str, choices: tuple[str, ...]) -> None:
    """Refuse a config value that is not one of ``choices``."""
    if value not in choices:
        raise RecipeError(f"{field} must be one of {', '.join(choices)}; got '{value}'")
