"""Malformed models are input errors: one line on stderr naming the file and the tensor or node, exit 2.

Every case builds its bad model in code, runs the CLI verbs that read a model, and checks the contract:
exit 2 (never 1, "internal error"), exactly one stderr line that names the file and the culprit, no
output written, every input file byte-identical.
"""

from __future__ import annotations

import dataclasses
import json
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner, Result
from onnx import TensorProto, helper, numpy_helper

from onnxprune import _integrity, _io
from onnxprune.cli import cli
from onnxprune.errors import ModelLoadError, UnsupportedModelError
from tests import models
from tests.conftest import sha256


def _invoke(*args: object) -> Result:
    return CliRunner().invoke(cli, ["--quiet", *map(str, args)])


def _hashes(folder: Path) -> dict[str, str]:
    return {p.name: sha256(p) for p in sorted(folder.iterdir()) if p.is_file()}


def _verbs(model: Path, out: Path) -> dict[str, list[object]]:
    return {
        "prune": ["prune", model, "-o", out, "--sparsity", "0.5"],
        "lowrank": ["lowrank", model, "-o", out, "--rank", "2"],
        "inspect": ["inspect", model],
        "inspect-ranks": ["inspect", "--ranks", model],
        "inspect-groups": ["inspect", "--groups", model],
        "validate": ["validate", model, model],
    }


VERBS = tuple(_verbs(Path(), Path()))


def _refused(result: Result, model: Path, *names: str) -> str:
    """The one stderr line of an exit-2 refusal, checked to name the model file and ``names``."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("onnxprune: error: "), lines[0]
    assert "internal error" not in lines[0]
    for name in (str(model), *names):
        assert name in lines[0], lines[0]
    return lines[0]


def _run_all_verbs(tmp_path: Path, model: Path, *names: str, verbs: tuple[str, ...] = VERBS) -> None:
    before = _hashes(model.parent)
    for verb in verbs:
        out = tmp_path / "out" / f"{verb}.onnx"
        _refused(_invoke(*_verbs(model, out)[verb]), model, *names)
        assert not out.exists()
        assert _hashes(model.parent) == before


# --------------------------------------------------------------------------------------------------
# bad models, built in code
# --------------------------------------------------------------------------------------------------


def _mlp() -> onnx.ModelProto:
    """x[N,16] -> MatMul(W1) -> Add(b1) -> Relu -> Gemm(W2, b2) -> y."""
    return models.mlp_model()


def _init(model: onnx.ModelProto, name: str) -> TensorProto:
    return next(t for t in model.graph.initializer if t.name == name)


def _with_constant(model: onnx.ModelProto, values: np.ndarray | None = None) -> TensorProto:
    """Feed Gemm's bias from a Constant node 'c' (tensor 'cv'); return that tensor to corrupt."""
    b2 = numpy_helper.to_array(_init(model, "b2")) if values is None else values
    node = helper.make_node("Constant", [], ["cst"], name="c", value=numpy_helper.from_array(b2, "cv"))
    model.graph.node.insert(0, node)
    model.graph.node[-1].input[2] = "cst"
    return model.graph.node[0].attribute[0].t


def _set_external(tensor: TensorProto, location: str, offset: int, length: int | None) -> None:
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    del tensor.external_data[:]
    entries = {"location": location, "offset": str(offset)}
    if length is not None:
        entries["length"] = str(length)
    for key, value in entries.items():
        tensor.external_data.add(key=key, value=value)


@dataclasses.dataclass(frozen=True)
class Case:
    """A malformed model: ``build`` mutates the MLP (and may write files into the folder)."""

    name: str
    build: Callable[[onnx.ModelProto, Path], None]
    names: tuple[str, ...]

    def write(self, folder: Path) -> Path:
        folder.mkdir()
        model = _mlp()
        self.build(model, folder)
        path = folder / "model.onnx"
        path.write_bytes(model.SerializeToString())
        return path


def _raw_short(m: onnx.ModelProto, _: Path) -> None:
    _init(m, "W1").raw_data = _init(m, "W1").raw_data[:-4]


def _raw_long(m: onnx.ModelProto, _: Path) -> None:
    _init(m, "W1").raw_data += b"\0" * 8


