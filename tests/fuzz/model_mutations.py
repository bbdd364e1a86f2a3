"""Mutations of a serialized ONNX model: protobuf fields, external-data fields, files and bytes.

A :class:`Mutation` is plain data (so hypothesis prints and shrinks it); :func:`apply` edits a
``ModelProto`` in place and returns what it did, naming the tensor, node or field (``""`` when the
mutation does not apply to this model). Indices are taken modulo the size of their collection.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnx
from hypothesis import strategies as st
from onnx import helper

from tests.fuzz.seeds import DATA_NAME

__all__ = ["FileMutation", "Mutation", "apply", "apply_file", "file_mutations", "mutations"]

DIMS = (-1, -7, 0, 1, 2, 3, 5, 2**31, 2**40, 2**62)
DTYPES = (0, 2, 3, 6, 7, 8, 9, 10, 11, 14, 16, 17, 19, 21, 22, 23, 99, -3)
OPSETS = (0, 1, 6, 7, 11, 12, 21, 22, 99, -1)
IR_VERSIONS = (0, 1, 3, 11, 99, -1)
OP_TYPES = ("Foo", "", "Relu", "Sigmoid", "Identity", "Gemm", "MatMul", "Conv", "Add", "Constant", "If")
DOMAINS = ("com.unknown", "ai.onnx.ml", "com.microsoft", "ai.onnx")
NAMES = ("", "@dup", "@input", "@output", "@node_output", "x" * 300, "w/../../etc", "ü名 前", "a\nb")
ATTRS: dict[str, tuple[Any, ...]] = {
    "kernel_shape": ([0, 0], [-1, 3], [3], [100, 100], [3, 3, 3], [2**40, 1]),
    "pads": ([-1, -1, -1, -1], [1, 1], [100, 100, 100, 100], [0, 0, 0, 0, 0, 0], [2**40, 0, 0, 0]),
    "strides": ([0, 0], [-1, 1], [1], [100, 100]),
    "dilations": ([0, 0], [-2, 1], [5, 5]),
    "group": (0, -1, 3, 2**40),
    "transA": (1, 5, -1),
    "transB": (0, 5, -1),
    "axis": (7, -9, 0, 2**40),
    "alpha": (float("nan"), float("inf"), 0.0, -1.0),
    "auto_pad": ("SAME_UPPER", "VALID", "BOGUS"),
}


@dataclasses.dataclass(frozen=True)
class Mutation:
    """One edit of the model proto: ``kind`` on the ``target``-th element, to ``value``."""

    kind: str
    target: int
    value: Any

    def __repr__(self) -> str:
        return f"{self.kind}[{self.target}]={self.value!r}"


@dataclasses.dataclass(frozen=True)
class FileMutation:
    """One edit of the files: the serialized model's bytes or the external data file."""

    kind: str
    position: float = 0.0
    value: int = 0

    def __repr__(self) -> str:
        return f"{self.kind}@{self.position:.3f}={self.value}"


# --------------------------------------------------------------------------- collections


