"""Where the time goes: onnxruntime per-node profile of a dense and a pruned model, by kind of node.

Explains an efficiency below 1: MACs count every multiply-accumulate alike, but a depthwise conv does
few MACs per byte it moves (memory-bound), and activations, pooling and layout reorders do none. The
profile uses the benchmark's session settings (1 intra-op thread, all graph optimizations, so convs run
as fused NCHWc kernels); a profiled Conv is classified by the weight shape onnxruntime records for it,
a model Conv (for its MACs) by its weight initializer.
"""

from __future__ import annotations

import collections
import json
import os
import tempfile
from typing import Any

from _structured_common import counts, logger

KINDS = ("depthwise conv", "1x1 conv", "kxk conv", "other ops")


def _conv_kind(node: Any) -> str:
    weight = node.inputs[1].const_value if len(node.inputs) > 1 and node.inputs[1] is not None else None
    if weight is None:
        return "kxk conv"
    shape = tuple(weight.shape)
    if node.attributes.get_int("group", 1) > 1 and shape[1] == 1:
        return "depthwise conv"
    return "1x1 conv" if all(d == 1 for d in shape[2:]) else "kxk conv"


def _kinds(model: Any) -> dict[str, str]:
    """Node name and output value name -> kind, for every Conv of the main graph."""
    kinds = {}
    for node in model.graph:
        if node.op_type == "Conv":
            kind = _conv_kind(node)
            kinds[node.name] = kind
            for out in node.outputs:
                kinds[out.name] = kind
    return kinds


def _event_kind(args: dict[str, Any]) -> str:
    """Kind of a profiled node from its op name and input shapes (data, weight [Cout, Cin/group, kh, kw])."""
    if args.get("op_name") != "Conv":
        return "other ops"
    shapes = [next(iter(t.values())) for t in args.get("input_type_shape", [])]
    if len(shapes) < 2 or len(shapes[1]) < 3:
        return "kxk conv"
    data, weight = shapes[0], shapes[1]
    if weight[1] == 1 and len(data) > 1 and data[1] > 1:
        return "depthwise conv"
    return "1x1 conv" if all(d == 1 for d in weight[2:]) else "kxk conv"


def _profile(model: Any, feed: dict[str, Any], runs: int) -> dict[str, float]:
    """Kernel ms per run by kind, from onnxruntime's profiler (1 thread, spinning off)."""
    import onnx_ir as ir
    import onnxruntime as ort

    from onnxprune import _ort

    with tempfile.TemporaryDirectory(prefix="bench-structured-") as tmp:
        options = _ort.session_options(1)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        sess = ort.InferenceSession(ir.to_proto(model).SerializeToString(), options, providers=["CPUExecutionProvider"])
        for _ in range(3):  # warm-up, not profiled
            sess.run(None, feed)
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(tmp, "profile")
        sess = ort.InferenceSession(ir.to_proto(model).SerializeToString(), options, providers=["CPUExecutionProvider"])
        for _ in range(runs):
            sess.run(None, feed)
        with open(sess.end_profiling()) as f:
            events = json.load(f)
    per_kind: collections.Counter[str] = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            per_kind[_event_kind(event.get("args", {}))] += event["dur"]
    return {kind: per_kind[kind] / runs / 1000 for kind in KINDS}


def _macs(model: Any, shapes: dict[str, tuple[int, ...]]) -> dict[str, int]:
    from onnxprune.analysis.flops import count_model
    from onnxprune.analysis.shapes import infer_shapes

    kinds = _kinds(model)
    out: collections.Counter[str] = collections.Counter()
    for cost in count_model(model, infer_shapes(model, shapes)).nodes:
        out[kinds.get(cost.node, "other ops")] += cost.macs
    return {kind: out[kind] for kind in KINDS}


def breakdown(ref: Any, cand: Any, feed: dict[str, Any], shapes: dict[str, tuple[int, ...]], runs: int = 20) -> dict:
    """Per kind: dense and pruned kernel ms (1 thread) and MACs."""
    ms = {"dense": _profile(ref, feed, runs), "pruned": _profile(cand, feed, runs)}
    macs = {"dense": _macs(ref, shapes), "pruned": _macs(cand, shapes)}
    total = {"dense": counts(ref, shapes)["macs"], "pruned": counts(cand, shapes)["macs"]}
    rows = {}
    for kind in KINDS:
        rows[kind] = {
            "dense_ms": ms["dense"][kind],
            "pruned_ms": ms["pruned"][kind],
            "dense_macs": macs["dense"][kind],
            "pruned_macs": macs["pruned"][kind],
        }
    logger.info(
        "  profile (1 thread): "
        + ", ".join(f"{k} {v['dense_ms']:.2f} -> {v['pruned_ms']:.2f} ms" for k, v in rows.items())
    )
    return {"runs": runs, "kinds": rows, "total_macs": total}