def _typed_count(m: onnx.ModelProto, _: Path) -> None:
    w1 = _init(m, "W1")
    values = numpy_helper.to_array(w1).ravel()
    w1.ClearField("raw_data")
    w1.float_data.extend(values[:-3].tolist())


def _huge(m: onnx.ModelProto, _: Path) -> None:
    del _init(m, "W1").dims[:]
    _init(m, "W1").dims.extend([2**20, 2**20])


def _negative(m: onnx.ModelProto, _: Path) -> None:
    _init(m, "W1").dims[0] = -16


def _duplicate(m: onnx.ModelProto, _: Path) -> None:
    again = TensorProto()
    again.CopyFrom(_init(m, "W1"))
    again.raw_data = (numpy_helper.to_array(again) * 3).astype(np.float32).tobytes()
    m.graph.initializer.append(again)


def _dtype_99(m: onnx.ModelProto, _: Path) -> None:
    _init(m, "W1").data_type = 99


def _produced_twice(m: onnx.ModelProto, _: Path) -> None:
    m.graph.node[1].output[0] = "h_mm"
    m.graph.node[2].input[0] = "h_mm"


def _never_produced(m: onnx.ModelProto, _: Path) -> None:
    m.graph.node[2].input[0] = "ghost"


def _cycle(m: onnx.ModelProto, _: Path) -> None:
    m.graph.node[0].input[0] = "h_relu"


def _huge_input(m: onnx.ModelProto, _: Path) -> None:
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 2**40


def _constant_huge(m: onnx.ModelProto, _: Path) -> None:
    _with_constant(m).dims[0] = 2**40


def _constant_short(m: onnx.ModelProto, _: Path) -> None:
    tensor = _with_constant(m)
    tensor.raw_data = tensor.raw_data[:-4]


def _constant_negative(m: onnx.ModelProto, _: Path) -> None:
    _with_constant(m).dims[0] = -10


def _constant_external_outside(m: onnx.ModelProto, folder: Path) -> None:
    (folder.parent / "secret.bin").write_bytes(b"\0" * 40)
    _set_external(_with_constant(m), "../secret.bin", 0, 40)


def _constant_external_short_length(m: onnx.ModelProto, folder: Path) -> None:
    tensor = _with_constant(m)
    (folder / "c.bin").write_bytes(tensor.raw_data + b"\xff" * 64)
    _set_external(tensor, "c.bin", 0, 8)


def _external_short_length(m: onnx.ModelProto, folder: Path) -> None:
    w1 = _init(m, "W1")
    (folder / "w.bin").write_bytes(w1.raw_data + b"\xff" * 64)
    _set_external(w1, "w.bin", 0, 1024)


def _external_past_end(m: onnx.ModelProto, folder: Path) -> None:
    w1 = _init(m, "W1")
    (folder / "w.bin").write_bytes(w1.raw_data)
    _set_external(w1, "w.bin", 4096, None)


def _external_through_missing_folder(m: onnx.ModelProto, folder: Path) -> None:
    w1 = _init(m, "W1")
    (folder / "w.bin").write_bytes(w1.raw_data)
    _set_external(w1, "sub/../w.bin", 0, None)  # resolves lexically to w.bin; the OS cannot open it (fuzz)


def _external_location_nul(m: onnx.ModelProto, folder: Path) -> None:
    w1 = _init(m, "W1")
    (folder / "w.bin").write_bytes(w1.raw_data)
    _set_external(w1, "w.bin\0x", 0, None)  # ValueError: embedded null byte (fuzz)


def _input_type_undefined(m: onnx.ModelProto, _: Path) -> None:
    m.graph.input[0].type.tensor_type.elem_type = 0  # TypeError in the calibration source (fuzz)


def _input_dim_zero(m: onnx.ModelProto, _: Path) -> None:
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 0  # outputs that run on no real input (fuzz)


def _flatten_without_input(m: onnx.ModelProto, _: Path) -> None:
    relu = next(n for n in m.graph.node if n.op_type == "Relu")
    del relu.input[:]  # IndexError in the channel analysis (fuzz)


