"""The torch view runs the transformer zoo (BERT, ViT, Llama/GQA/RoPE, Llama with a KV cache) from both
exporters: outputs equal onnxruntime's at other batch/sequence/past sizes than the export's, and
gradients reach every weight, so fine-tuning can train them.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from onnxprune.torchview import TorchView, unsupported_nodes, write_back
from onnxprune.torchview._registry import lookup
from tests.conftest import ort_run, to_ir
from tests.models.transformer_zoo import TRANSFORMERS, transformer_inputs, transformer_onnx

torch = pytest.importorskip("torch")

TOLERANCE = 1e-4
EXPORTERS = [pytest.param(False, id="torchscript17"), pytest.param(True, id="dynamo", marks=pytest.mark.slow)]


def _feeds(name: str, batch: int, seq: int, past: int) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in transformer_inputs(name, batch=batch, seq=seq, past=past, seed=9).items()}


@pytest.mark.parametrize("dynamo", EXPORTERS)
@pytest.mark.parametrize("name", TRANSFORMERS)
def test_view_equals_onnxruntime(name: str, dynamo: bool) -> None:
    proto = transformer_onnx(name, dynamo=dynamo)
    model = to_ir(proto)
    assert unsupported_nodes(model) == []
    view = TorchView(model)
    for batch, seq, past in ((2, 8, 5), (3, 11, 2)):
        feeds = _feeds(name, batch, seq, past)
        got, want = view.run_numpy(feeds), ort_run(proto, feeds)
        assert list(got) == list(want)
        for out in want:
            assert got[out].shape == want[out].shape
            diff = float(np.max(np.abs(got[out] - want[out])))
            assert diff <= TOLERANCE, f"{name} {out} at {(batch, seq, past)}: {diff:.3g}"


def _weight_names(model: ir.Model) -> set[str]:
    """Constant weights of MatMul/Gemm/Conv and embedding tables (Gather data)."""
    found = set()
    for node in model.graph:
        index = {"MatMul": 1, "Gemm": 1, "Conv": 1, "Gather": 0}.get(node.op_type)
        value = node.inputs[index] if index is not None else None
        if value is not None and value.const_value is not None and value.const_value.dtype.is_floating_point():
            found.add(value.name)
    return found


@pytest.mark.parametrize("dynamo", EXPORTERS)
@pytest.mark.parametrize("name", TRANSFORMERS)
def test_gradients_reach_every_weight_and_write_back(name: str, dynamo: bool) -> None:
    model = to_ir(transformer_onnx(name, dynamo=dynamo, dynamic=False))
    view = TorchView(model)
    outputs = view(**{k: torch.from_numpy(v) for k, v in _feeds(name, 2, 8, 5).items()})
    sum(out.square().mean() for out in outputs.values()).backward()
    weights = {n: p for n, p in view.named_tensors().items() if n in _weight_names(model)}
    assert len(weights) >= 4 * 2
    dead = [n for n, p in weights.items() if p.grad is None or not torch.any(p.grad != 0)]
    assert not dead, f"{name}: no gradient for {dead}"
    with torch.no_grad():
        for param in weights.values():
            param.mul_(0.5)
    written = write_back(view, model, list(weights))
    assert sorted(written) == sorted(weights)
    feeds = _feeds(name, 2, 8, 5)
    got, want = TorchView(model).run_numpy(feeds), ort_run(model, feeds)
    assert max(float(np.max(np.abs(got[k] - want[k]))) for k in want) <= TOLERANCE


def test_einsum_is_in_the_op_table() -> None:
    """TorchScript exports ``torch.outer`` (RoPE frequencies) as Einsum."""
    assert lookup("Einsum", 11) is None and lookup("Einsum", 12) is not None
    fn = lookup("Einsum", 17)
    a, b = torch.arange(3.0), torch.arange(4.0)
    torch.testing.assert_close(fn([a, b], {"equation": "i,j->ij"}), torch.outer(a, b))