def _tensors(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    """Initializers and the tensors of Constant nodes (where external data may hide too)."""
    found = list(model.graph.initializer)
    for node in model.graph.node:
        found.extend(a.t for a in node.attribute if a.type == onnx.AttributeProto.TENSOR)
    return found


def _pick(items: Any, target: int) -> Any:
    return items[target % len(items)] if len(items) else None


def _value_names(model: onnx.ModelProto) -> list[str]:
    graph = model.graph
    names = [v.name for v in graph.input] + [t.name for t in graph.initializer]
    return names + [o for n in graph.node for o in n.output]


def _resolve_name(model: onnx.ModelProto, value: str, target: int, own: str) -> str:
    """Concrete name for the symbolic ``@dup``/``@input``/``@output``/``@node_output``/``@init``."""
    graph = model.graph
    pools = {
        "@dup": [t.name for t in graph.initializer if t.name != own],
        "@init": [t.name for t in graph.initializer if t.name != own],
        "@input": [v.name for v in graph.input],
        "@output": [v.name for v in graph.output],
        "@node_output": [o for n in graph.node for o in n.output if o != own],
        "@other": [n for n in _value_names(model) if n != own],
    }
    if value not in pools:
        return value
    return _pick(pools[value], target + 1) or "dangling"


def _ext(tensor: onnx.TensorProto) -> dict[str, str] | None:
    if tensor.data_location != onnx.TensorProto.EXTERNAL:
        return None
    return {e.key: e.value for e in tensor.external_data}


def _set_ext(tensor: onnx.TensorProto, key: str, value: str | None) -> None:
    entries = [(e.key, e.value) for e in tensor.external_data if e.key != key]
    if value is not None:
        entries.append((key, value))
    del tensor.external_data[:]
    for k, v in entries:
        entry = tensor.external_data.add()
        entry.key, entry.value = k, v


def _nbytes(tensor: onnx.TensorProto) -> int:
    ext = _ext(tensor) or {}
    if "length" in ext and ext["length"].lstrip("-").isdigit():
        return int(ext["length"])
    return len(tensor.raw_data)


# --------------------------------------------------------------------------- tensors


def _tensor_dim(model: onnx.ModelProto, t: int, value: Any, folder: Path) -> str:
    tensor = _pick(_tensors(model), t)
    axis, dim = value
    if tensor is None or not tensor.dims:
        return ""
    axis %= len(tensor.dims)
    tensor.dims[axis] = dim
    return f"tensor '{tensor.name}' dims[{axis}] = {dim}"


def _tensor_rank(model: onnx.ModelProto, t: int, value: Any, folder: Path) -> str:
    tensor = _pick(_tensors(model), t)
    if tensor is None:
        return ""
    dims = list(tensor.dims)
    dims = {"append1": [*dims, 1], "append2": [*dims, 2], "drop": dims[:-1], "clear": []}[value]
    del tensor.dims[:]
    tensor.dims.extend(dims)
    return f"tensor '{tensor.name}' dims = {dims}"


def _tensor_dtype(model: onnx.ModelProto, t: int, value: Any, folder: Path) -> str:
    tensor = _pick(_tensors(model), t)
    if tensor is None:
        return ""
    tensor.data_type = value
    return f"tensor '{tensor.name}' data_type = {value}"


def _tensor_raw(model: onnx.ModelProto, t: int, value: Any, folder: Path) -> str:
    tensor = _pick(_tensors(model), t)
    if tensor is None or _ext(tensor) is not None:
        return ""
    raw = tensor.raw_data
    tensor.raw_data = raw[: max(0, len(raw) + value)] if value < 0 else raw + b"\x7f" * value
    return f"tensor '{tensor.name}' raw_data {len(raw)} -> {len(tensor.raw_data)} bytes"


def _tensor_float_data(model: onnx.ModelProto, t: int, value: Any, folder: Path) -> str:
    tensor = _pick(_tensors(model), t)
    if tensor is None:
        return ""
    tensor.float_data.extend([value] * 3)
    return f"tensor '{tensor.name}' float_data += [{value}] * 3 (beside raw_data)"


def _tensor_name(model: onnx.ModelProto, t: int, value: Any, folder: Path) -> str:
    tensor = _pick(list(model.graph.initializer), t)
    if tensor is None:
        return ""
    old, tensor.name = tensor.name, _resolve_name(model, value, t, tensor.name)
    return f"initializer '{old}' renamed to {tensor.name!r} ({value})"


def _ext_field(key: str) -> Callable[[onnx.ModelProto, int, Any, Path], str]:
    def mutate(model: onnx.ModelProto, t: int, value: Any, folder: Path) -> str:
        tensor = _pick([x for x in _tensors(model) if _ext(x) is not None], t)
        if tensor is None:
            return ""
        size = (folder / DATA_NAME).stat().st_size if (folder / DATA_NAME).is_file() else 0
        symbols = {
            "@abs": str(folder / DATA_NAME),
            "@size": str(size),
            "@size+100": str(size + 100),
            "@nbytes-4": str(_nbytes(tensor) - 4),
            "@nbytes+4": str(_nbytes(tensor) + 4),
        }
        concrete = symbols.get(value, value)
        _set_ext(tensor, key, concrete)
        return f"tensor '{tensor.name}' external_data {key} = {concrete!r}"

    return mutate


def _ext_drop(model: onnx.ModelProto, t: int, value: Any, folder: Path) -> str:
    tensor = _pick([x for x in _tensors(model) if _ext(x) is not None], t)
    if tensor is None:
        return ""
    _set_ext(tensor, value, None)
    return f"tensor '{tensor.name}' external_data without '{value}'"


def _ext_add(model: onnx.ModelProto, t: int, value: Any, folder: Path) -> str:
    tensor = _pick([x for x in _tensors(model) if _ext(x) is not None], t)
    if tensor is None:
        return ""
    entry = tensor.external_data.add()
    entry.key, entry.value = value
    return f"tensor '{tensor.name}' external_data += {value}"


def _data_location(model: onnx.ModelProto, t: int, value: Any, folder: Path) -> str:
    tensor = _pick(_tensors(model), t)
    if tensor is None:
        return ""
    if value == "default" and _ext(tensor) is not None:
        tensor.data_location = onnx.TensorProto.DEFAULT
        return f"tensor '{tensor.name}' data_location DEFAULT with external_data entries kept"
    if value == "external" and _ext(tensor) is None:
        tensor.data_location = onnx.TensorProto.EXTERNAL
        return f"tensor '{tensor.name}' data_location EXTERNAL with no external_data entries"
    if value == "both" and _ext(tensor) is not None:
        tensor.raw_data = b"\0" * 16
        return f"tensor '{tensor.name}' external and 16 bytes of raw_data"
    return ""


def _to_constant(model: onnx.ModelProto, t: int, value: Any, folder: Path) -> str:
    """Move an initializer into a Constant node's ``value`` attribute (external data fields kept)."""
    graph = model.graph
    tensor = _pick(list(graph.initializer), t)
    if tensor is None:
        return ""
    copy = onnx.TensorProto()
    copy.CopyFrom(tensor)
    graph.initializer.remove(tensor)
    node = helper.make_node("Constant", [], [copy.name], name=f"const_{copy.name}")
    node.attribute.append(helper.make_attribute("value", copy))
    graph.node.insert(0, node)
    return f"initializer '{copy.name}' moved into a Constant node"


# --------------------------------------------------------------------------- nodes


def _node_input(model: onnx.ModelProto, n: int, value: Any, folder: Path) -> str:
    node = _pick(model.graph.node, n)
    slot, what = value
    if node is None:
        return ""
    if what == "@extra":
        node.input.append("x")
        return f"node '{node.name}' gets an extra input 'x'"
    if not node.input:
        return ""
    slot %= len(node.input)
    if what == "@drop":
        del node.input[-1]
        return f"node '{node.name}' loses its last input"
    if what == "@swap":
        if len(node.input) < 2:
            return ""
        node.input[0], node.input[1] = node.input[1], node.input[0]
        return f"node '{node.name}' inputs 0 and 1 swapped"
    old = node.input[slot]
    node.input[slot] = _resolve_name(model, what, n, old)
    return f"node '{node.name}' input[{slot}] '{old}' -> {node.input[slot]!r}"


def _node_output(model: onnx.ModelProto, n: int, value: Any, folder: Path) -> str:
    node = _pick(model.graph.node, n)
    if node is None or not node.output:
        return ""
    old = node.output[0]
    node.output[0] = _resolve_name(model, value, n, old)
    return f"node '{node.name}' output '{old}' -> {node.output[0]!r}"


def _node_attr(model: onnx.ModelProto, n: int, value: Any, folder: Path) -> str:
    node = _pick(model.graph.node, n)
    name, new = value
    if node is None:
        return ""
    kept = [a for a in node.attribute if a.name != name]
    existed = len(kept) != len(node.attribute)
    del node.attribute[:]
    node.attribute.extend(kept)
    if new == "@remove":
        return f"node '{node.name}' attribute {name} removed" if existed else ""
    node.attribute.append(helper.make_attribute(name, "garbled" if new == "@string" else new))
    return f"node '{node.name}' ({node.op_type}) attribute {name} = {new!r}"


def _node_field(field: str) -> Callable[[onnx.ModelProto, int, Any, Path], str]:
    def mutate(model: onnx.ModelProto, n: int, value: Any, folder: Path) -> str:
        node = _pick(model.graph.node, n)
        if node is None:
            return ""
        concrete = _pick([x.name for x in model.graph.node if x is not node], n) or "" if value == "@dup" else value
        old = getattr(node, field)
        setattr(node, field, concrete)
        return f"node '{node.name or old}' {field} {old!r} -> {concrete!r}"

    return mutate


def _node_delete(model: onnx.ModelProto, n: int, value: Any, folder: Path) -> str:
    node = _pick(model.graph.node, n)
    if node is None:
        return ""
    model.graph.node.remove(node)
    return f"node '{node.name}' ({node.op_type}) deleted"


def _node_duplicate(model: onnx.ModelProto, n: int, value: Any, folder: Path) -> str:
    node = _pick(model.graph.node, n)
    if node is None:
        return ""
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    model.graph.node.append(copy)
    return f"node '{node.name}' duplicated (its outputs produced twice)"


# --------------------------------------------------------------------------- graph and model


def _opset(model: onnx.ModelProto, _t: int, value: Any, folder: Path) -> str:
    default = [o for o in model.opset_import if o.domain in ("", "ai.onnx")]
    if not default:
        return ""
    default[0].version = value
    return f"opset_import '' version = {value}"


def _opset_domain(model: onnx.ModelProto, _t: int, value: Any, folder: Path) -> str:
    if value == "@remove":
        del model.opset_import[:]
        return "no opset_import"
    if value == "@second":
        model.opset_import.append(helper.make_opsetid("", 7))
        return "a second opset_import for '' (version 7)"
    if not model.opset_import:
        return ""
    model.opset_import[0].domain = value
    return f"opset_import domain '' -> {value!r}"


def _ir_version(model: onnx.ModelProto, _t: int, value: Any, folder: Path) -> str:
    model.ir_version = value
    return f"ir_version = {value}"


def _value_info_dims(values: Any, label: str) -> Callable[[onnx.ModelProto, int, Any, Path], str]:
    def mutate(model: onnx.ModelProto, t: int, value: Any, folder: Path) -> str:
        info = _pick(values(model), t)
        axis, dim = value
        if info is None or not info.type.tensor_type.shape.dim:
            return ""
        dims = info.type.tensor_type.shape.dim
        axis %= len(dims)
        if dim == "@param":
            dims[axis].dim_param = "M"
        elif dim == "@none":
            dims[axis].Clear()
        elif dim == "@drop":
            del dims[-1]
        elif dim == "@append":
            dims.add().dim_value = 1
        else:
            dims[axis].dim_value = dim
        return f"{label} '{info.name}' dim[{axis}] -> {dim}"

    return mutate


def _value_info_dtype(values: Any, label: str) -> Callable[[onnx.ModelProto, int, Any, Path], str]:
    def mutate(model: onnx.ModelProto, t: int, value: Any, folder: Path) -> str:
        info = _pick(values(model), t)
        if info is None:
            return ""
        info.type.tensor_type.elem_type = value
        return f"{label} '{info.name}' elem_type = {value}"

    return mutate


def _input_name(model: onnx.ModelProto, t: int, value: Any, folder: Path) -> str:
    info = _pick(model.graph.input, t)
    if info is None:
        return ""
    old, info.name = info.name, _resolve_name(model, value, t, info.name)
    return f"graph input '{old}' renamed to {info.name!r}"


def _graph_output(model: onnx.ModelProto, t: int, value: Any, folder: Path) -> str:
    graph = model.graph
    info = _pick(graph.output, t)
    if info is None:
        return ""
    if value == "@drop":
        graph.output.remove(info)
        return f"graph output '{info.name}' removed"
    if value == "@dup":
        graph.output.append(info)
        return f"graph output '{info.name}' listed twice"
    old, info.name = info.name, _resolve_name(model, value, t, info.name)
    return f"graph output '{old}' renamed to {info.name!r}"


def _intermediate_info(model: onnx.ModelProto, t: int, value: Any, folder: Path) -> str:
    """A value_info that lies about an intermediate's shape or type."""
    name = _pick([o for n in model.graph.node for o in n.output], t)
    if name is None:
        return ""
    shape, dtype = value
    model.graph.value_info.append(helper.make_tensor_value_info(name, dtype, shape))
    return f"value_info '{name}' declared {dtype} {shape}"


def _init_as_input(model: onnx.ModelProto, t: int, value: Any, folder: Path) -> str:
    tensor = _pick(model.graph.initializer, t)
    if tensor is None:
        return ""
    model.graph.input.append(helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims)))
    return f"initializer '{tensor.name}' also listed as a graph input"


