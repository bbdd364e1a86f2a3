"""onnxruntime sessions built from in-memory models, optionally exposing intermediate values."""

from __future__ import annotations

import logging
import mmap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx_ir as ir
import onnxruntime as ort

from onnxprune import _io
from onnxprune._providers import Provider
from onnxprune.errors import ValidationError

__all__ = ["needs_file", "session", "session_options"]

logger = logging.getLogger(__name__)
_INLINE_LIMIT = 1_500_000_000


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


def _by_reference_possible(model: ir.Model) -> bool:
    """Whether every external tensor is a main-graph initializer onnxruntime can take by reference."""
    for graph in model.graphs():
        for value in graph.initializers.values():
            tensor = value.const_value
            if not isinstance(tensor, ir.ExternalTensor):
                continue
            if graph is not model.graph or not (_io.by_reference(tensor) or tensor.nbytes < _io.BY_REFERENCE_BYTES):
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


def _session_by_reference(
    model: ir.Model, extra: Sequence[str], only: bool, options: ort.SessionOptions, providers: Sequence[Provider]
) -> ort.InferenceSession:
    """A session whose large initializers onnxruntime reads in place: no copy of the model is written.

    Each is given as a shared initializer (``SessionOptions.add_initializer``) over a read-only mapping
    of its external data (or over its in-memory array); the proto holds placeholders. The mapping lives
    as long as the session; pages read while building it (prepacking) are dropped right after.
    """
    mapper = _Mapper()
    with _io.placeholders(model) as (folder, tensors):
        proto, kept = _io.model_bytes_and_initializers(model, extra, only=only)
        arrays = {name: mapper.array(tensor) for name, tensor in tensors.items() if name in kept}
        values = {name: ort.OrtValue.ortvalue_from_numpy(a) for name, a in arrays.items()}
        for name, value in values.items():
            options.add_initializer(name, value)
        options.add_session_config_entry("session.model_external_initializers_file_folder_path", str(folder))
        sess = ort.InferenceSession(proto, options, providers=list(providers))
    sess._onnxprune_shared = (mapper, arrays, values)  # onnxruntime reads them in place: keep them alive
    mapper.drop_resident()
    return sess


def session(
    model: ir.Model,
    extra_outputs: Sequence[str] = (),
    *,
    threads: int | None = None,
    providers: Sequence[Provider] = ("CPUExecutionProvider",),
    what: str = "model",
    only: bool = False,
    lean: bool = False,
    profile: str | None = None,
) -> ort.InferenceSession:
    """Create an onnxruntime session for ``model``, adding ``extra_outputs`` as graph outputs.

    With ``only``, ``extra_outputs`` become the only outputs and the graph is cut to the nodes they
    need. ``lean`` (implied by ``only``) saves memory at no measured cost in batch throughput: no
    arena (each activation is given back once consumed) and no prepacked copy of the weights
    (ResNet-18: -110 MB per session, same speed); measure latency on default sessions. ``profile``: a
    file prefix for onnxruntime's profiler (``session.end_profiling()`` names the file). Small models
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
        if profile is not None:
            options.enable_profiling = True
            options.profile_file_prefix = profile
        return options

    existing = set() if only else {v.name for v in model.graph.outputs}
    extra = [name for name in dict.fromkeys(extra_outputs) if name not in existing]
    if needs_file(model) and _by_reference_possible(model):
        quiet = make_options()
        quiet.log_severity_level = 4  # a refused attempt must not print onnxruntime's error lines
        try:
            return _session_by_reference(model, extra, only, quiet, providers)
        except Exception as e:  # a graph optimization (e.g. a Conv fusion) reads the weights it is given by reference
            logger.debug("onnxruntime needs the weights in the graph (%s); loading a temporary copy", str(e)[:200])
    options = make_options()
    try:
        if needs_file(model):
            with _io.model_file(model, extra, only=only) as path:
                return ort.InferenceSession(str(path), options, providers=list(providers))
        data = _io.model_bytes(model, extra, only=only)
        return ort.InferenceSession(data, options, providers=list(providers))
    except Exception as e:
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValidationError(f"onnxruntime cannot load the {what}: {message}") from e
