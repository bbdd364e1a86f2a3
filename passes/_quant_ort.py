"""File-to-file INT8 quantization with ``onnxruntime.quantization``: pre-processing, then static QDQ.

onnxruntime's tools read and write model files; :mod:`onnxprune.passes.quantize` hands them a
temporary copy of the in-memory model and loads the result back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import tempfile
from pathlib import Path

from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType

from onnxprune.errors import UnsupportedModelError

__all__ = ["CALIBRATE_METHODS", "QuantSettings", "preprocess", "quantize_file"]

logger = logging.getLogger(__name__)

#: Calibration methods by the names configs use.
CALIBRATE_METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}
_ACTIVATION_TYPES = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}


@dataclasses.dataclass(frozen=True)
class QuantSettings:
    """What :func:`quantize_file` passes to ``quantize_static`` (see :class:`onnxprune.passes.QuantizeConfig`)."""

    per_channel: bool = True
    activation_type: str = "uint8"
    calibrate_method: str = "minmax"
    reduce_range: bool = False
    op_types: tuple[str, ...] = ()
    nodes_to_exclude: tuple[str, ...] = ()
    external_data: bool = False


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


def preprocess(source: Path, target: Path, *, external_data: bool) -> str | None:
    """Run ``quant_pre_process`` (shape inference, graph optimization) from ``source`` to ``target``.

    Returns ``None`` on success, else the reason it failed (``target`` then does not exist and the
    caller quantizes ``source`` as it is). Its own printing is captured and logged at debug level.
    It runs in a temporary working folder: onnxruntime's symbolic shape inference, when it fails,
    saves its partial model (``sym_shape_infer_temp.onnx`` and a data file) into the working folder.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    captured = io.StringIO()
    source, target = source.resolve(), target.resolve()
    try:
        with (
            tempfile.TemporaryDirectory(prefix="onnxprune-preprocess.") as cwd,
            contextlib.chdir(cwd),
            contextlib.redirect_stdout(captured),
        ):
            quant_pre_process(
                str(source),
                str(target),
                save_as_external_data=external_data,
                all_tensors_to_one_file=True,
                external_data_location=f"{target.name}.data" if external_data else None,
            )
    except Exception as e:  # symbolic shape inference or the optimizer refuse some graphs
        target.unlink(missing_ok=True)
        return _first_line(e)
    finally:
        if captured.getvalue().strip():
            logger.debug("quant_pre_process: %s", captured.getvalue().strip()[:2000])
    return None if target.is_file() else "quant_pre_process wrote no model"


#: With MinMax calibration, ranges are merged every this many batches (bounds the activations held in memory).
MERGE_EVERY_BATCHES = 8


def _extra_options(settings: QuantSettings) -> dict[str, object]:
    options: dict[str, object] = {"WeightSymmetric": True}
    if settings.calibrate_method == "minmax":
        options["CalibMaxIntermediateOutputs"] = MERGE_EVERY_BATCHES
    return options


def quantize_file(source: Path, target: Path, reader: CalibrationDataReader, settings: QuantSettings) -> None:
    """Quantize ``source`` to ``target``: QDQ, INT8 symmetric weights (zero point 0), calibrated by ``reader``.

    Weights are symmetric (``WeightSymmetric``), so a weight that is 0 stays exactly 0 after
    quantize→dequantize: pruned zeros and N:M patterns survive.

    Raises:
        UnsupportedModelError: onnxruntime's quantizer refused the model (its first line).
    """
    from onnxruntime.quantization import quantize_static

    try:
        quantize_static(
            str(source),
            str(target),
            reader,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(settings.op_types) or None,
            per_channel=settings.per_channel,
            reduce_range=settings.reduce_range,
            activation_type=_ACTIVATION_TYPES[settings.activation_type],
            weight_type=QuantType.QInt8,
            nodes_to_exclude=list(settings.nodes_to_exclude) or None,
            use_external_data_format=settings.external_data,
            calibrate_method=CALIBRATE_METHODS[settings.calibrate_method],
            extra_options=_extra_options(settings),
        )
    except Exception as e:
        raise UnsupportedModelError(f"onnxruntime cannot quantize the model ({_first_line(e)})") from e