_APPLY: dict[str, Callable[[onnx.ModelProto, int, Any, Path], str]] = {
    "tensor_dim": _tensor_dim,
    "tensor_rank": _tensor_rank,
    "tensor_dtype": _tensor_dtype,
    "tensor_raw": _tensor_raw,
    "tensor_float_data": _tensor_float_data,
    "tensor_name": _tensor_name,
    "ext_location": _ext_field("location"),
    "ext_offset": _ext_field("offset"),
    "ext_length": _ext_field("length"),
    "ext_drop": _ext_drop,
    "ext_add": _ext_add,
    "data_location": _data_location,
    "to_constant": _to_constant,
    "node_input": _node_input,
    "node_output": _node_output,
    "node_attr": _node_attr,
    "node_op_type": _node_field("op_type"),
    "node_domain": _node_field("domain"),
    "node_name": _node_field("name"),
    "node_delete": _node_delete,
    "node_duplicate": _node_duplicate,
    "opset": _opset,
    "opset_domain": _opset_domain,
    "ir_version": _ir_version,
    "input_dim": _value_info_dims(lambda m: m.graph.input, "graph input"),
    "output_dim": _value_info_dims(lambda m: m.graph.output, "graph output"),
    "input_dtype": _value_info_dtype(lambda m: m.graph.input, "graph input"),
    "output_dtype": _value_info_dtype(lambda m: m.graph.output, "graph output"),
    "input_name": _input_name,
    "graph_output": _graph_output,
    "intermediate_info": _intermediate_info,
    "init_as_input": _init_as_input,
}


