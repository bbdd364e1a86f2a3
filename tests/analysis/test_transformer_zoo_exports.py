"""The transformer zoo's exports equal torch in onnxruntime, at the export shape and at other shapes.

Dynamo exports take 2-12 s each on the shared 2-core machine, so those cases are marked ``slow``.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from tests.conftest import ort_run
from tests.models.transformer_zoo import (
    CONFIG,
    TRANSFORMERS,
    build_transformer,
    input_names,
    output_names,
    transformer_inputs,
    transformer_onnx,
)

torch = pytest.importorskip("torch")

TOLERANCE = 1e-4
EXPORTERS = [pytest.param(False, id="torchscript17"), pytest.param(True, id="dynamo", marks=pytest.mark.slow)]
#: (batch, sequence, past) of the dynamic checks; the export ran at (2, 8, 5)
SHAPES = [(2, CONFIG.seq, CONFIG.past), (3, 11, 2), (1, 3, 7)]


def torch_outputs(name: str, feeds: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """The torch module's outputs on ``feeds``, by graph output name."""
    with torch.no_grad():
        out = build_transformer(name)(*feeds.values())
    out = out if isinstance(out, tuple) else (out,)
    return {n: t.numpy() for n, t in zip(output_names(name), out, strict=True)}


def max_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    """Largest absolute difference over the outputs of ``a`` (shapes must match)."""
    for name in a:
        assert a[name].shape == b[name].shape, (name, a[name].shape, b[name].shape)
    return max(float(np.max(np.abs(a[n] - b[n]))) for n in a)


def numpy_feeds(feeds: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in feeds.items()}


def _dims(value: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


@pytest.mark.parametrize("dynamo", EXPORTERS)
@pytest.mark.parametrize("name", TRANSFORMERS)
def test_dynamic_export_equals_torch(name: str, dynamo: bool) -> None:
    proto = transformer_onnx(name, dynamo=dynamo)
    onnx.checker.check_model(proto, full_check=True)
    for batch, seq, past in SHAPES:
        feeds = transformer_inputs(name, batch=batch, seq=seq, past=past, seed=3)
        got = ort_run(proto, numpy_feeds(feeds))
        assert list(got) == output_names(name)
        diff = max_diff(got, torch_outputs(name, feeds))
        assert diff <= TOLERANCE, f"{name} at {(batch, seq, past)}: {diff:.3g}"


@pytest.mark.parametrize("dynamo", EXPORTERS)
@pytest.mark.parametrize("name", TRANSFORMERS)
def test_static_export_equals_torch(name: str, dynamo: bool) -> None:
    proto = transformer_onnx(name, dynamo=dynamo, dynamic=False)
    assert all(isinstance(d, int) and d > 0 for v in proto.graph.input for d in _dims(v))
    feeds = transformer_inputs(name, seed=4)
    assert max_diff(ort_run(proto, numpy_feeds(feeds)), torch_outputs(name, feeds)) <= TOLERANCE


@pytest.mark.parametrize("dynamo", EXPORTERS)
@pytest.mark.parametrize("name", TRANSFORMERS)
def test_dynamic_axes_are_symbolic(name: str, dynamo: bool) -> None:
    proto = transformer_onnx(name, dynamo=dynamo)
    inputs = {v.name: _dims(v) for v in proto.graph.input}
    assert all(isinstance(dims[0], str) for dims in inputs.values())  # batch
    if name != "vit":
        assert isinstance(inputs["input_ids"][1], str)
    if name == "llama_kv":
        assert all(isinstance(dims[2], str) for n, dims in inputs.items() if n.startswith("past"))


def _producer_ops(proto: onnx.ModelProto) -> dict[str, str]:
    return {out: node.op_type for node in proto.graph.node for out in node.output}


@pytest.mark.parametrize("dynamo", EXPORTERS)
def test_bert_head_views_reshape_to_computed_shapes(dynamo: bool) -> None:
    """HF's ``x.size()[:-1] + (heads, head_dim)`` view: the Reshape target is a Concat of a Shape's pieces."""
    proto = transformer_onnx("bert", dynamo=dynamo)
    producers = _producer_ops(proto)
    reshapes = [n for n in proto.graph.node if n.op_type == "Reshape"]
    assert len(reshapes) == 4 * CONFIG.layers  # Q, K, V views and the context merge per layer
    assert all(producers.get(n.input[1]) == "Concat" for n in reshapes)


@pytest.mark.parametrize("name", TRANSFORMERS)
def test_input_names_follow_the_example_inputs(name: str) -> None:
    assert list(transformer_inputs(name)) == input_names(name)