def _input_type_99(m: onnx.ModelProto, _: Path) -> None:
    m.graph.input[0].type.tensor_type.elem_type = 99


def _string_transb(m: onnx.ModelProto, _: Path) -> None:
    gemm = m.graph.node[3]
    gemm.attribute[0].CopyFrom(helper.make_attribute("transB", "yes"))  # every Gemm reader crashed (TypeError)


def _sparse_initializer(m: onnx.ModelProto, _: Path) -> None:
    values = helper.make_tensor("sv", TensorProto.FLOAT, [2], [1.0, 2.0])
    indices = helper.make_tensor("si", TensorProto.INT64, [2], [0, 5])
    m.graph.sparse_initializer.append(helper.make_sparse_tensor(values, indices, [10]))


CASES = (
    Case("raw-data-short", _raw_short, ("'W1'", "[16, 32]", "2044 bytes")),
    Case("raw-data-long", _raw_long, ("'W1'", "[16, 32]", "2056 bytes")),
    Case("typed-data-count", _typed_count, ("'W1'", "509 values")),
    Case("2^40-elements", _huge, ("'W1'", "[1048576, 1048576]")),
    Case("negative-dims", _negative, ("'W1'", "[-16, 32]")),
    Case("duplicate-initializer", _duplicate, ("'W1'", "twice")),
    Case("unknown-data-type", _dtype_99, ("'W1'", "99")),
    Case("value-produced-twice", _produced_twice, ("'h_mm'", "fc1_add")),
    Case("input-never-produced", _never_produced, ("'ghost'", "relu")),
    Case("cycle", _cycle, ("'h_relu'", "fc1_matmul")),
    Case("2^40-input-dim", _huge_input, ("'x'", "1099511627776")),
    Case("constant-2^40-elements", _constant_huge, ("'cv'", "'c'", "[1099511627776]")),
    Case("constant-data-short", _constant_short, ("'cv'", "36 bytes")),
    Case("constant-negative-dims", _constant_negative, ("'cv'", "[-10]")),
    Case("constant-external-outside-folder", _constant_external_outside, ("'cv'", "outside the model's folder")),
    Case("constant-external-length-short", _constant_external_short_length, ("'cv'", "length 8")),
    Case("external-length-short", _external_short_length, ("'W1'", "length 1024", "2048 bytes")),
    Case("external-past-end", _external_past_end, ("'W1'", "w.bin", "6144")),
    Case("external-through-missing-folder", _external_through_missing_folder, ("'W1'", "sub/../w.bin", "missing")),
    Case("external-location-nul", _external_location_nul, ("'W1'", "NUL")),
    Case("sparse-initializer", _sparse_initializer, ("'sv'", "sparse")),
    Case("input-element-type-undefined", _input_type_undefined, ("input 'x'", "UNDEFINED")),
    Case("input-dim-zero", _input_dim_zero, ("input 'x'", "dim of 0")),
    Case("node-without-its-input", _flatten_without_input, ("relu", "0 inputs", "Relu takes 1 to 1")),
    Case("input-element-type-99", _input_type_99, ("input 'x'", "99")),
    Case("attribute-of-wrong-type", _string_transb, ("'transB'", "fc2_gemm", "STRING", "expects INT")),
)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_malformed_model_is_refused_by_every_verb(tmp_path: Path, case: Case) -> None:
    model = case.write(tmp_path / "model")
    _run_all_verbs(tmp_path, model, *case.names)


def test_malformed_teacher_and_recipe_model_are_refused(tmp_path: Path) -> None:
    """``finetune --teacher`` and ``run RECIPE`` load through the same checks."""
    good = tmp_path / "good" / "model.onnx"
    good.parent.mkdir()
    good.write_bytes(_mlp().SerializeToString())
    bad = CASES[0].write(tmp_path / "bad")
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.random.default_rng(0).standard_normal((8, 16)).astype(np.float32))
    out = tmp_path / "ft.onnx"
    _refused(_invoke("finetune", bad, "--teacher", good, "-o", out, "--calib", calib, "--steps", "1"), bad, "'W1'")
    _refused(_invoke("finetune", good, "--teacher", bad, "-o", out, "--calib", calib, "--steps", "1"), bad, "'W1'")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"model: {bad}\noutput: {out}\npasses:\n  - name: unstructured\n    config: {{sparsity: 0.5}}\n")
    _refused(_invoke("run", recipe), bad, "'W1'")
    assert not out.exists()


