"""onnxruntime sessions built from in-memory models, optionally exposing intermediate values."""

from __future__ import annotations

import contextlib
import logging
import mmap
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

from onnxprune import _io
from onnxprune.errors import ValidationError

__all__ = ["cut_to_outputs", "model_file", "needs_file", "by_reference", "session", "session_options", "stripped_file"]

logger = logging.getLogger(__name__)
_INLINE_LIMIT = 1_500_000_000
#: Initializers of at least this many bytes reach onnxruntime by reference (the size ``model_file``
#: writes as external data: smaller ones, such as Reshape shapes, stay visible to shape inference).
_BY_REFERENCE_BYTES = 1024
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


def session_options(threads: int | None = None) -> ort.SessionOptions:
    """Session options with a fixed thread count, quiet logging and no intra-op spinning.

    Spinning worker threads of an idle session busy-wait on the cores another session needs, so
    two sessions run alternately (interleaved latency, reference vs candidate) would halve each
    other's multi-thread speed (measured: dense ResNet-18, 2 threads, 33 ms interleaved vs 17 ms).
    """
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return options


def needs_file(model: ir.Model) -> bool:
    """Whether the model must reach onnx C APIs through a file (external data, or too big for bytes)."""
    has_external = any(
        isinstance(v.const_value, ir.ExternalTensor) for g in model.graphs() for v in g.initializers.values()
    )
    return has_external or _io.model_nbytes(model) > _INLINE_LIMIT


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


@contextlib.contextmanager
def model_file(model: ir.Model, extra_outputs: Sequence[str], *, only: bool = False) -> Iterator[Path]:
    """The model saved in a temporary folder (weights as external data), with the outputs set."""
    with tempfile.TemporaryDirectory(prefix="onnxprune-ort-") as tmp:
        path = Path(tmp) / "model.onnx"
        ir.save(model, path, external_data="model.onnx.data", size_threshold_bytes=1024)
        if extra_outputs:
            proto = onnx.load(path, load_external_data=False)
            _set_outputs(proto, extra_outputs, only)
            onnx.save(proto, path)
        yield path


def by_reference(tensor: ir.TensorProtocol | None) -> bool:
    """Whether a tensor goes to onnxruntime (and the checker) by reference: large, of a plain dtype."""
    return tensor is not None and tensor.nbytes >= _BY_REFERENCE_BYTES and tensor.dtype in _SHAREABLE


def _by_reference_possible(model: ir.Model) -> bool:
    """Whether every external tensor is a main-graph initializer onnxruntime can take by reference."""
    for graph in model.graphs():
        for value in graph.initializers.values():
            tensor = value.const_value
            if not isinstance(tensor, ir.ExternalTensor):
                continue
            if graph is not model.graph or not (by_reference(tensor) or tensor.nbytes < _BY_REFERENCE_BYTES):
                return False
    for node in ir.traversal.RecursiveGraphIterator(model.graph):
        for attr in node.attributes.values():
            if attr.type == ir.AttributeType.TENSOR and isinstance(attr.value, ir.ExternalTensor):
                return False
    return True


class _Mapper:
    """Tensor values without a copy: external data through one private read-only mapping per file."""

    def __init__(self) -> None:
        self.maps: dict[str, mmap.mmap] = {}

    def array(self, tensor: ir.TensorProtocol) -> np.ndarray:
        if not isinstance(tensor, ir.ExternalTensor):
            return np.ascontiguousarray(tensor.numpy())
        path = str(Path(tensor.path).resolve())
        if path not in self.maps:
            with open(path, "rb") as f:
                self.maps[path] = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        dtype = np.dtype(tensor.dtype.numpy()).newbyteorder("<")
        flat = np.frombuffer(self.maps[path], dtype=dtype, count=tensor.size, offset=tensor.offset or 0)
        return flat.reshape(tensor.shape.numpy())

    def drop_resident(self) -> None:
        """Unmap the pages read so far (onnxruntime faults back in, from the page cache, what it reads again)."""
        for mapped in self.maps.values():
            if hasattr(mapped, "madvise"):
                mapped.madvise(mmap.MADV_DONTNEED)


