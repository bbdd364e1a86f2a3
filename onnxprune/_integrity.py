"""Model-integrity checks: a malformed model is refused with one line naming the file and the tensor or node.

Two kinds of check:

* :func:`check_proto` runs on every load, on the protobuf :mod:`onnxprune._io` parsed, before onnx_ir
  sees it (onnx_ir keeps one of two same-named initializers and drops sparse tensors without a word).
  It is O(nodes + tensors) plus one ``stat`` per external-data file and reads no external data; the
  length of inline ``raw_data`` comes as a copy from protobuf (one tensor at a time: 0.2 s for a
  512 MiB model whose parse takes 1.5 s, no higher peak memory). It refuses
  tensors whose data disagree with their dims or data type, negative dims, external data outside the
  model's folder or past its file's end (initializers, ``Constant`` attributes and subgraphs alike),
  duplicate initializers, values produced twice, node inputs nothing produces, attributes whose type
  is not the one the op's schema declares, and absurd input shapes.
* :func:`nonfinite_weights` reads the constant operands of Conv/ConvTranspose/Gemm/MatMul (the weights
  and biases the passes compute on) tensor by tensor, in chunks, and counts NaN/inf values; commands
  that transform a model refuse them (:func:`require_finite_weights`), ``inspect`` reports them. Other
  constants may hold an infinity legitimately (attention masks) and are not scanned.

This module never imports protobuf (only :mod:`onnxprune._io` does): :func:`check_proto` reads the
fields of the message it is handed.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxprune.analysis.weights import FLOAT_TYPES, constant_behind
from onnxprune.errors import ModelLoadError, UnsupportedModelError

__all__ = [
    "MAX_INPUT_ELEMENTS",
    "NonFinite",
    "check_proto",
    "nonfinite_weights",
    "require_finite_weights",
]

#: A graph input declaring more elements than this is refused (random calibration data would not fit).
MAX_INPUT_ELEMENTS = 2**32
_EXTERNAL = 1  # TensorProto.EXTERNAL
_ATTRIBUTE_TYPES = dict(  # AttributeProto.AttributeType
    enumerate("UNDEFINED FLOAT INT STRING TENSOR GRAPH FLOATS INTS STRINGS TENSORS GRAPHS".split())
) | {11: "SPARSE_TENSOR", 12: "SPARSE_TENSORS", 13: "TYPE_PROTO", 14: "TYPE_PROTOS"}
_DATA_TYPES = frozenset(int(t) for t in ir.DataType)  # 0 (UNDEFINED) is allowed for value infos
_LINEAR_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
_CHUNK = 1 << 22  # elements per read when scanning weights


def _dims(dims: Iterable[int]) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"


def _nbytes(dtype: ir.DataType, count: int) -> int:
    return (count * dtype.bitwidth + 7) // 8


def _typed_field(dtype: ir.DataType, count: int) -> tuple[str, int]:
    """The typed ``*_data`` field that holds a tensor of ``dtype`` and how many entries ``count`` elements need."""
    if dtype in (ir.DataType.FLOAT, ir.DataType.COMPLEX64):
        return "float_data", count * (2 if dtype == ir.DataType.COMPLEX64 else 1)
    if dtype in (ir.DataType.DOUBLE, ir.DataType.COMPLEX128):
        return "double_data", count * (2 if dtype == ir.DataType.COMPLEX128 else 1)
    if dtype == ir.DataType.INT64:
        return "int64_data", count
    if dtype in (ir.DataType.UINT32, ir.DataType.UINT64):
        return "uint64_data", count
    if dtype == ir.DataType.STRING:
        return "string_data", count
    per_entry = {4: 2, 2: 4}.get(dtype.bitwidth, 1)  # sub-byte types pack two or four per entry
    return "int32_data", -(-count // per_entry)


class _Checker:
    """One walk over a model proto; raises :class:`ModelLoadError` at the first defect."""

    def __init__(self, path: Path, get_schema: Callable[[str, int, str], Any] | None, opsets: Any) -> None:
        self.path = path
        self.folder = path.parent.resolve()
        self.file_sizes: dict[Path, int] = {}
        self.get_schema = get_schema
        self.schemas: dict[tuple[str, int, str], tuple[dict[str, int], int, int]] = {}
        self.opsets = {("" if o.domain == "ai.onnx" else o.domain): o.version for o in opsets}

    def fail(self, message: str) -> ModelLoadError:
        return ModelLoadError(f"{self.path}: {message}")

    # -- tensors -------------------------------------------------------------------------------

    def tensor(self, tensor: Any, what: str) -> None:
        """Data type, dims and data size of one TensorProto (``what`` names it in messages)."""
        if tensor.data_type not in _DATA_TYPES or tensor.data_type == ir.DataType.UNDEFINED:
            raise self.fail(f"{what} has unknown data type {tensor.data_type}")
        dtype = ir.DataType(tensor.data_type)
        dims = list(tensor.dims)
        if any(d < 0 for d in dims):
            raise self.fail(f"{what} declares negative dims {_dims(dims)}")
        count = math.prod(dims)
        if tensor.data_location == _EXTERNAL:
            self.external(tensor, what, dtype, dims, count)
            return
        if tensor.HasField("raw_data"):
            if dtype == ir.DataType.STRING:
                raise self.fail(f"{what} is a string tensor with raw_data (strings go in string_data)")
            need, have = _nbytes(dtype, count), len(tensor.raw_data)  # upb returns a copy: read it once
            if have != need:
                raise self.fail(
                    f"{what} declares dims {_dims(dims)} ({count} elements of {dtype.name}, {need} bytes) "
                    f"but holds {have} bytes"
                )
            return
        field, need = _typed_field(dtype, count)
        have = len(getattr(tensor, field))
        if have != need:
            raise self.fail(
                f"{what} declares dims {_dims(dims)} ({count} elements of {dtype.name}) "
                f"but holds {have} values in {field} (needs {need})"
            )

    def external(self, tensor: Any, what: str, dtype: ir.DataType, dims: list[int], count: int) -> None:
        """External data must lie inside the model's folder, within its file, ``length`` covering the tensor."""
        if dtype == ir.DataType.STRING:
            raise self.fail(f"{what} is a string tensor with external data (not allowed by ONNX)")
        entries = {entry.key: entry.value for entry in tensor.external_data}
        location = entries.get("location", "")
        if not location:
            raise self.fail(f"{what} is marked as external data but names no location")
        if "\0" in location:
            raise self.fail(f"{what}: external data location {location!r} holds a NUL byte")
        target = (self.folder / location).resolve()
        if not target.is_relative_to(self.folder):
            raise self.fail(f"{what} has external data at '{location}', outside the model's folder; not reading it")
        if not target.is_file() or not (self.folder / location).is_file():  # 'missing/../w.data' too
            raise self.fail(f"{what} refers to missing external data file '{location}'")
        numbers = {}
        for key in ("offset", "length"):
            text = entries.get(key)
            try:
                numbers[key] = int(text) if text is not None else None
            except ValueError:
                numbers[key] = -1
            if numbers[key] is not None and numbers[key] < 0:
                raise self.fail(f"{what}: external data {key} '{text}' is not a byte count")
        offset, length = numbers["offset"] or 0, numbers["length"]
        need = _nbytes(dtype, count)
        if length is not None and length < need:
            raise self.fail(
                f"{what}: external data length {length} is shorter than the {need} bytes its dims {_dims(dims)} "
                f"of {dtype.name} need; refusing to read past it"
            )
        if target not in self.file_sizes:
            self.file_sizes[target] = target.stat().st_size
        end, size = offset + max(need, length or 0), self.file_sizes[target]
        if end > size:
            raise self.fail(
                f"{what} needs bytes up to {end} of '{location}', which holds only {size} (truncated external data?)"
            )

    def attribute_types(self, node: Any) -> tuple[dict[str, int], int, int]:
        """Attribute name -> AttributeProto type code the op's schema declares, and its input count range.

        Unknown ops (no schema for the op, version or domain) declare nothing: onnxruntime judges them.
        """
        domain = "" if node.domain == "ai.onnx" else node.domain
        key = (node.op_type, self.opsets.get(domain, 0), domain)
        if key not in self.schemas:
            try:
                schema = self.get_schema(*key) if self.get_schema is not None else None
            except Exception:  # no schema for this op, version or domain: onnxruntime judges it
                schema = None
            self.schemas[key] = (
                ({}, 0, 1 << 30)
                if schema is None
                else ({k: int(a.type.value) for k, a in schema.attributes.items()}, schema.min_input, schema.max_input)
            )
        return self.schemas[key]

    def attributes(self, node: Any, label: str, outer: frozenset[str] | set[str]) -> None:
        """Attribute types and input count against the op's schema; tensors and subgraphs held by attributes."""
        declared, low, high = self.attribute_types(node)
        if not low <= len(node.input) <= high:
            raise self.fail(f"{label} has {len(node.input)} inputs; {node.op_type} takes {low} to {high}")
        for attr in node.attribute:
            if attr.ref_attr_name:
                continue
            expected = declared.get(attr.name)
            if expected is not None and attr.type and attr.type != expected:
                raise self.fail(
                    f"attribute '{attr.name}' of {label} has type {_ATTRIBUTE_TYPES.get(attr.type, attr.type)}; "
                    f"{node.op_type} expects {_ATTRIBUTE_TYPES.get(expected, expected)}"
                )
            for tensor in (*([attr.t] if attr.HasField("t") else []), *attr.tensors):
                self.tensor(tensor, f"tensor '{tensor.name}' (attribute '{attr.name}' of {label})")
            if attr.HasField("sparse_tensor") or len(attr.sparse_tensors):
                raise UnsupportedModelError(
                    f"{self.path}: attribute '{attr.name}' of {label} holds a sparse tensor (not supported)"
                )
            for graph in (*([attr.g] if attr.HasField("g") else []), *attr.graphs):
                self.graph(graph, outer, f"subgraph '{attr.name}' of {label}")

    # -- graphs --------------------------------------------------------------------------------

    def value_infos(self, infos: Iterable[Any], kind: str, *, cap: bool) -> list[str]:
        names = []
        for info in infos:
            tensor_type = info.type.tensor_type if info.type.HasField("tensor_type") else None
            if tensor_type is not None and tensor_type.elem_type not in _DATA_TYPES:
                raise self.fail(f"{kind} '{info.name}' has unknown element type {tensor_type.elem_type}")
            if cap and tensor_type is not None and tensor_type.elem_type == 0:
                raise self.fail(f"{kind} '{info.name}' declares no element type (UNDEFINED); it cannot be fed")
            shape = tensor_type.shape if tensor_type is not None and tensor_type.HasField("shape") else None
            # a negative dim is read as a dynamic one, as onnxruntime does (PaddleOCR models declare -1)
            dims = [d.dim_value for d in shape.dim if d.HasField("dim_value")] if shape is not None else []
            static = shape is not None and len(dims) == len(shape.dim) and all(d >= 0 for d in dims)
            if cap and shape is not None and 0 in dims:
                raise self.fail(f"{kind} '{info.name}' declares a dim of 0 in {_dims(dims)} (an empty input)")
            if cap and static and math.prod(dims) > MAX_INPUT_ELEMENTS:
                raise self.fail(
                    f"{kind} '{info.name}' declares shape {_dims(dims)} ({math.prod(dims)} elements, over "
                    f"the {MAX_INPUT_ELEMENTS} onnxprune accepts)"
                )
            names.append(info.name)
        return names

    def scope(
        self,
        nodes: Any,
        inputs: list[str],
        initializers: Any,
        outputs: list[str],
        outer: frozenset[str] | set[str],
        where: str,
    ) -> None:
        """One graph or function body: names defined once, in order, every input produced somewhere."""
        defined: dict[str, str] = {}
        for name in inputs:
            if name in defined:
                raise self.fail(f"{where}: input '{name}' is declared twice")
            defined[name] = "an input"
        seen_initializers: set[str] = set()
        for tensor in initializers:
            if tensor.name in seen_initializers:
                raise self.fail(
                    f"{where}: initializer '{tensor.name}' is defined twice (onnxruntime would use one, "
                    "onnx_ir the other); refusing an ambiguous model"
                )
            seen_initializers.add(tensor.name)
            self.tensor(tensor, f"initializer '{tensor.name}'")
            defined.setdefault(tensor.name, "an initializer")
        produced = {out for node in nodes for out in node.output if out}
        visible = outer | produced | set(defined)  # what subgraphs may read (in any order, as onnx_ir does)
        for index, node in enumerate(nodes):
            label = f"node '{node.name}' ({node.op_type})" if node.name else f"node #{index} ({node.op_type})"
            for name in node.input:
                if not name or name in defined or name in outer:
                    continue
                if name in produced:
                    raise self.fail(
                        f"{where}: {label} reads '{name}' before it is produced (a cycle, or nodes out of "
                        "topological order)"
                    )
                raise self.fail(f"{where}: {label} reads '{name}', which no node, input or initializer produces")
            self.attributes(node, label, visible)
            for name in node.output:
                if not name:
                    continue
                if name in defined:
                    raise self.fail(f"{where}: value '{name}' is produced twice ({defined[name]} and {label})")
                defined[name] = label
        for name in outputs:
            if name not in defined and name not in outer:
                raise self.fail(f"{where}: output '{name}' is not produced by any node, input or initializer")

    def graph(self, graph: Any, outer: frozenset[str] | set[str], where: str, *, top: bool = False) -> None:
        if len(graph.sparse_initializer):
            name = graph.sparse_initializer[0].values.name
            raise UnsupportedModelError(f"{self.path}: sparse initializer '{name}' (sparse tensors are not supported)")
        inputs = self.value_infos(graph.input, "input", cap=top)
        outputs = self.value_infos(graph.output, "output", cap=False)
        self.scope(graph.node, inputs, graph.initializer, outputs, outer, where)


