"""Checks that every test-model builder yields a valid, runnable, deterministic model.

The full-size ResNet/MobileNet/BERT exports are marked ``slow`` (about 25 s in
total on 2 cores, dynamo exports dominate); ``-m "not slow"`` runs in ~7 s.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from tests.models import (
    HELPER_BUILDERS,
    bert_like_onnx,
    if_loop_model,
    mlp_model,
    random_inputs,
    tiny_cnn_onnx,
)

REPO_ROOT = Path(__file__).resolve().parent.parent


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return _session(model).run(None, feeds)


def _check_outputs(model: onnx.ModelProto, outs: list[np.ndarray], batch: int) -> None:
    """Outputs are finite and every symbolic output dim equals *batch*."""
    for spec, out in zip(model.graph.output, outs, strict=True):
        assert np.isfinite(out).all(), spec.name
        dims = spec.type.tensor_type.shape.dim
        assert out.ndim == len(dims), spec.name
        for i, d in enumerate(dims):
            expected = d.dim_value if d.HasField("dim_value") else batch
            assert out.shape[i] == expected, (spec.name, out.shape)


def _weight_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """All >=2-D tensors held by *graph* and its subgraphs: initializers and Constant values."""
    for t in graph.initializer:
        if len(t.dims) >= 2:
            yield t
    for node in graph.node:
        for attr in node.attribute:
            if node.op_type == "Constant" and attr.name == "value" and len(attr.t.dims) >= 2:
                yield attr.t
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _weight_tensors(attr.g)
            for g in attr.graphs:
                yield from _weight_tensors(g)


# --------------------------------------------------------------------------- #
# hand-built models
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("name", sorted(HELPER_BUILDERS))
def test_helper_model_valid_runs_and_is_deterministic(name: str) -> None:
    model = HELPER_BUILDERS[name]()
    onnx.checker.check_model(model, full_check=True)
    assert model.SerializeToString() == HELPER_BUILDERS[name]().SerializeToString()
    sess = _session(model)
    for batch in (2, 3):
        outs = sess.run(None, random_inputs(model, batch=batch, seed=batch))
        _check_outputs(model, outs, batch)


@pytest.mark.parametrize("name", sorted(HELPER_BUILDERS))
def test_helper_output_depends_on_every_weight(name: str) -> None:
    """Zeroing any weight tensor (incl. subgraph/Constant ones) changes the output.

    A second feed flips bool inputs and negates float inputs, so that both If
    branches are taken (``cond`` input, or ``ReduceSum(x) > 0``).
    """
    model = HELPER_BUILDERS[name]()
    feeds = random_inputs(model, batch=2)
    flipped = {k: np.asarray(~v if v.dtype == np.bool_ else -v) for k, v in feeds.items()}
    base = [_run(model, f)[0] for f in (feeds, flipped)]
    n_weights = len(list(_weight_tensors(model.graph)))
    assert n_weights >= 2
    for i in range(n_weights):
        changed = onnx.ModelProto()
        changed.CopyFrom(model)
        t = list(_weight_tensors(changed.graph))[i]
        t.CopyFrom(numpy_helper.from_array(np.zeros_like(numpy_helper.to_array(t)), t.name))
        outs = [_run(changed, f)[0] for f in (feeds, flipped)]
        assert any(not np.allclose(o, b) for o, b in zip(outs, base, strict=True)), (
            f"output does not depend on {t.name}"
        )


def test_mlp_matches_numpy() -> None:
    model = mlp_model()
    w = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    x = random_inputs(model, batch=4)["x"]
    ref = np.maximum(x @ w["W1"] + w["b1"], 0) @ w["W2"].T + w["b2"]
    np.testing.assert_allclose(_run(model, {"x": x})[0], ref, rtol=1e-5, atol=1e-5)


def test_if_model_branches_differ() -> None:
    model = if_loop_model()
    feeds = random_inputs(model)
    assert feeds["cond"].dtype == np.bool_ and feeds["cond"].shape == () and feeds["cond"]
    then_out = _run(model, feeds)[0]
    else_out = _run(model, {**feeds, "cond": np.array(False)})[0]
    assert not np.allclose(then_out, else_out)


def test_seed_changes_weights() -> None:
    assert mlp_model(seed=0).SerializeToString() != mlp_model(seed=1).SerializeToString()


# --------------------------------------------------------------------------- #
# torch exports (small models only)
# --------------------------------------------------------------------------- #


def test_import_does_not_import_torch() -> None:
    code = "import sys, tests.models; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True)


@pytest.mark.parametrize(("dynamo", "opset"), [(False, 13), (True, 20)])
def test_tiny_cnn_export(dynamo: bool, opset: int) -> None:
    torch = pytest.importorskip("torch")
    from tests.models import TinyCNN, seeded

    model = tiny_cnn_onnx(dynamo=dynamo)
    onnx.checker.check_model(model, full_check=True)
    assert {o.domain or "ai.onnx": o.version for o in model.opset_import}["ai.onnx"] == opset
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    n_params = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    assert n_params >= 8 * 27 + 16 * 72 + 16 * 32 + 32 * 10  # conv + fc weights
    [x_spec] = model.graph.input
    assert x_spec.type.tensor_type.shape.dim[0].dim_param == "N"

    module = seeded(0, lambda: TinyCNN(10))
    assert not module.training
    sess = _session(model)
    for batch in (2, 3):
        feeds = random_inputs(model, batch=batch, seed=batch)
        out = sess.run(None, feeds)[0]
        _check_outputs(model, [out], batch)
        with torch.no_grad():
            ref = module(torch.from_numpy(feeds["x"])).numpy()
        np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)
    # deterministic weights (bypass the per-process export cache)
    again = tiny_cnn_onnx.__wrapped__(dynamo=dynamo)
    assert [numpy_helper.to_array(t).tobytes() for t in again.graph.initializer] == [
        numpy_helper.to_array(t).tobytes() for t in model.graph.initializer
    ]


def test_export_cache_returns_independent_copies() -> None:
    pytest.importorskip("torch")
    first = tiny_cnn_onnx()
    first.graph.ClearField("initializer")
    assert len(tiny_cnn_onnx(dynamo=False, opset=None).graph.initializer) > 0


def test_tiny_bert_int64_inputs() -> None:
    """Token-id inputs: random_inputs infers the vocab from the embedding Gather."""
    pytest.importorskip("torch")
    model = bert_like_onnx(dynamo=False, vocab=50, hidden=32, layers=1, heads=2, intermediate=64, seq=8)
    feeds = random_inputs(model, batch=3)
    ids = feeds["input_ids"]
    assert ids.dtype == np.int64 and ids.shape == (3, 8) and 0 <= ids.min() and ids.max() < 50
    out = _run(model, feeds)[0]
    assert out.shape == (3, 8, 32) and np.isfinite(out).all()


def test_dynamo_rejects_unreachable_opset() -> None:
    """The dynamo exporter silently keeps opset 18 when down-conversion fails; we raise."""
    pytest.importorskip("torch")
    with pytest.raises(RuntimeError, match="requested 13"):
        tiny_cnn_onnx(dynamo=True, opset=13)


# --------------------------------------------------------------------------- #
# slow: full-size exports (deselect with -m "not slow")
# --------------------------------------------------------------------------- #


@pytest.mark.slow
@pytest.mark.parametrize("dynamo", [False, True])
@pytest.mark.parametrize("which", ["resnet18", "mobilenetv2", "bert"])
def test_full_size_exports(which: str, dynamo: bool) -> None:
    torch = pytest.importorskip("torch")
    from tests import models as m

    build, make_module = {
        "resnet18": (m.resnet18_like_onnx, lambda: m.ResNet18Like(10, 64)),
        "mobilenetv2": (m.mobilenetv2_like_onnx, lambda: m.MobileNetV2Like(10, 1.0)),
        "bert": (m.bert_like_onnx, lambda: m.BertLikeEncoder()),
    }[which]
    model = build(dynamo=dynamo)
    onnx.checker.check_model(model, full_check=True)
    feeds = random_inputs(model, batch=2)
    out = _run(model, feeds)[0]
    module = m.seeded(0, make_module)
    with torch.no_grad():
        ref = module(torch.from_numpy(next(iter(feeds.values())))).numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-3, atol=1e-4)