def apply(mutation: Mutation, model: onnx.ModelProto, folder: Path) -> str:
    """Apply ``mutation`` to ``model`` (whose external data lies in ``folder``); what it did, or ``""``."""
    return _APPLY[mutation.kind](model, mutation.target, mutation.value, folder)


def apply_file(mutation: FileMutation, model_path: Path) -> str:
    """Apply a byte-level mutation to the model file or its external data file."""
    folder = model_path.parent
    if mutation.kind.startswith("data_"):
        data = folder / DATA_NAME
        if not data.is_file():
            return ""
        blob = data.read_bytes()
        if mutation.kind == "data_truncate":
            data.write_bytes(blob[: int(len(blob) * mutation.position)])
            return f"{DATA_NAME} truncated to {int(len(blob) * mutation.position)} of {len(blob)} bytes"
        if mutation.kind == "data_delete":
            data.unlink()
            return f"{DATA_NAME} deleted"
        if mutation.kind == "data_dir":
            data.unlink()
            data.mkdir()
            return f"{DATA_NAME} is a folder"
        outside = folder.parent / f"{folder.name}-outside.data"
        outside.write_bytes(blob)
        data.unlink()
        os.symlink(outside, data)
        return f"{DATA_NAME} is a symlink to a file outside the model's folder"
    blob = model_path.read_bytes()
    at = int(len(blob) * mutation.position)
    if mutation.kind == "truncate":
        model_path.write_bytes(blob[:at])
        return f"model truncated to {at} of {len(blob)} bytes"
    if mutation.kind == "flip":
        flipped = bytes([blob[at % len(blob)] ^ (mutation.value or 1)])
        model_path.write_bytes(blob[: at % len(blob)] + flipped + blob[at % len(blob) + 1 :])
        return f"model byte {at % len(blob)} xor {mutation.value or 1:#x}"
    if mutation.kind == "insert":
        model_path.write_bytes(blob[:at] + bytes([mutation.value]) * 7 + blob[at:])
        return f"7 bytes {mutation.value:#x} inserted at {at}"
    model_path.write_bytes(b"")
    return "model file empty"


