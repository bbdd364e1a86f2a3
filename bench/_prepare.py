"""Stage "prepare": export a benchmark model (torch) and write its calibration arrays, both cached."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from _common import CACHE, ROOT, SEED, calib_path, logger, model_path, rel


def _export(name: str) -> Any:
    sys.path.insert(0, str(ROOT))
    from tests import models

    if name == "resnet18":
        return models.resnet18_like_onnx(dynamo=False, opset=13, image=224)
    if name == "mobilenetv2":
        return models.mobilenetv2_like_onnx(dynamo=False, opset=13, image=224)
    if name == "bert":
        return models.bert_like_onnx(dynamo=False, opset=13, hidden=256, layers=4, seq=128)
    raise ValueError(f"unknown model {name!r}")


def _vocab(model: Any, input_name: str) -> int:
    """Row count of the embedding table a Gather indexes with ``input_name`` (else 1000)."""
    for node in model.graph:
        if node.op_type == "Gather" and len(node.inputs) > 1 and node.inputs[1] is not None:
            table = node.inputs[0]
            if node.inputs[1].name == input_name and table is not None and table.const_value is not None:
                return int(table.const_value.shape[0])
    return 1000


def stage_prepare(args: argparse.Namespace) -> dict[str, Any]:
    """Export (or reuse) the model, write (or reuse) its calibration arrays, describe both."""
    import numpy as np
    import onnx

    from onnxprune import _io
    from onnxprune.analysis.weights import find_weights
    from onnxprune.calibration.sources import input_specs

    name = args.model
    CACHE.mkdir(parents=True, exist_ok=True)
    path = model_path(name)
    export_s = None
    if path.is_file():
        logger.info("%s: using cached %s", name, rel(path))
    else:
        started = time.perf_counter()
        proto = _export(name)
        export_s = time.perf_counter() - started
        onnx.save(proto, str(path.with_suffix(".tmp")))
        path.with_suffix(".tmp").replace(path)
        logger.info("%s: exported in %.1f s to %s", name, export_s, rel(path))
    model = _io.load(path)
    specs = input_specs(model)
    calib = calib_path(name, args.samples)
    if not calib.is_file():
        rng = np.random.default_rng(SEED)
        arrays = {}
        for spec in specs:
            shape = (args.samples, *(d for d in spec.shape if d is not None))  # stacked along the batch axis
            if np.issubdtype(spec.dtype, np.floating):
                arrays[spec.name] = rng.standard_normal(shape, dtype=np.float32).astype(spec.dtype)
            else:  # token ids: uniform over the embedding table the input indexes
                vocab = _vocab(model, spec.name)
                arrays[spec.name] = rng.integers(0, vocab, size=shape).astype(spec.dtype)
        with open(calib.with_suffix(".tmp"), "wb") as f:
            np.savez(f, **arrays)
        calib.with_suffix(".tmp").replace(calib)
        logger.info("%s: wrote %d calibration samples to %s", name, args.samples, rel(calib))
    params = sum(
        int(np.prod(v.const_value.shape, dtype=np.int64))
        for g in model.graphs()
        for v in g.initializers.values()
        if v.const_value is not None and v.const_value.dtype.is_floating_point()
    )
    weights = find_weights(model)
    opset = model.opset_imports.get("", None)
    return {
        "model": name,
        "file": rel(path),
        "calibration_file": rel(calib),
        "export_s": export_s,
        "opset": opset,
        "inputs": {
            s.name: {"dtype": str(s.dtype), "shape": [d if d is not None else "N" for d in s.shape]} for s in specs
        },
        "params": params,
        "prunable_tensors": len(weights),
        "prunable_params": sum(w.size for w in weights),
        "nodes": sum(1 for _ in model.graph),
    }


def load_source(name: str, model: Any, samples: int) -> Any:
    """The cached calibration arrays of ``name`` as an :class:`ArraySource`."""
    import numpy as np

    from onnxprune.calibration.sources import ArraySource, input_specs

    with np.load(calib_path(name, samples), allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    return ArraySource(arrays, input_specs(model), f"{name} random calibration ({samples} samples)")