_STRING = 9  # FieldDescriptor.TYPE_STRING
_MESSAGE = 11  # FieldDescriptor.TYPE_MESSAGE


def _check_text(message: Any, path: Path, where: str = "model") -> None:
    """Refuse text fields that are not UTF-8 (protobuf hands them over as bytes; writing them back fails).

    A tensor's data fields are not listed (that would copy ``raw_data``): only its name, doc string
    and external-data entries are text.
    """
    if message.DESCRIPTOR.name == "TensorProto":
        fields = [(message.DESCRIPTOR.fields_by_name[n], getattr(message, n)) for n in ("name", "doc_string")]
        fields.append((message.DESCRIPTOR.fields_by_name["external_data"], message.external_data))
    else:
        fields = message.ListFields()
    for field, value in fields:
        repeated = field.is_repeated if hasattr(field, "is_repeated") else field.label == 3  # LABEL_REPEATED
        values = value if repeated else (value,)
        if field.type == _STRING:
            bad = next((v for v in values if isinstance(v, bytes)), None)
            if bad is not None:
                raise ModelLoadError(f"{path}: {where}.{field.name} is not UTF-8 text ({bad[:40]!r})")
        elif field.type == _MESSAGE:
            for i, item in enumerate(values):
                _check_text(item, path, f"{where}.{field.name}[{i}]")


