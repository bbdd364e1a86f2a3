"""Per-op channel rules: each op type has one registered entry with ``propagate`` and ``slice``.

``propagate(node, analysis)`` reads the layouts of the node's inputs and sets those of its
outputs, coupling or blocking groups on the way. ``slice(node, executor)`` names the constant
inputs and attributes that follow the channels, so the same entry drives importance (record),
masking (zero) and the physical shrink (slice). Rules are keyed by (domain, op type);
:mod:`~onnxprune.analysis.channels.rules.fused` covers onnxruntime's ``com.microsoft`` fused
transformer ops. Importing this package registers every rule.
"""

from onnxprune.analysis.channels.rules import (  # noqa: F401  (register)
    elementwise,
    fused,
    gather,
    norms,
    producers,
    reshape,
    spatial,
)
from onnxprune.analysis.channels.rules._registry import RULES, Rule, find_rule, rule

__all__ = ["RULES", "Rule", "find_rule", "rule"]
