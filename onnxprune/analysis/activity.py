"""Activation density and dead-neuron rate of the ReLU units (M7 activation density, M19/AP's DNR).

For every ``Relu`` of the main graph, over the samples of a data source, in onnxruntime:

* activation density: the fraction of its output values that are nonzero (per channel for a conv
  feature map [N, C, H, W], per feature for [N, F] or [N, S, F]);
* dead-neuron rate (AP's DNR): the fraction of units at zero for a sample, averaged over the data
  (1 - density);
* dead units: channels/features at zero for every sample seen.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import onnx_ir as ir

from onnxprune.analysis.shapes import complete_shapes, infer_shapes
from onnxprune.calibration.collect import StatRequest, collect_stats
from onnxprune.calibration.sources import CalibrationSource

__all__ = ["Activity", "LayerActivity", "measure_activity", "relu_outputs"]

#: Ops that produce [N, C, ...] feature maps: a rank-3 ReLU after one of them is a Conv1d map.
_CHANNEL_FIRST = frozenset({"Conv", "ConvTranspose", "BatchNormalization", "MaxPool", "AveragePool"})


def _relus(model: ir.Model) -> list[ir.Node]:
    return [
        node
        for node in model.graph
        if node.op_type == "Relu" and node.domain in ("", "ai.onnx") and node.outputs[0].name
    ]


def relu_outputs(model: ir.Model, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, int]:
    """The output of every ``Relu`` of the main graph with its channel axis (1 for maps, -1 for features)."""
    found = {}
    for node in _relus(model):
        rank = len(shapes.get(node.outputs[0].name, ()))
        producer = node.inputs[0].producer() if node.inputs and node.inputs[0] is not None else None
        channel_first = rank >= 4 or (rank == 3 and producer is not None and producer.op_type in _CHANNEL_FIRST)
        found[node.outputs[0].name] = 1 if channel_first else -1
    return found


@dataclasses.dataclass(frozen=True)
class LayerActivity:
    """One ReLU output: units (channels or features), values seen per unit, and the units' nonzero counts."""

    value: str
    units: int
    per_unit: int
    nonzero: int
    dead_units: int

    @property
    def density(self) -> float:
        """Fraction of nonzero outputs."""
        return self.nonzero / max(self.units * self.per_unit, 1)

    @property
    def dead_rate(self) -> float:
        """Fraction of units at zero for a sample, averaged over the data (1 - density)."""
        return 1.0 - self.density

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly form with the derived rates."""
        return {
            "value": self.value,
            "units": self.units,
            "density": self.density,
            "dead_rate": self.dead_rate,
            "dead_units": self.dead_units,
            "dead_unit_fraction": self.dead_units / max(self.units, 1),
        }


@dataclasses.dataclass(frozen=True)
class Activity:
    """Every ReLU output's activity over ``samples`` samples; the overall figures weigh every output value."""

    layers: tuple[LayerActivity, ...]
    samples: int

    @property
    def density(self) -> float:
        """Nonzero outputs / outputs, over every ReLU (``nan`` without ReLUs)."""
        total = sum(layer.units * layer.per_unit for layer in self.layers)
        return sum(layer.nonzero for layer in self.layers) / total if total else float("nan")

    @property
    def dead_rate(self) -> float:
        """1 - :attr:`density`."""
        return 1.0 - self.density

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly form."""
        return {
            "samples": self.samples,
            "density": self.density,
            "dead_rate": self.dead_rate,
            "dead_units": sum(layer.dead_units for layer in self.layers),
            "units": sum(layer.units for layer in self.layers),
            "layers": [layer.as_dict() for layer in self.layers],
        }


def measure_activity(
    model: ir.Model,
    source: CalibrationSource,
    *,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
    batch_size: int = 32,
    threads: int | None = None,
) -> Activity:
    """Activation density and dead units of every ReLU of ``model`` over ``source`` (one onnxruntime pass)."""
    relus = _relus(model)
    if not relus:  # nothing to run (transformers: GELU)
        return Activity((), source.num_samples)
    shapes = infer_shapes(model, input_shapes)
    if any(node.outputs[0].name not in shapes for node in relus):
        shapes = complete_shapes(model, input_shapes)
    outputs = relu_outputs(model, shapes)
    requests = [StatRequest(name, axis, sums=frozenset({"nonzero"})) for name, axis in outputs.items()]
    stats = collect_stats(model, source, requests, batch_size=batch_size, threads=threads) if requests else {}
    layers = tuple(
        LayerActivity(name, s.channels, s.count, int(s.nonzero.sum()), int((s.nonzero == 0).sum()))
        for name, s in stats.items()
    )
    return Activity(layers, source.num_samples)