def check_proto(proto: Any, path: Path, get_schema: Callable[[str, int, str], Any] | None = None) -> None:
    """Refuse a malformed model before anything is built from it; reads no external data.

    Args:
        proto: The ``onnx.ModelProto`` :mod:`onnxprune._io` parsed (external data not loaded).
        path: The file it came from (external-data locations are relative to its folder).
        get_schema: ``onnx.defs.get_schema``, to check attribute types against each op's schema
            (``transB`` as a string crashed every reader of Gemm); ``None`` skips that check.

    Raises:
        ModelLoadError: a tensor's data disagree with its dims or type, a dim is negative, external
            data lie outside the model's folder or past its file's end, a name is defined twice, a node
            reads a value nothing produces (or produces later), an attribute has the wrong type for its
            op, or an input shape is absurd.
        UnsupportedModelError: the model holds sparse tensors.
    """
    _check_text(proto, path)
    _Checker(path, get_schema, proto.opset_import).graph(
        proto.graph, frozenset(), f"graph '{proto.graph.name}'", top=True
    )
    for function in proto.functions:
        checker = _Checker(path, get_schema, [*proto.opset_import, *function.opset_import])
        where = f"function '{function.domain}::{function.name}'"
        checker.scope(function.node, list(function.input), (), list(function.output), frozenset(), where)


