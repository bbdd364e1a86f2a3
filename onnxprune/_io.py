"""Model I/O: the only module that touches protobuf files.

Loading memory-maps external data (``onnx_ir`` keeps it as ``ExternalTensor``), so a model over
2 GB is never read whole. Saving is atomic: everything is written into a temporary folder beside the
destination and moved into place only after it was written completely.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import onnx
import onnx_ir as ir

from onnxprune import _integrity
from onnxprune.errors import ModelLoadError, OutputPathError

__all__ = [
    "EXTERNAL_DATA_THRESHOLD",
    "external_files",
    "load",
    "model_nbytes",
    "save",
    "source_path",
]

logger = logging.getLogger(__name__)

#: Models whose tensors exceed this size are saved with external data (protobuf's limit is 2 GiB).
EXTERNAL_DATA_THRESHOLD = 1_800_000_000
_SOURCE_KEY = "onnxprune.source_path"


def _all_initializers(model: ir.Model) -> list[ir.Value]:
    return [value for graph in model.graphs() for value in graph.initializers.values()]


def external_files(model: ir.Model) -> set[Path]:
    """Return the resolved paths of every external-data file the model's tensors refer to."""
    files = set()
    for value in _all_initializers(model):
        tensor = value.const_value
        if isinstance(tensor, ir.ExternalTensor):
            files.add(Path(tensor.base_dir, tensor.location).resolve())
    return files


def _check_external_data(model: ir.Model, path: Path) -> None:
    folder = path.parent.resolve()
    for value in _all_initializers(model):
        tensor = value.const_value
        if not isinstance(tensor, ir.ExternalTensor):
            continue
        target = Path(tensor.base_dir, tensor.location).resolve()
        if not target.is_relative_to(folder):
            raise ModelLoadError(
                f"{path}: tensor '{value.name}' has external data at '{tensor.location}', "
                "outside the model's folder; refusing to read it"
            )
        if not target.is_file():
            raise ModelLoadError(
                f"{path}: tensor '{value.name}' refers to missing external data file '{tensor.location}'"
            )
        end = (tensor.offset or 0) + (tensor.length if tensor.length is not None else tensor.nbytes)
        if end > target.stat().st_size:
            raise ModelLoadError(
                f"{path}: tensor '{value.name}' needs bytes up to {end} of '{tensor.location}', "
                f"which holds only {target.stat().st_size} (truncated external data?)"
            )


def load(path: str | os.PathLike) -> ir.Model:
    """Load an ONNX model; external data stays memory-mapped and must lie inside the model's folder."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such file")
    try:
        proto = onnx.load(path, load_external_data=False)
    except Exception as e:  # protobuf raises DecodeError
        raise ModelLoadError(f"{path}: not a readable ONNX model ({type(e).__name__}: {e})") from e
    _integrity.check_proto(proto, path, onnx.defs.get_schema)
    try:
        model = ir.serde.deserialize_model(proto)
    except Exception as e:  # onnx_ir raises SerdeError on what the checks above do not cover
        raise ModelLoadError(f"{path}: not a readable ONNX model ({type(e).__name__}: {e})") from e
    ir.external_data.set_base_dir(model.graph, path.parent)
    if model.ir_version <= 0 or (len(model.graph) == 0 and not model.graph.outputs):
        raise ModelLoadError(f"{path}: not an ONNX model (no IR version or empty graph)")
    _check_external_data(model, path)
    model.meta[_SOURCE_KEY] = str(path.resolve())
    logger.debug("loaded %s: %d nodes", path, len(model.graph))
    return model


def source_path(model: ir.Model) -> Path | None:
    """Return the file a model was loaded from, if it came from :func:`load`."""
    source = model.meta.get(_SOURCE_KEY)
    return Path(source) if source else None


def model_nbytes(model: ir.Model) -> int:
    """Total bytes of all initializer tensors (without reading external data)."""
    return sum(v.const_value.nbytes for v in _all_initializers(model) if v.const_value is not None)


def _check_output(model: ir.Model, path: Path, data_name: str | None) -> None:
    resolved = path.resolve()
    source = source_path(model)
    protected = external_files(model) | ({source} if source else set())
    if resolved in protected or (path.exists() and any(p.exists() and p.samefile(path) for p in protected)):
        raise OutputPathError(f"{path}: output path is an input file of the model; choose another path")
    if data_name is not None and (path.parent / data_name).resolve() in protected:
        raise OutputPathError(
            f"{path}: its external data file '{data_name}' would overwrite the input's data; choose another name"
        )
    if path.is_dir():
        raise OutputPathError(f"{path}: is a directory")


@contextlib.contextmanager
def _inlined(model: ir.Model) -> Iterator[None]:
    """Temporarily replace external tensors by in-memory copies so that they serialize inline."""
    swapped = []
    for value in _all_initializers(model):
        tensor = value.const_value
        if isinstance(tensor, ir.ExternalTensor):
            swapped.append((value, tensor))
            value.const_value = ir.Tensor(tensor.numpy(), name=tensor.name)
    try:
        yield
    finally:
        for value, tensor in swapped:
            value.const_value = tensor


def _smallest_external(model: ir.Model) -> int | None:
    """Bytes of the smallest initializer held as external data (``None``: all inline)."""
    sizes = [
        v.const_value.nbytes
        for g in model.graphs()
        for v in g.initializers.values()
        if isinstance(v.const_value, ir.ExternalTensor)
    ]
    return min(sizes) if sizes else None


def save(
    model: ir.Model,
    path: str | os.PathLike,
    *,
    external_data: bool | None = None,
    size_threshold_bytes: int = 1024,
) -> Path:
    """Save ``model`` atomically; never overwrites the model's own input files.

    Args:
        model: The model to write.
        path: Destination ``.onnx`` file.
        external_data: Write tensors to ``<name>.data`` beside the model. ``None`` keeps the layout
            the model was loaded with (tensors that were external data stay external, in one file
            beside the output), else decides by size (external when the tensors exceed
            :data:`EXTERNAL_DATA_THRESHOLD`).
        size_threshold_bytes: With external data, tensors smaller than this stay inline.

    Returns:
        The written path.
    """
    path = Path(path)
    if external_data is None:
        smallest_external = _smallest_external(model)
        if smallest_external is not None:
            external_data, size_threshold_bytes = True, max(0, smallest_external - 1)
        else:
            external_data = model_nbytes(model) > EXTERNAL_DATA_THRESHOLD
    data_name = f"{path.name}.data" if external_data else None
    _check_output(model, path, data_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=".onnxprune-", dir=path.parent))
    try:
        tmp_model = tmp_dir / path.name
        if data_name:
            ir.save(model, tmp_model, external_data=data_name, size_threshold_bytes=size_threshold_bytes)
            os.replace(tmp_dir / data_name, path.parent / data_name)
        else:
            with _inlined(model):
                ir.save(model, tmp_model)
        os.replace(tmp_model, path)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    logger.debug("saved %s%s", path, f" (+ {data_name})" if data_name else "")
    return path
