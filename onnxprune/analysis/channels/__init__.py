"""Channel-dependency analysis: which channels must be removed together, and how to remove them.

:func:`analyze_channels` propagates channel layouts through the graph with per-op rules
(:mod:`~onnxprune.analysis.channels.rules`) and returns the coupled groups, each prunable or
blocked with a reason. :mod:`~onnxprune.analysis.channels.apply` records, masks or slices the
parameters that follow the channels.
"""

from onnxprune.analysis.channels.apply import ParamUse, mask, masked_values, record, replace_constant, shrink
from onnxprune.analysis.channels.graph import ChannelAnalysis, analyze_channels
from onnxprune.analysis.channels.groups import Blocker, Group
from onnxprune.analysis.channels.layout import Layout, Segment

__all__ = [
    "Blocker",
    "ChannelAnalysis",
    "Group",
    "Layout",
    "ParamUse",
    "Segment",
    "analyze_channels",
    "mask",
    "masked_values",
    "record",
    "replace_constant",
    "shrink",
]