# -- non-finite weights --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class NonFinite:
    """A weight holding NaN or infinite values, and the node that reads it."""

    tensor: str
    node: str
    op_type: str
    nan: int
    inf: int

    def describe(self) -> str:
        """``weight 'W' of MatMul 'fc1' holds 3 non-finite values (2 NaN, 1 inf)``."""
        return (
            f"weight '{self.tensor}' of {self.op_type} '{self.node}' holds {self.nan + self.inf} non-finite "
            f"values ({self.nan} NaN, {self.inf} inf)"
        )


def _chunks(tensor: ir.TensorProtocol) -> Iterator[np.ndarray]:
    """The tensor's values in flat chunks; external data is read from its file, never mapped whole."""
    if isinstance(tensor, ir.ExternalTensor):
        dtype = np.dtype(tensor.dtype.numpy()).newbyteorder("<")
        with open(tensor.path, "rb") as f:
            f.seek(tensor.offset or 0)
            left = tensor.size
            while left:
                count = min(left, _CHUNK)
                data = f.read(count * dtype.itemsize)
                if len(data) < count * dtype.itemsize:  # the file shrank since load
                    raise ModelLoadError(f"tensor '{tensor.name}': external data file '{tensor.location}' is truncated")
                yield np.frombuffer(data, dtype=dtype)
                left -= count
        return
    flat = tensor.numpy().reshape(-1)
    for start in range(0, flat.size, _CHUNK):
        yield flat[start : start + _CHUNK]