@contextlib.contextmanager
def _placeholders(model: ir.Model, folder: Path) -> Iterator[dict[str, ir.TensorProtocol]]:
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
def stripped_file(model: ir.Model) -> Iterator[Path]:
    """The model saved without its large initializers' data: they point to an empty placeholder file.

    Nothing is copied or read from external data; for the onnx checker on models of any size.
    """
    with tempfile.TemporaryDirectory(prefix="onnxprune-ort-") as tmp:
        with _placeholders(model, Path(tmp)):
            proto = ir.to_proto(model)
        path = Path(tmp) / "model.onnx"
        onnx.save(proto, path)
        yield path


def _session_by_reference(
    model: ir.Model, extra: Sequence[str], only: bool, options: ort.SessionOptions, providers: Sequence[str]
) -> ort.InferenceSession:
    """A session whose large initializers onnxruntime reads in place: no copy of the model is written.

    Each is given as a shared initializer (``SessionOptions.add_initializer``) over a read-only mapping
    of its external data (or over its in-memory array); the proto holds placeholders. The mapping lives
    as long as the session; pages read while building it (prepacking) are dropped right after.
    """
    mapper = _Mapper()
    with tempfile.TemporaryDirectory(prefix="onnxprune-ort-") as tmp:
        with _placeholders(model, Path(tmp)) as tensors:
            proto = ir.to_proto(model)
        _set_outputs(proto, extra, only)
        kept = {t.name for t in proto.graph.initializer}
        arrays = {name: mapper.array(tensor) for name, tensor in tensors.items() if name in kept}
        values = {name: ort.OrtValue.ortvalue_from_numpy(a) for name, a in arrays.items()}
        for name, value in values.items():
            options.add_initializer(name, value)
        options.add_session_config_entry("session.model_external_initializers_file_folder_path", tmp)
        sess = ort.InferenceSession(proto.SerializeToString(), options, providers=list(providers))
    sess._onnxprune_shared = (mapper, arrays, values)  # onnxruntime reads them in place: keep them alive
    mapper.drop_resident()
    return sess


def session(
    model: ir.Model,
    extra_outputs: Sequence[str] = (),
    *,
    threads: int | None = None,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    what: str = "model",
    only: bool = False,
    lean: bool = False,
) -> ort.InferenceSession:
    """Create an onnxruntime session for ``model``, adding ``extra_outputs`` as graph outputs.

    With ``only``, ``extra_outputs`` become the only outputs and the graph is cut to the nodes they
    need. ``lean`` (implied by ``only``) saves memory at no measured cost in batch throughput: no
    arena (each activation is given back once consumed) and no prepacked copy of the weights
    (ResNet-18: -110 MB per session, same speed); measure latency on default sessions. Small models
    go to onnxruntime as bytes. Models with external data or over 1.5 GB are not copied: their large
    initializers are read in place, from their files or arrays (see :func:`_session_by_reference`);
    external data in a subgraph or ``Constant`` node, or weights a graph optimization of onnxruntime
    reads (its Conv fusions do), go through a temporary folder.

    Raises:
        ValidationError: onnxruntime refused the model (the message names the node it reports).
    """

    def make_options() -> ort.SessionOptions:
        options = session_options(threads)
        if only or lean:
            options.enable_cpu_mem_arena = False
            options.add_session_config_entry("session.disable_prepacking", "1")
        return options

    existing = set() if only else {v.name for v in model.graph.outputs}
    extra = [name for name in dict.fromkeys(extra_outputs) if name not in existing]
    if needs_file(model) and _by_reference_possible(model):
        try:
            return _session_by_reference(model, extra, only, make_options(), providers)
        except Exception as e:  # a graph optimization (e.g. a Conv fusion) reads the weights it is given by reference
            logger.debug("onnxruntime needs the weights in the graph (%s); loading a temporary copy", str(e)[:200])
    options = make_options()
    try:
        if needs_file(model):
            with model_file(model, extra, only=only) as path:
                return ort.InferenceSession(str(path), options, providers=list(providers))
        proto = ir.to_proto(model)
        _set_outputs(proto, extra, only)
        return ort.InferenceSession(proto.SerializeToString(), options, providers=list(providers))
    except Exception as e:
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValidationError(f"onnxruntime cannot load the {what}: {message}") from e