# --------------------------------------------------------------------------------------------------
# named regressions
# --------------------------------------------------------------------------------------------------


def test_duplicate_initializer_names_are_refused_not_resolved(tmp_path: Path) -> None:
    """onnxruntime used the last 'W1', onnxprune the first: a 0% prune changed outputs by 13.3."""
    model = next(c for c in CASES if c.name == "duplicate-initializer").write(tmp_path / "m")
    with pytest.raises(ModelLoadError, match="initializer 'W1' is defined twice"):
        _io.load(model)
    before = sha256(model)
    _refused(_invoke("prune", model, "-o", tmp_path / "p.onnx", "--sparsity", "0"), model, "'W1'")
    assert sha256(model) == before and not (tmp_path / "p.onnx").exists()


def test_2_to_40_elements_are_refused_before_anything_is_allocated(tmp_path: Path) -> None:
    model = next(c for c in CASES if c.name == "2^40-elements").write(tmp_path / "m")
    tracemalloc.start()
    try:
        with pytest.raises(ModelLoadError, match=r"'W1' declares dims \[1048576, 1048576\]"):
            _io.load(model)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4_000_000


def test_constant_with_external_data_outside_the_folder_is_refused_unread(tmp_path: Path) -> None:
    """It surfaced as a ValueError from onnx_ir (exit 1) when a verb first read the tensor."""
    model = next(c for c in CASES if c.name == "constant-external-outside-folder").write(tmp_path / "m")
    with pytest.raises(ModelLoadError, match="'cv'.*outside the model's folder"):
        _io.load(model)


def test_external_length_shorter_than_the_tensor_is_refused(tmp_path: Path) -> None:
    """The bytes after ``length`` belong to something else: never read past it."""
    model = next(c for c in CASES if c.name == "external-length-short").write(tmp_path / "m")
    with pytest.raises(ModelLoadError, match="length 1024 is shorter than the 2048 bytes"):
        _io.load(model)


def test_external_data_within_length_and_file_loads(tmp_path: Path) -> None:
    """The checks accept what they should: external data with exact length, offset and a longer length."""
    folder = tmp_path / "m"
    folder.mkdir()
    model = _mlp()
    w1, w2 = _init(model, "W1"), _init(model, "W2")
    (folder / "w.bin").write_bytes(w1.raw_data + w2.raw_data + b"\0" * 16)
    expected = {name: numpy_helper.to_array(_init(model, name)) for name in ("W1", "W2")}
    _set_external(w1, "w.bin", 0, len(w1.raw_data))
    _set_external(w2, "w.bin", 2048, None)
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())
    loaded = _io.load(path)
    for name, values in expected.items():
        np.testing.assert_array_equal(loaded.graph.initializers[name].const_value.numpy(), values)


def test_subgraph_and_function_defects_are_found(tmp_path: Path) -> None:
    """Tensors and names inside If/Loop bodies and model-local functions are checked as well."""
    proto = models.if_loop_model()
    if_node = next(node for node in proto.graph.node if node.op_type == "If")
    then_branch = next(attr.g for attr in if_node.attribute if attr.name == "then_branch")
    then_branch.initializer[0].raw_data = then_branch.initializer[0].raw_data[:-4]
    path = tmp_path / "if.onnx"
    path.write_bytes(proto.SerializeToString())
    _refused(_invoke("inspect", path), path, "'W_then'")

    proto = _mlp()
    proto.functions.append(
        helper.make_function("local", "f", ["a"], ["b"], [helper.make_node("Relu", ["nope"], ["b"])], [])
    )
    proto.opset_import.append(helper.make_opsetid("local", 1))
    path = tmp_path / "fn.onnx"
    path.write_bytes(proto.SerializeToString())
    _refused(_invoke("inspect", path), path, "local::f", "'nope'")