def _count_nonfinite(tensor: ir.TensorProtocol) -> tuple[int, int]:
    nan = inf = 0
    for chunk in _chunks(tensor):
        nan += int(np.count_nonzero(np.isnan(chunk)))
        inf += int(np.count_nonzero(np.isinf(chunk)))
    return nan, inf


def nonfinite_weights(model: ir.Model) -> list[NonFinite]:
    """The floating-point constant operands of Conv/ConvTranspose/Gemm/MatMul holding NaN or inf values.

    Reads each such tensor once, in chunks of a few MB (external data through the file, not mapped),
    so a model larger than memory can be scanned.
    """
    found: list[NonFinite] = []
    seen: set[int] = set()
    for node in ir.traversal.RecursiveGraphIterator(model.graph):
        if node.op_type not in _LINEAR_OPS or node.domain not in ("", "ai.onnx"):
            continue
        for value in node.inputs:
            tensor = constant_behind(value) if value is not None else None
            if tensor is None or id(tensor) in seen or tensor.dtype not in FLOAT_TYPES:
                continue
            seen.add(id(tensor))
            nan, inf = _count_nonfinite(tensor)
            if nan or inf:
                assert value is not None
                found.append(NonFinite(value.name or "", node.name or "", node.op_type, nan, inf))
    return found


def require_finite_weights(model: ir.Model, origin: str | Path = "model") -> None:
    """Refuse (one line) a model whose weights hold NaN/inf: no pass can transform them meaningfully.

    Raises:
        UnsupportedModelError: naming the first such tensor, its NaN and inf counts, and how many more.
    """
    found = nonfinite_weights(model)
    if found:
        more = f" (and {len(found) - 1} more tensors)" if len(found) > 1 else ""
        raise UnsupportedModelError(f"{origin}: {found[0].describe()}{more}; refusing to transform it")
