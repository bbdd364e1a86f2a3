"""Model I/O: with :mod:`onnxprune._io_proto`, the only module that touches protobuf files.

Loading memory-maps external data (``onnx_ir`` keeps it as ``ExternalTensor``), so a model over
2 GB is never read whole. Saving is atomic, also with external data: the tensors go to a data file
whose name is new for each write (``OUT.onnx.<token>.data``), written in an owned temporary folder
beside the destination; the data file is moved into place first, the ``.onnx`` that refers to it
last, and only then is the data file of the replaced OUT removed. At every instant OUT loads as
the old pair or the new one.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
from collections.abc import Iterable
from pathlib import Path

import onnx
import onnx_ir as ir

from onnxprune import _integrity, _paths, _scratch
from onnxprune._io_proto import (
    BY_REFERENCE_BYTES,
    GraphCut,
    by_reference,
    check_model,
    inferred_shapes,
    inline_bytes,
    inlined,
    model_bytes,
    model_bytes_and_initializers,
    model_file,
    placeholders,
    referenced_files,
    stripped_file,
)
from onnxprune.errors import ModelLoadError

__all__ = [
    "BY_REFERENCE_BYTES",
    "EXTERNAL_DATA_THRESHOLD",
    "GraphCut",
    "by_reference",
    "check_model",
    "external_files",
    "inferred_shapes",
    "inline_bytes",
    "input_files",
    "load",
    "model_bytes",
    "model_bytes_and_initializers",
    "model_file",
    "model_input_files",
    "model_nbytes",
    "placeholders",
    "save",
    "source_path",
    "stripped_file",
    "writes_external",
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
    _fix_initializer_inputs(model, path)
    model.meta[_SOURCE_KEY] = str(path.resolve())
    logger.debug("loaded %s: %d nodes", path, len(model.graph))
    return model


def _fix_initializer_inputs(model: ir.Model, path: Path) -> None:
    """Make initializers that are also graph inputs plain weights (older exporters list every weight as an input).

    Such an input is a default a caller may override at run time; a pruned model's weights are part of
    the result, so they stop being inputs (onnxruntime would otherwise ask for a renamed weight).
    """
    overridable = [value for value in model.graph.inputs if value.is_initializer()]
    for value in overridable:
        model.graph.inputs.remove(value)
    if overridable:
        logger.info("%s: %d initializers were also graph inputs; they are weights now", path, len(overridable))


def source_path(model: ir.Model) -> Path | None:
    """Return the file a model was loaded from, if it came from :func:`load`."""
    source = model.meta.get(_SOURCE_KEY)
    return Path(source) if source else None


def model_nbytes(model: ir.Model) -> int:
    """Total bytes of all initializer tensors (without reading external data)."""
    return sum(v.const_value.nbytes for v in _all_initializers(model) if v.const_value is not None)


def input_files(model: ir.Model) -> list[Path]:
    """The files a loaded model reads: its ``.onnx`` and its external-data files."""
    source = source_path(model)
    return [*([source] if source else []), *sorted(external_files(model))]


def model_input_files(path: str | os.PathLike) -> list[Path]:
    """The model file at ``path`` and the external-data files it refers to (best effort, never raises)."""
    path = Path(path)
    return [path, *sorted(referenced_files(path))] if path.is_file() else [path]


def _smallest_external(model: ir.Model) -> int | None:
    """Bytes of the smallest initializer held as external data (``None``: all inline)."""
    sizes = [v.const_value.nbytes for v in _all_initializers(model) if isinstance(v.const_value, ir.ExternalTensor)]
    return min(sizes) if sizes else None


def _layout(model: ir.Model, external_data: bool | None, size_threshold_bytes: int) -> tuple[bool, int]:
    if external_data is not None:
        return external_data, size_threshold_bytes
    smallest_external = _smallest_external(model)
    if smallest_external is not None:
        return True, max(0, smallest_external - 1)
    return model_nbytes(model) > EXTERNAL_DATA_THRESHOLD, size_threshold_bytes


def writes_external(model: ir.Model, external_data: bool | None) -> bool:
    """Whether :func:`save` may write ``model`` with an external-data file (so its name must fit)."""
    return _layout(model, external_data, 0)[0]


def _data_pattern(path: Path) -> re.Pattern[str]:
    """Names of the data files :func:`save` writes for ``path`` (and the older ``OUT.onnx.data``)."""
    return re.compile(rf"^{re.escape(path.name)}(\.[0-9a-f]{{16}})?\.data$")


def _ours(path: Path) -> list[Path]:
    """The data files beside ``path`` named as :func:`save` names them (resolved)."""
    pattern, folder = _data_pattern(path), path.parent.resolve()
    return [folder / p.name for p in folder.iterdir() if pattern.match(p.name)]


def _another_save_running(folder: Path, tmp: Path) -> bool:
    """Whether another live process is saving into ``folder`` (its data file may not be referenced yet)."""
    return any(
        p.name.startswith(".onnxprune-save-") and p.name != tmp.name and not _scratch.is_dead(p)
        for p in folder.iterdir()
    )


def _remove_unreferenced(path: Path, candidates: Iterable[Path], keep: set[Path], protected: list[Path]) -> None:
    """Remove the ``candidates`` (our data files beside OUT) that are neither in ``keep`` nor inputs."""
    for candidate in candidates:
        if candidate in keep or any(_paths.same_file(candidate, p) for p in protected):
            continue
        candidate.unlink(missing_ok=True)
        logger.debug("removed %s (no longer referenced by %s)", candidate, path)


def _check_output(model: ir.Model, path: Path, external: bool) -> None:
    _paths.check_outputs(
        {"the output": path},
        {"an input of the model": input_files(model)},
        external_data=("the output",) if external else (),
    )


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
        external_data: Write tensors to ``<name>.<token>.data`` beside the model (a new name for each
            write). ``None`` keeps the layout the model was loaded with (tensors that were external
            data stay external, in one file beside the output), else decides by size (external when
            the tensors exceed :data:`EXTERNAL_DATA_THRESHOLD`).
        size_threshold_bytes: With external data, tensors smaller than this stay inline.

    Returns:
        The written path.

    Raises:
        OutputPathError: ``path`` is an input of the model, a folder, a special file or not writable.
    """
    path = Path(path)
    external_data, size_threshold_bytes = _layout(model, external_data, size_threshold_bytes)
    _check_output(model, path, external_data)
    path.parent.mkdir(parents=True, exist_ok=True)
    protected = input_files(model)
    data_name = f"{path.name}.{secrets.token_hex(8)}.data" if external_data else None
    with _scratch.temp_dir("save", path.parent, hidden=True) as tmp:
        tmp_model = tmp / path.name
        if data_name is None:
            with inlined(model):
                ir.save(model, tmp_model)
        else:
            ir.save(model, tmp_model, external_data=data_name, size_threshold_bytes=size_threshold_bytes)
        # listed before the check for other saves: a data file renamed in by one of them is seen with its folder
        candidates = _ours(path)
        busy = _another_save_running(path.parent, tmp)
        if data_name is not None and (tmp / data_name).exists():
            os.replace(tmp / data_name, path.parent / data_name)
            try:
                os.replace(tmp_model, path)
            except BaseException:
                (path.parent / data_name).unlink(missing_ok=True)
                raise
        else:
            os.replace(tmp_model, path)
        if candidates and not busy:  # the replaced OUT's data and any a killed save left
            keep = referenced_files(path) if data_name is not None else set()
            _remove_unreferenced(path, candidates, keep, protected)
    logger.debug("saved %s%s", path, f" (+ {data_name})" if data_name else "")
    return path