# --------------------------------------------------------------------------- strategies

_targets = st.integers(0, 15)


def _m(kind: str, values: st.SearchStrategy[Any]) -> st.SearchStrategy[Mutation]:
    return st.builds(Mutation, st.just(kind), _targets, values)


def _attr_values() -> st.SearchStrategy[tuple[str, Any]]:
    return st.sampled_from(sorted(ATTRS)).flatmap(
        lambda name: st.tuples(st.just(name), st.sampled_from((*ATTRS[name], "@remove", "@string")))
    )


def mutations() -> st.SearchStrategy[Mutation]:
    """One protobuf-field mutation of any kind."""
    names = st.sampled_from(NAMES)
    io_dims = st.tuples(st.integers(0, 3), st.sampled_from((*DIMS, "@param", "@none", "@drop", "@append")))
    return st.one_of(
        _m("tensor_dim", st.tuples(st.integers(0, 3), st.sampled_from(DIMS))),
        _m("tensor_rank", st.sampled_from(("append1", "append2", "drop", "clear"))),
        _m("tensor_dtype", st.sampled_from(DTYPES)),
        _m("tensor_raw", st.sampled_from((-1, -4, -(1 << 20), 1, 4, 4096))),
        _m("tensor_float_data", st.sampled_from((1.0, float("nan")))),
        _m("tensor_name", names),
        _m("ext_location", st.sampled_from(("../weights.data", "/etc/hostname", "@abs", "missing.data", "", "."))),
        _m("ext_location", st.sampled_from(("sub/../weights.data", "./weights.data", "weights.data\0x"))),
        _m("ext_offset", st.sampled_from(("-1", "@size", "@size+100", str(2**40), "3", "abc", ""))),
        _m("ext_length", st.sampled_from(("0", "1", "@nbytes-4", "@nbytes+4", str(2**40), "-1", "abc"))),
        _m("ext_drop", st.sampled_from(("location", "offset", "length"))),
        _m("ext_add", st.sampled_from((("checksum", "0"), ("basepath", "/etc"), ("location", "other.data")))),
        _m("data_location", st.sampled_from(("default", "external", "both"))),
        _m("to_constant", st.none()),
        _m("node_input", st.tuples(st.integers(0, 3), st.sampled_from(("dangling", "", "@swap", "@other")))),
        _m("node_input", st.tuples(st.integers(0, 3), st.sampled_from(("@output", "@drop", "@extra")))),
        _m("node_output", st.sampled_from(("@dup", "@input", "@init", "", "@node_output"))),
        _m("node_attr", _attr_values()),
        _m("node_op_type", st.sampled_from(OP_TYPES)),
        _m("node_domain", st.sampled_from(DOMAINS)),
        _m("node_name", st.sampled_from(("", "@dup"))),
        _m("node_delete", st.none()),
        _m("node_duplicate", st.none()),
        _m("opset", st.sampled_from(OPSETS)),
        _m("opset_domain", st.sampled_from(("com.unknown", "@remove", "@second"))),
        _m("ir_version", st.sampled_from(IR_VERSIONS)),
        _m("input_dim", io_dims),
        _m("output_dim", io_dims),
        _m("input_dtype", st.sampled_from(DTYPES)),
        _m("output_dtype", st.sampled_from(DTYPES)),
        _m("input_name", st.sampled_from(("@init", "", "@output", "@node_output"))),
        _m("graph_output", st.sampled_from(("missing", "@input", "@init", "@drop", "@dup"))),
        _m("intermediate_info", st.tuples(st.sampled_from(([1, 99], ["N", 3], [], [2**40])), st.sampled_from((1, 7)))),
        _m("init_as_input", st.none()),
    )


def file_mutations() -> st.SearchStrategy[FileMutation]:
    """One byte-level mutation of the model file or its external data."""
    position = st.floats(0, 1, allow_nan=False)
    return st.one_of(
        st.builds(FileMutation, st.sampled_from(("truncate", "flip", "insert")), position, st.integers(0, 255)),
        st.builds(FileMutation, st.just("empty")),
        st.builds(FileMutation, st.just("data_truncate"), position),
        st.builds(FileMutation, st.sampled_from(("data_delete", "data_dir", "data_symlink_outside"))),
    )
