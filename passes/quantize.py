"""INT8 after pruning: static QDQ quantization with ``onnxruntime.quantization``, calibrated on the run's data.

The in-memory model is written to a temporary folder, pre-processed (``quant_pre_process``: shape
inference and graph optimization; on failure the model is quantized as it is, with the reason
logged and reported), quantized by ``quantize_static`` (QDQ, symmetric INT8 weights, per channel by
default) and loaded back into the same :class:`onnx_ir.Model`. Symmetric weights have zero point 0,
so pruned zeros stay exact zeros and N:M patterns hold in the INT8 weights; the pass checks it.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
import time

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common as common_passes

from onnxprune import _io, _io_proto, _ort, _scratch
from onnxprune._fields import check_fields
from onnxprune.analysis.weights import find_weights, read_weight
from onnxprune.errors import CalibrationError, UnsupportedModelError, ValidationError
from onnxprune.passes._base import OnnxPrunePass, PruneResult, check_choice
from onnxprune.passes._qdq import quantized_nodes, quantized_weights, zeros_lost
from onnxprune.passes._quant_data import SourceReader
from onnxprune.passes._quant_ort import CALIBRATE_METHODS, QuantSettings, preprocess, quantize_file

__all__ = ["QuantizeConfig", "QuantizePass", "refuse_quantized"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class QuantizeConfig:
    """Static INT8 quantization (QDQ).

    Attributes:
        per_channel: One weight scale per output channel (``false``: one per tensor).
        activation_type: ``uint8`` (asymmetric activations, the fast path of onnxruntime on x86 CPUs)
            or ``int8``.
        calibrate_method: How activation ranges are fitted on the calibration data: ``minmax``,
            ``entropy`` or ``percentile``.
        reduce_range: 7-bit weights (for CPUs without VNNI, where 8-bit products can saturate).
        preprocess: Run ``quant_pre_process`` first (shape inference, graph optimization).
        op_types: Quantize only these op types (default: every op onnxruntime quantizes).
        exclude: Node-name globs left in float.
    """

    per_channel: bool = True
    activation_type: str = "uint8"
    calibrate_method: str = "minmax"
    reduce_range: bool = False
    preprocess: bool = True
    op_types: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_fields(self)
        check_choice("activation_type", self.activation_type, ("uint8", "int8"))
        check_choice("calibrate_method", self.calibrate_method, tuple(CALIBRATE_METHODS))


def refuse_quantized(model: ir.Model, what: str = "the model") -> None:
    """Refuse a model that is already quantized, naming a quantized node.

    Raises:
        UnsupportedModelError: ``model`` holds QuantizeLinear/DequantizeLinear (or other quantized) nodes.
    """
    found = quantized_nodes(model)
    if found:
        first = found[0]
        raise UnsupportedModelError(
            f"{what} is already quantized ({len(found)} quantized nodes, e.g. {first.op_type} "
            f"'{first.name or '?'}'); quantize its float version"
        )


def _float_zeros(model: ir.Model) -> dict[str, np.ndarray]:
    """Zero masks of the float weights that hold zeros (pruned ones), by tensor name."""
    masks = {}
    for weight in find_weights(model):
        values = read_weight(weight)
        if not np.all(values):
            masks[weight.name] = values == 0
    return masks


def _excluded(model: ir.Model, patterns: tuple[str, ...]) -> tuple[str, ...]:
    names = (node.name for node in ir.traversal.RecursiveGraphIterator(model.graph) if node.name)
    return tuple(name for name in names if any(fnmatch.fnmatchcase(name, p) for p in patterns))


#: The first default-domain opset whose DequantizeLinear takes ``axis`` (per-channel scales).
PER_CHANNEL_OPSET = 13


def ready_for_qdq(model: ir.Model, per_channel: bool) -> str | None:
    """Prepare ``model`` in place for onnxruntime's quantizer; what was done (``None``: nothing).

    Weights held by Constant nodes (older exporters, PaddlePaddle) become initializers, so that the
    quantizer sees them as weights; per-channel scales need opset 13 (DequantizeLinear's ``axis``),
    so an older model is converted by onnx's version converter.

    Raises:
        UnsupportedModelError: the conversion failed, or the model has external data (convert it
            first, or quantize per tensor).
    """
    done = []
    if common_passes.LiftConstantsToInitializersPass(size_limit=16)(model).modified:
        done.append("Constant weights lifted to initializers")
    opset = model.opset_imports.get("", PER_CHANNEL_OPSET)
    if per_channel and opset < PER_CHANNEL_OPSET:
        if _ort.needs_file(model):
            raise UnsupportedModelError(
                f"per-channel INT8 needs opset {PER_CHANNEL_OPSET} and the model is opset {opset} with external "
                "data: convert it first, or quantize --per-tensor"
            )
        try:
            new = _io_proto.converted_opset(model, PER_CHANNEL_OPSET)
        except Exception as e:  # the converter lacks adapters for some ops
            raise UnsupportedModelError(
                f"per-channel INT8 needs opset {PER_CHANNEL_OPSET}; converting the model from opset {opset} failed "
                f"({type(e).__name__}): quantize --per-tensor"
            ) from e
        _replace_contents(model, new)  # the graph holds the opset imports
        done.append(f"opset {opset} converted to {PER_CHANNEL_OPSET} for per-channel scales")
    return "; ".join(done) or None


def _replace_contents(model: ir.Model, new: ir.Model) -> None:
    """Make ``model`` (the same object) hold ``new``'s graph and functions."""
    model.graph = new.graph
    model.ir_version = new.ir_version
    model.functions.clear()
    model.functions.update(new.functions)


class QuantizePass(OnnxPrunePass):
    """INT8 QDQ quantization by onnxruntime, calibrated on the context's calibration data."""

    name = "quantize"
    config_class = QuantizeConfig

    def call(self, model: ir.Model) -> PruneResult:
        start = time.perf_counter()
        report = self.new_report()
        refuse_quantized(model)
        source = self.context.calibration
        if source is None or getattr(source, "random", False):
            raise CalibrationError(
                "quantize needs real calibration data (--calib PATH): activation ranges fitted to random "
                "inputs clip real ones"
            )
        prepared = ready_for_qdq(model, self.config.per_channel)
        if prepared:
            logger.info("quantize: %s", prepared)
        float_weights = {w.name: w for w in find_weights(model)}
        zeros = _float_zeros(model)
        self.context.float_model = model.clone()
        external = _ort.needs_file(model)
        settings = QuantSettings(
            per_channel=self.config.per_channel,
            activation_type=self.config.activation_type,
            calibrate_method=self.config.calibrate_method,
            reduce_range=self.config.reduce_range,
            op_types=self.config.op_types,
            nodes_to_exclude=_excluded(model, self.config.exclude),
            external_data=external,
        )
        reader = SourceReader(source, self.context.batch_size, self.context.progress)
        with _io.model_file(model) as path, _scratch.temp_dir("quant") as tmp:
            reason = "off (preprocess: false)"
            if self.config.preprocess:
                reason = preprocess(path, tmp / "pre.onnx", external_data=external)
                if reason is not None:
                    logger.warning("quantize: pre-processing failed (%s); quantizing the model as it is", reason)
            # with external data the result's tensors stay memory-mapped from the run's scratch folder
            target = (self.context.scratch.path if external else tmp) / f"quantized-{id(report):x}.onnx"
            quantize_file(path if reason else tmp / "pre.onnx", target, reader, settings)
            _replace_contents(model, _io.load(target))
        kept, lost, broken = zeros_lost(zeros, model)
        if lost:
            raise ValidationError(f"quantization moved {lost} pruned weights off zero (in '{broken[0]}')")
        quantized = quantized_weights(model)
        for weight in quantized:
            report.changed.append(
                {
                    "tensor": weight.float_name,
                    "op": weight.op_type,
                    "dtype": weight.values.dtype.name,
                    "size": int(weight.values.size),
                    "int8_zeros": int(np.count_nonzero(weight.is_zero())),
                    "scales": int(weight.zero_point.size),
                }
            )
        done = {w.float_name for w in quantized}
        for name, weight in float_weights.items():
            if name not in done:
                report.skip(
                    name,
                    weight.node_names[0],
                    weight.op_type,
                    "left in float (excluded, not quantized by onnxruntime, or folded by pre-processing)",
                )
        report.summary = {
            "quantized_weights": len(quantized),
            "qdq_nodes": len(quantized_nodes(model)),
            "per_channel": self.config.per_channel,
            "preprocess": reason or "ok",
            "prepared": prepared or "nothing to do",
            "zeros_kept": kept,
            "calibration_samples": source.num_samples,
        }
        self.context.analyses.invalidate()
        report.seconds = time.perf_counter() - start
        return PruneResult(model, True, report)