def test_valid_subgraphs_and_functions_load(tmp_path: Path) -> None:
    """Outer-scope references from subgraphs and function bodies are not mistaken for undefined values."""
    path = tmp_path / "if.onnx"
    path.write_bytes(models.if_loop_model().SerializeToString())
    _io.load(path)
    proto = _mlp()
    proto.functions.append(
        helper.make_function("local", "f", ["a"], ["b"], [helper.make_node("Relu", ["a"], ["b"])], [])
    )
    proto.opset_import.append(helper.make_opsetid("local", 1))
    proto.graph.node[2].op_type, proto.graph.node[2].domain = "f", "local"
    path = tmp_path / "fn.onnx"
    path.write_bytes(proto.SerializeToString())
    _io.load(path)


def _nan_model(tmp_path: Path) -> Path:
    model = _mlp()
    values = numpy_helper.to_array(_init(model, "W1")).copy()
    values[0, 0], values[1, 1], values[2, 2] = np.nan, np.nan, np.inf
    _init(model, "W1").CopyFrom(numpy_helper.from_array(values, "W1"))
    path = tmp_path / "nan" / "model.onnx"
    path.parent.mkdir()
    path.write_bytes(model.SerializeToString())
    return path


def test_nan_weights_are_refused_by_transforming_verbs(tmp_path: Path) -> None:
    model = _nan_model(tmp_path)
    _run_all_verbs(tmp_path, model, "'W1'", "3 non-finite", "2 NaN, 1 inf", verbs=("prune", "lowrank"))
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.ones((4, 16), np.float32))
    out = tmp_path / "ft.onnx"
    result = _invoke("finetune", model, "--teacher", model, "-o", out, "--calib", calib, "--steps", "1")
    _refused(result, model, "'W1'", "2 NaN, 1 inf")
    assert not out.exists()


def test_nan_weights_are_reported_by_inspect(tmp_path: Path) -> None:
    """``inspect --ranks`` crashed (SVD did not converge, exit 1); now the weight is listed, not factorized."""
    model = _nan_model(tmp_path)
    result = _invoke("inspect", "--ranks", "--json", model)
    assert result.exit_code == 0, result.output
    assert "NaN/inf" in next(row for row in json.loads(result.stdout) if row["tensor"] == "W1")["reason"]
    result = _invoke("inspect", "--json", model)
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)["nonfinite"]
    assert found == [{"tensor": "W1", "node": "fc1_matmul", "op_type": "MatMul", "nan": 2, "inf": 1}]
    result = _invoke("inspect", model)
    assert result.exit_code == 0 and "non-finite" in result.stdout


def test_infinity_outside_linear_weights_is_left_alone(tmp_path: Path) -> None:
    """A -inf attention-mask constant is legitimate; only Conv/Gemm/MatMul operands are scanned."""
    model = _mlp()
    model.graph.initializer.append(numpy_helper.from_array(np.full(10, -np.inf, np.float32), "mask"))
    model.graph.node.append(helper.make_node("Max", ["y_pre", "mask"], ["y"], name="masked"))
    model.graph.node[3].output[0] = "y_pre"
    path = tmp_path / "mask.onnx"
    path.write_bytes(model.SerializeToString())
    assert _integrity.nonfinite_weights(_io.load(path)) == []
    result = _invoke("prune", path, "-o", tmp_path / "p.onnx", "--sparsity", "0.5")
    assert result.exit_code == 0, result.output


