"""Which layers can run on 2:4 sparse kernels: read from the weights and, when present, from TensorRT's log.

TensorRT (``trt_sparsity_enable``) uses sparse tensor-core kernels for Conv and fully connected layers
whose weights hold at most 2 nonzeros in every 4 consecutive values along the input channels. The
weights say which layers qualify; only the engine build says which ones TensorRT picked a sparse
kernel for (it may find a dense kernel faster). It logs both at info level:

    [TRT] (Sparsity) Layers eligible for sparse math: conv1, conv2, conv3
    [TRT] (Sparsity) TRT inference plan picked sparse implementation for layers: conv2, conv3

:func:`probe` builds a session on the target provider with that log captured.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx_ir as ir
import onnxruntime as ort

from onnxprune import _ort
from onnxprune._providers import ExecutionTarget, capture_native_stderr, check_session
from onnxprune.analysis.weights import find_weights, read_weight
from onnxprune.errors import ValidationError
from onnxprune.passes._scores import to_rows

__all__ = ["TRT_OPTIONS", "parse_trt_sparsity", "probe", "sparse_kernel_report", "two_four_weights"]

#: TensorRT provider options of ``validate --ep tensorrt``: sparse kernels on (the cache path is added per run).
TRT_OPTIONS = {"trt_sparsity_enable": "True", "trt_engine_cache_enable": "True"}

_ELIGIBLE = re.compile(r"Layers eligible for sparse math:\s*(.*)$", re.MULTILINE)
_PICKED = re.compile(r"picked sparse implementation for layers:\s*(.*)$", re.MULTILINE)


def two_four_weights(model: ir.Model) -> list[dict[str, Any]]:
    """Every prunable weight with whether it is 2:4 along its input axis (``two_four``) and its share of 2:4 groups."""
    found = []
    for weight in find_weights(model).weights:
        rows = to_rows(weight, read_weight(weight))
        k = rows.shape[1]
        entry = {"tensor": weight.name, "nodes": list(weight.node_names), "op": weight.op_type}
        entry["shape"] = list(weight.shape)
        if k % 4:
            found.append(
                {**entry, "two_four": False, "groups_2_4": 0.0, "reason": f"input dim {k} not a multiple of 4"}
            )
            continue
        counts = np.count_nonzero(rows.reshape(rows.shape[0], -1, 4), axis=-1)
        share = float(np.mean(counts <= 2)) if counts.size else 0.0
        found.append({**entry, "two_four": bool(counts.size) and share == 1.0, "groups_2_4": share})
    return found


def parse_trt_sparsity(log: str) -> dict[str, list[str]] | None:
    """TensorRT's sparsity lines: ``eligible`` and ``picked`` layer names (``None``: the log has neither)."""
    eligible, picked = _ELIGIBLE.findall(log), _PICKED.findall(log)
    if not eligible and not picked:
        return None

    def names(lines: list[str]) -> list[str]:
        return [name.strip() for line in lines for name in line.split(",") if name.strip()]

    return {"eligible": names(eligible), "picked": names(picked)}


def _in_layers(nodes: list[str], layers: list[str]) -> bool:
    """Whether a TensorRT layer (possibly fused: ``conv1 + relu1``) carries one of the ONNX nodes."""
    parts = {part.strip() for layer in layers for part in layer.split(" + ")}
    return any(node in parts for node in nodes)


def sparse_kernel_report(model: ir.Model, log: str | None) -> dict[str, Any]:
    """The model's 2:4 weights, and for each whether TensorRT found it eligible and picked a sparse kernel.

    ``eligible``/``sparse_kernel`` are ``None`` where the log said nothing (no TensorRT, or its info
    lines were not printed); ``log`` says which.
    """
    layers = two_four_weights(model)
    parsed = parse_trt_sparsity(log or "")
    for entry in layers:
        if parsed is None:
            entry["eligible"] = entry["sparse_kernel"] = None
        else:
            entry["eligible"] = _in_layers(entry["nodes"], parsed["eligible"])
            entry["sparse_kernel"] = _in_layers(entry["nodes"], parsed["picked"])
    return {
        "log": "absent" if parsed is None else "parsed",
        "trt_layers": parsed,
        "two_four": sum(e["two_four"] for e in layers),
        "weights": len(layers),
        "layers": layers,
    }


def probe(
    model: ir.Model, target: ExecutionTarget, feed: Mapping[str, np.ndarray], what: str, threads: int | None = None
) -> str:
    """Build a session of ``model`` on ``target`` and run ``feed`` once, with native logging captured.

    Checks that the requested provider loaded (:func:`check_session`) and returns the captured log
    (TensorRT builds its engine here: its sparsity lines are in it). With an engine cache in the
    provider options, later sessions of the same model reuse the engine built here.
    """
    ort.set_default_logger_severity(1)  # TensorRT's info lines come through the default logger
    try:
        with capture_native_stderr() as captured:
            sess = _ort.session(model, threads=threads, what=what, providers=target.providers)
            check_session(sess, target, what)
            try:
                sess.run(None, dict(feed))
            except Exception as e:
                raise ValidationError(f"onnxruntime fails running the {what} on --ep {target.ep}: {e}") from e
            del sess
    finally:
        ort.set_default_logger_severity(3)
    return captured[0] if captured else ""
