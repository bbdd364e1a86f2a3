"""The protobuf half of :mod:`onnxprune._io`: temporary model files, stripped and cut protos, the checker.

Nothing else in onnxprune imports ``onnx`` (a ruff ban keeps it so). Everything here takes and
returns ``onnx_ir`` models, bytes, paths or plain data; protos stay inside.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir

from onnxprune import _scratch
from onnxprune.errors import ValidationError

__all__ = [
    "BY_REFERENCE_BYTES",
    "GraphCut",
    "by_reference",
    "check_model",
    "converted_opset",
    "cut_to_outputs",
    "inferred_shapes",
    "inline_bytes",
    "model_bytes",
    "model_bytes_and_initializers",
    "model_file",
    "placeholders",
    "stripped_file",
]

_KEEP_BYTES = 4096


@contextlib.contextmanager
def inlined(model: ir.Model) -> Iterator[None]:
    """Temporarily replace external tensors by in-memory copies so that they serialize inline."""
    swapped = []
    for graph in model.graphs():
        for value in graph.initializers.values():
            tensor = value.const_value
            if isinstance(tensor, ir.ExternalTensor):
                swapped.append((value, tensor))
                value.const_value = ir.Tensor(tensor.numpy(), name=tensor.name)
    try:
        yield
    finally:
        for value, tensor in swapped:
            value.const_value = tensor


def converted_opset(model: ir.Model, version: int) -> ir.Model:
    """``model`` (weights inline) converted to default-domain opset ``version`` by onnx's version converter."""
    from onnx import version_converter

    return ir.serde.deserialize_model(version_converter.convert_version(ir.serde.serialize_model(model), version))


def inline_bytes(model: ir.Model) -> bytes:
    """The whole model serialized, external tensors included (for small models: digests, sessions)."""
    with inlined(model):
        return ir.to_proto(model).SerializeToString()


def _names_used(graph: onnx.GraphProto) -> set[str]:
    """Every value name read by a node of ``graph`` or of its subgraphs (outer-scope references included)."""
    used: set[str] = set()
    for node in graph.node:
        used.update(node.input)
        for attr in node.attribute:
            for sub in (*([attr.g] if attr.HasField("g") else []), *attr.graphs):
                used |= _names_used(sub)
    return used