def test_nonfinite_scan_streams_external_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """External weights are read in chunks through the file, never whole (nor memory-mapped)."""
    folder = tmp_path / "big"
    folder.mkdir()
    values = np.random.default_rng(0).standard_normal((256, 512)).astype(np.float32)
    values[100, 7] = np.nan
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 256])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 512])
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")],
        "g",
        [x],
        [y],
        [numpy_helper.from_array(values, "W")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(proto, folder / "model.onnx", save_as_external_data=True, location="w.bin", size_threshold=0)
    model = _io.load(folder / "model.onnx")
    monkeypatch.setattr(_integrity, "_CHUNK", 1024)
    tracemalloc.start()
    try:
        found = _integrity.nonfinite_weights(model)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert found == [_integrity.NonFinite("W", "mm", "MatMul", 1, 0)]
    assert peak < values.nbytes // 8
    with pytest.raises(UnsupportedModelError, match="weight 'W' of MatMul 'mm' holds 1 non-finite"):
        _integrity.require_finite_weights(model, folder / "model.onnx")


# --------------------------------------------------------------------------------------------------
# exit-code audit: inputs that onnxprune handles (0) or refuses naming the model that failed (2)
# --------------------------------------------------------------------------------------------------


def _string_weight(m: onnx.ModelProto) -> None:
    _init(m, "W1").CopyFrom(helper.make_tensor("W1", TensorProto.STRING, [16, 32], [b"a"] * 512))


def _unknown_domain(m: onnx.ModelProto) -> None:
    m.graph.node[2].domain = "com.nobody"
    m.opset_import.append(helper.make_opsetid("com.nobody", 1))


def _opset_99(m: onnx.ModelProto) -> None:
    m.opset_import[0].version = 99


def _unknown_attribute(m: onnx.ModelProto) -> None:
    m.graph.node[2].attribute.append(helper.make_attribute("bogus", 1))


def _negative_input_dim(m: onnx.ModelProto) -> None:
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = -1  # PaddleOCR models declare -1


def _negative_feature_dim(m: onnx.ModelProto) -> None:
    for dim in m.graph.input[0].type.tensor_type.shape.dim:
        dim.dim_value = -1  # inspect crashed here (exit 1): np.zeros of a negative dim


def _empty_weights(m: onnx.ModelProto) -> None:
    """A hidden layer of width 0 (onnxruntime runs it; prune and inspect --ranks divided by zero)."""
    for name, shape in (("W1", (16, 0)), ("b1", (0,)), ("W2", (10, 0))):
        _init(m, name).CopyFrom(numpy_helper.from_array(np.zeros(shape, np.float32), name))


def _failing_reshape(m: onnx.ModelProto) -> None:
    m.graph.initializer.append(numpy_helper.from_array(np.array([7, -1], np.int64), "odd_shape"))
    m.graph.node.append(helper.make_node("Reshape", ["y_pre", "odd_shape"], ["y"], name="odd_reshape"))
    m.graph.node[3].output[0] = "y_pre"
    m.graph.output[0].CopyFrom(helper.make_tensor_value_info("y", TensorProto.FLOAT, ["a", "b"]))


# (mutation, exit code of prune, of inspect, words the prune message must hold)
AUDIT = {
    "string-weight": (_string_weight, 2, 0, ("input model", "W1")),
    "unknown-domain": (_unknown_domain, 2, 0, ("input model", "com.nobody")),
    "opset-99": (_opset_99, 2, 0, ("input model",)),
    "unknown-attribute": (_unknown_attribute, 2, 0, ("input model", "bogus")),
    "negative-input-dim": (_negative_input_dim, 0, 0, ()),
    "negative-feature-dim": (_negative_feature_dim, 2, 0, ("--input-shape",)),
    "empty-weights": (_empty_weights, 0, 0, ()),
    "failing-at-runtime": (_failing_reshape, 2, 0, ("running the input model", "odd_reshape")),
}


@pytest.mark.parametrize("name", AUDIT)
def test_exit_codes_of_odd_models(tmp_path: Path, name: str) -> None:
    """Never exit 1 for input; an input defect is blamed on the input, not on "the result"."""
    mutate, prune_code, inspect_code, words = AUDIT[name]
    proto = _mlp()
    mutate(proto)
    path = tmp_path / "model.onnx"
    path.write_bytes(proto.SerializeToString())
    before = sha256(path)
    out = tmp_path / "out.onnx"
    result = _invoke("prune", path, "-o", out, "--sparsity", "0.5", "--importance", "magnitude")
    assert result.exit_code == prune_code, result.output
    if prune_code == 2:
        line = result.stderr.strip()
        assert len(line.splitlines()) == 1 and line.startswith("onnxprune: error: "), result.stderr
        assert "the result" not in line, line
        for word in words:
            assert word in line, line
        assert not out.exists()
    for verb in (["inspect"], ["inspect", "--ranks"], ["inspect", "--groups"]):
        result = _invoke(*verb, path)
        assert result.exit_code == inspect_code, (verb, result.output)
    assert sha256(path) == before