def cut_to_outputs(graph: onnx.GraphProto, outputs: Sequence[str]) -> None:
    """Make ``outputs`` the graph's only outputs and drop every node and initializer they do not need.

    onnxruntime runs every node of a graph, whatever is fetched, so a calibration run that needs only
    early activations would otherwise pay for the whole model. Graph inputs are kept (feeds stay valid).
    """
    needed = set(outputs)
    kept = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(node.input)
            for attr in node.attribute:
                for sub in (*([attr.g] if attr.HasField("g") else []), *attr.graphs):
                    needed |= _names_used(sub)
    known = {o.name: o for o in graph.output}
    new_outputs = [known.get(name) or onnx.ValueInfoProto(name=name) for name in outputs]
    del graph.node[:]
    graph.node.extend(reversed(kept))
    initializers = [t for t in graph.initializer if t.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    del graph.output[:]
    graph.output.extend(new_outputs)


def _set_outputs(proto: onnx.ModelProto, extra_outputs: Sequence[str], only: bool) -> None:
    if only:
        cut_to_outputs(proto.graph, extra_outputs)
    else:
        proto.graph.output.extend(onnx.ValueInfoProto(name=name) for name in extra_outputs)


def model_bytes(model: ir.Model, extra_outputs: Sequence[str] = (), *, only: bool = False) -> bytes:
    """The model serialized (tensors as they are), with ``extra_outputs`` added (``only``: the only outputs)."""
    proto = ir.to_proto(model)
    _set_outputs(proto, extra_outputs, only)
    return proto.SerializeToString()


@contextlib.contextmanager
def model_file(model: ir.Model, extra_outputs: Sequence[str] = (), *, only: bool = False) -> Iterator[Path]:
    """The model saved in an owned temporary folder (weights as external data), with the outputs set.

    The folder is removed when the block ends, also on exceptions and on signals the CLI turns into
    them; one a killed run leaves is removed by a later run (see :mod:`onnxprune._scratch`).
    """
    with _scratch.temp_dir("ort") as tmp:
        path = tmp / "model.onnx"
        ir.save(model, path, external_data="model.onnx.data", size_threshold_bytes=1024)
        if extra_outputs:
            proto = onnx.load(path, load_external_data=False)
            _set_outputs(proto, extra_outputs, only)
            onnx.save(proto, path)
        yield path


#: Initializers of at least this many bytes reach onnxruntime by reference (the size :func:`model_file`
#: writes as external data: smaller ones, such as Reshape shapes, stay visible to shape inference).
BY_REFERENCE_BYTES = 1024
_SHAREABLE = frozenset(
    {
        ir.DataType.FLOAT,
        ir.DataType.FLOAT16,
        ir.DataType.DOUBLE,
        ir.DataType.INT8,
        ir.DataType.UINT8,
        ir.DataType.INT16,
        ir.DataType.UINT16,
        ir.DataType.INT32,
        ir.DataType.UINT32,
        ir.DataType.INT64,
        ir.DataType.UINT64,
        ir.DataType.BOOL,
    }
)


def by_reference(tensor: ir.TensorProtocol | None) -> bool:
    """Whether a tensor goes to onnxruntime (and the checker) by reference: large, of a plain dtype."""
    return tensor is not None and tensor.nbytes >= BY_REFERENCE_BYTES and tensor.dtype in _SHAREABLE


@contextlib.contextmanager
def _swapped(model: ir.Model, folder: Path) -> Iterator[dict[str, ir.TensorProtocol]]:
    """Swap the main graph's large initializers for empty external-data placeholders in ``folder``.

    Small external tensors are swapped for in-memory copies (inline in the proto, like the
    size threshold of :func:`model_file`). Yields the large tensors by initializer name; the model
    is restored on exit.
    """
    (folder / "placeholder").touch()
    swapped: list[tuple[ir.Value, ir.TensorProtocol]] = []
    try:
        for value in model.graph.initializers.values():
            tensor = value.const_value
            if tensor is None or value.name is None:
                continue
            if not by_reference(tensor):
                if isinstance(tensor, ir.ExternalTensor):
                    swapped.append((value, tensor))
                    value.const_value = ir.Tensor(np.array(tensor.numpy()), dtype=tensor.dtype, name=tensor.name)
                continue
            swapped.append((value, tensor))
            value.const_value = ir.ExternalTensor(
                "placeholder", 0, tensor.nbytes, tensor.dtype, shape=tensor.shape, name=tensor.name, base_dir=folder
            )
        yield {value.name: tensor for value, tensor in swapped if value.name is not None and by_reference(tensor)}
    finally:
        for value, tensor in swapped:
            value.const_value = tensor


@contextlib.contextmanager
def placeholders(model: ir.Model) -> Iterator[tuple[Path, dict[str, ir.TensorProtocol]]]:
    """An owned temporary folder, and ``model`` with its large initializers as empty placeholders in it.

    While the block runs the model's large initializers point to an empty external-data file in that
    folder; yields the folder and the swapped-out tensors by name (restored on exit).
    """
    with _scratch.temp_dir("ort") as tmp, _swapped(model, tmp) as tensors:
        yield tmp, tensors


@contextlib.contextmanager
def stripped_file(model: ir.Model) -> Iterator[Path]:
    """The model saved without its large initializers' data: they point to an empty placeholder file.

    Nothing is copied or read from external data; for the onnx checker on models of any size.
    """
    with _scratch.temp_dir("ort") as tmp:
        with _swapped(model, tmp):
            proto = ir.to_proto(model)
        path = tmp / "model.onnx"
        onnx.save(proto, path)
        yield path


def model_bytes_and_initializers(
    model: ir.Model, extra_outputs: Sequence[str] = (), *, only: bool = False
) -> tuple[bytes, frozenset[str]]:
    """:func:`model_bytes`, and the names of the initializers the (possibly cut) graph kept."""
    proto = ir.to_proto(model)
    _set_outputs(proto, extra_outputs, only)
    return proto.SerializeToString(), frozenset(t.name for t in proto.graph.initializer)


def check_model(model: ir.Model, what: str, *, needs_file: bool) -> None:
    """Run the onnx checker (through a temporary file without the large weights' data when ``needs_file``).

    Raises:
        ValidationError: the checker's first line.
    """
    try:
        if needs_file:
            with stripped_file(model) as path:  # external data is not read: no copy of the weights
                onnx.checker.check_model(str(path))
        else:
            onnx.checker.check_model(ir.to_proto(model))
    except onnx.checker.ValidationError as e:
        raise ValidationError(f"onnx checker rejects the {what}: {str(e).strip().splitlines()[0]}") from e


def referenced_files(path: Path) -> set[Path]:
    """The resolved external-data files the model file at ``path`` refers to (empty if unreadable)."""
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # an old or foreign file: nothing of ours to clean
        return set()
    found = set()
    graphs = [proto.graph]
    while graphs:
        graph = graphs.pop()
        tensors = list(graph.initializer)
        for node in graph.node:
            for attr in node.attribute:
                if attr.HasField("t"):
                    tensors.append(attr.t)
                tensors.extend(attr.tensors)
                graphs.extend([attr.g] if attr.HasField("g") else [])
                graphs.extend(attr.graphs)
        for tensor in tensors:
            if tensor.data_location == onnx.TensorProto.EXTERNAL:
                location = next((e.value for e in tensor.external_data if e.key == "location"), None)
                if location:
                    found.add((path.parent / location).resolve())
    return found


def _stripped_proto(model: ir.Model, input_shapes: Mapping[str, tuple[int, ...]]) -> onnx.ModelProto:
    graph = model.graph
    proto = onnx.ModelProto()
    proto.ir_version = model.ir_version
    for domain, version in model.opset_imports.items():
        proto.opset_import.add(domain=domain, version=version)
    proto.graph.name = graph.name or "main"
    for node in graph:
        proto.graph.node.append(ir.serde.serialize_node(node))
    for value in graph.initializers.values():
        tensor = value.const_value
        if tensor is not None and tensor.nbytes <= _KEEP_BYTES:
            proto.graph.initializer.append(ir.serde.serialize_tensor(tensor))
        else:
            info = onnx.helper.make_tensor_value_info(
                value.name, int(value.dtype or ir.DataType.FLOAT), list(tensor.shape) if tensor is not None else None
            )
            proto.graph.input.append(info)
    for value in graph.inputs:
        if value.is_initializer():
            continue
        dims = input_shapes.get(value.name or "")
        if dims is None and value.shape is not None:
            dims = tuple(d if isinstance(d, int) and d >= 0 else 1 for d in value.shape)
        elem = int(value.dtype) if value.dtype is not None else onnx.TensorProto.FLOAT
        proto.graph.input.append(onnx.helper.make_tensor_value_info(value.name, elem, dims))
    for value in graph.outputs:
        proto.graph.output.append(onnx.ValueInfoProto(name=value.name))
    for function in model.functions.values():
        proto.functions.append(ir.serde.serialize_function(function))
    return proto


def inferred_shapes(
    model: ir.Model, input_shapes: Mapping[str, tuple[int, ...]]
) -> tuple[dict[str, tuple[int, ...]], Exception | None]:
    """Static shapes by onnx shape inference on a weight-stripped copy (large initializers become inputs).

    Returns the fully known shapes and the error inference raised (``None``: it ran); on an error
    the shapes are those of the graph's inputs only.
    """
    proto = _stripped_proto(model, input_shapes)
    error = None
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    except Exception as e:  # inference is best-effort; the caller says what is missing
        inferred, error = proto, e
    shapes: dict[str, tuple[int, ...]] = {}
    for info in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        tensor_type = info.type.tensor_type
        if not tensor_type.HasField("shape"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]
        if all(d is not None for d in dims):
            shapes[info.name] = tuple(int(d) for d in dims)  # type: ignore[arg-type]
    return shapes, error


def _graph_reads(graph: onnx.GraphProto) -> set[str]:
    """Every name read by the nodes of ``graph`` and of its subgraphs (outer-scope captures included)."""
    names: set[str] = set()
    for node in graph.node:
        names.update(n for n in node.input if n)
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                names |= _graph_reads(sub)
    return names


def _node_reads(node: onnx.NodeProto) -> set[str]:
    names = {n for n in node.input if n}
    for attr in node.attribute:
        for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
            names |= _graph_reads(sub)
    return names


def _value_info(name: str, dtype: np.dtype) -> onnx.ValueInfoProto:
    info = onnx.ValueInfoProto(name=name)
    info.type.tensor_type.elem_type = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    return info


class GraphCut:
    """The model as a node list, cut into segments whose serialized models onnxruntime runs."""

    def __init__(self, model: ir.Model) -> None:
        with inlined(model):
            self.proto = ir.to_proto(model)
        graph = self.proto.graph
        self.nodes = list(graph.node)
        self.reads = [_node_reads(n) for n in self.nodes]
        self.producer = {out: i for i, n in enumerate(self.nodes) for out in n.output if out}
        self.initializers = {t.name: t for t in graph.initializer}
        self.inputs = [v.name for v in graph.input if v.name not in self.initializers]
        self.outputs = [v.name for v in graph.output]
        self._later_reads: list[set[str]] = [set() for _ in range(len(self.nodes) + 1)]
        for i in range(len(self.nodes) - 1, -1, -1):
            self._later_reads[i] = self._later_reads[i + 1] | self.reads[i]

    def first_reader(self, names: Iterable[str]) -> int:
        """Index of the first node reading any of ``names`` (through Constant/Identity producers)."""
        wanted = set(names)
        return min((i for i, r in enumerate(self.reads) if r & wanted), default=len(self.nodes))

    def frontier(self, cut: int) -> list[str]:
        """Activations read at or after node ``cut`` and produced before it (or fed as model inputs)."""
        later = self._later_reads[cut]
        return sorted(
            n for n in later if n not in self.initializers and (n in self.inputs or self.producer.get(n, cut) < cut)
        )

    def submodel(self, start: int, stop: int, inputs: Mapping[str, np.dtype], outputs: Sequence[str]) -> bytes:
        """Serialized model of nodes ``start..stop`` with ``inputs`` fed (they replace producers and initializers)."""
        nodes = [
            n for n in self.nodes[start:stop] if not (set(n.output) and set(n.output) <= set(inputs))
        ]  # a Constant/Identity whose output is fed is dropped
        read = set().union(*(_node_reads(n) for n in nodes)) if nodes else set()
        graph = onnx.helper.make_graph(
            nodes,
            "segment",
            [_value_info(name, dtype) for name, dtype in inputs.items() if name in read],
            [onnx.ValueInfoProto(name=name) for name in outputs],
            [t for name, t in self.initializers.items() if name in read and name not in inputs],
        )
        model = onnx.helper.make_model(graph, opset_imports=self.proto.opset_import, ir_version=self.proto.ir_version)
        model.functions.extend(self.proto.functions)
        return model.SerializeToString()
