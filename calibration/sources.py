"""Calibration data sources: ``.npz`` files, folders of ``.npz``/``.npy``, images, text, readers, or random inputs.

A source yields batches as ``dict[input name, array]``. Arrays in a file hold N samples either as
``[N, *input_shape]`` (one full model input per sample) or stacked along the model's dynamic batch
axis. Files are read with ``allow_pickle=False``; nothing user-supplied is ever unpickled.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol

import numpy as np
import onnx_ir as ir

from onnxprune._fields import short
from onnxprune.errors import CalibrationError

if TYPE_CHECKING:
    from onnxprune.calibration.preprocess import ImagePreprocess
    from onnxprune.calibration.readers import CalibrationDataReader
    from onnxprune.calibration.text import TextSpec

__all__ = [
    "ArraySource",
    "CalibrationSource",
    "InputSpec",
    "RandomSource",
    "check_input_shapes",
    "input_specs",
    "open_source",
    "parse_input_shapes",
    "sample_shapes",
]

logger = logging.getLogger(__name__)

#: Keys of an ``.npz`` that hold class labels rather than model inputs.
LABEL_KEYS = ("label", "labels")

#: Given an array's shape in a file, how many leading rows to read (``None``: all).
RowsFn = Callable[[tuple[int, ...]], int | None]


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """A model input: name, numpy dtype and shape (``None`` for a dynamic dim)."""

    name: str
    dtype: np.dtype
    shape: tuple[int | None, ...]

    @property
    def batch_axis(self) -> int | None:
        """The axis that batches samples: the first dynamic dim (``None`` if all dims are fixed)."""
        return next((i for i, d in enumerate(self.shape) if d is None), None)

    @property
    def display_shape(self) -> str:
        """The shape as ``[?,3,224,224]`` (``?`` for dynamic dims), for messages."""
        return "[" + ",".join("?" if d is None else str(d) for d in self.shape) + "]"


def input_specs(model: ir.Model) -> list[InputSpec]:
    """Return the model's real inputs (initializers listed as inputs excluded)."""
    specs = []
    for value in model.graph.inputs:
        if value.is_initializer():
            continue
        dims: tuple[int | None, ...] = ()
        if value.shape is not None:
            # a negative dim_value (Paddle2ONNX writes -1 for the batch) is dynamic as well
            dims = tuple(d if isinstance(d, int) and d >= 0 else None for d in value.shape)
        dtype = value.dtype.numpy() if value.dtype is not None else np.dtype(np.float32)
        specs.append(InputSpec(value.name or "", np.dtype(dtype), dims))
    return specs


def parse_input_shapes(items: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """Parse ``name=1,3,224,224`` strings into a mapping."""
    shapes = {}
    for item in items:
        name, sep, dims = item.partition("=")
        try:
            if not sep or not name:
                raise ValueError
            shapes[name] = tuple(int(d) for d in dims.split(","))
            if any(d < 1 for d in shapes[name]):
                raise ValueError
        except ValueError as e:
            raise CalibrationError(
                f"--input-shape {short(item)}: expected NAME=D1,D2,... with integer dims >= 1"
            ) from e
    return shapes


class CalibrationSource(Protocol):
    """Anything that yields batches of model inputs."""

    def batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        """Yield dicts of input arrays holding at most ``batch_size`` samples each."""
        ...

    @property
    def num_samples(self) -> int:
        """Number of samples the source yields in total."""
        ...


def _check_dims(origin: str, spec: InputSpec, shape: tuple[int, ...]) -> None:
    if len(shape) != len(spec.shape) or any(d is not None and d != s for d, s in zip(spec.shape, shape, strict=False)):
        raise CalibrationError(
            f"{origin}: input '{spec.name}' has shape {list(shape)}, model expects {spec.display_shape}"
        )


class ArraySource:
    """Samples held in arrays (from ``.npz``/``.npy`` files), split into per-sample model inputs."""

    def __init__(
        self, arrays: Mapping[str, np.ndarray], specs: Sequence[InputSpec], origin: str, *, kind: str = "samples"
    ) -> None:
        self._specs = list(specs)
        self._origin = origin
        #: what a sample is, for reports ("images", "lines of text", "samples")
        self.kind = kind
        missing = [s.name for s in specs if s.name not in arrays]
        if missing:
            raise CalibrationError(f"{origin}: missing model input '{missing[0]}' (has {sorted(arrays)})")
        extra = sorted(set(arrays) - {s.name for s in specs} - set(LABEL_KEYS))
        if extra:
            logger.warning("%s: ignoring arrays that are not model inputs: %s", origin, ", ".join(extra))
        self._labels = next((arrays[k] for k in LABEL_KEYS if k in arrays and k not in {s.name for s in specs}), None)
        self._samples: dict[str, np.ndarray] = {}
        self._stacked: dict[str, bool] = {}
        counts = {}
        for spec in specs:
            array = arrays[spec.name]
            if array.dtype != spec.dtype:
                raise CalibrationError(
                    f"{origin}: input '{spec.name}' has dtype {array.dtype}, model expects {spec.dtype}"
                )
            if array.ndim == len(spec.shape) + 1:
                _check_dims(origin, spec, array.shape[1:])
                self._stacked[spec.name] = False
                counts[spec.name] = array.shape[0]
            elif array.ndim == len(spec.shape) and spec.batch_axis is not None:
                _check_dims(origin, spec, array.shape)
                self._stacked[spec.name] = True
                counts[spec.name] = array.shape[spec.batch_axis]
            else:
                raise CalibrationError(
                    f"{origin}: input '{spec.name}' has shape {list(array.shape)}; expected [N, *{spec.display_shape}] "
                    f"or {spec.display_shape} stacked along a dynamic batch axis"
                )
            self._samples[spec.name] = array
        if len(set(counts.values())) > 1:
            raise CalibrationError(f"{origin}: inputs hold different sample counts: {counts}")
        self._n = next(iter(counts.values()), 0)
        if self._n == 0:
            raise CalibrationError(f"{origin}: no samples")
        labels = self._labels
        if labels is not None and (
            labels.ndim != 1 or labels.shape[0] != self._n or not np.issubdtype(labels.dtype, np.integer)
        ):
            raise CalibrationError(
                f"{origin}: 'label' must hold one integer per sample ({self._n}), "
                f"got {labels.dtype} {list(labels.shape)}"
            )
        if labels is not None and labels.size and labels.min() < 0:
            first = int(np.argmax(labels < 0))
            raise CalibrationError(f"{origin}: 'label' of sample {first} is negative ({int(labels[first])})")

    @property
    def num_samples(self) -> int:
        """Number of samples in the arrays."""
        return self._n

    def _take(self, spec: InputSpec, start: int, stop: int) -> np.ndarray:
        array = self._samples[spec.name]
        if self._stacked[spec.name]:
            return np.take(array, range(start, stop), axis=spec.batch_axis)
        if spec.batch_axis is None:
            return array[start]
        return np.concatenate(list(array[start:stop]), axis=spec.batch_axis)

    def batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        """Yield batches; models without a dynamic batch axis get one sample at a time."""
        if any(spec.batch_axis is None for spec in self._specs):
            batch_size = 1
        for start in range(0, self._n, batch_size):
            stop = min(start + batch_size, self._n)
            yield {spec.name: self._take(spec, start, stop) for spec in self._specs}

    @property
    def labels(self) -> np.ndarray | None:
        """Integer class labels stored beside the inputs under ``label``/``labels`` (one per sample)."""
        return None if self._labels is None else self._labels[: self._n]

    def limited(self, n: int) -> ArraySource:
        """A view holding only the first ``n`` samples."""
        if n >= self._n:
            return self
        view = object.__new__(ArraySource)
        view.__dict__.update(self.__dict__)
        view._n = n
        return view


class RandomSource:
    """Random inputs built from the model's input specs (a stand-in when no data is given)."""

    #: passes that fit weights to data (reconstruction) refuse a random source
    random = True

    def __init__(
        self, specs: Sequence[InputSpec], num_samples: int, shapes: Mapping[str, tuple[int, ...]], seed: int = 0
    ) -> None:
        self._specs = list(specs)
        self._n = num_samples
        self._seed = seed
        self._shapes = {}
        for spec in specs:
            if spec.name in shapes:
                _check_dims("--input-shape", spec, shapes[spec.name])
                self._shapes[spec.name] = tuple(shapes[spec.name])
                continue
            dims = list(spec.shape)
            batch = spec.batch_axis
            for i, d in enumerate(dims):
                if d is None and i != batch:
                    raise CalibrationError(
                        f"input '{spec.name}' has dynamic dim {i}; fix it with --input-shape {spec.name}=..."
                    )
            if batch is not None:
                dims[batch] = 1
            self._shapes[spec.name] = tuple(int(d) for d in dims if d is not None)
        logger.warning(
            "NO CALIBRATION DATA: using %d random input samples; statistics and fidelity "
            "figures will not reflect real data (pass --calib PATH)",
            num_samples,
        )

    @property
    def num_samples(self) -> int:
        """Number of random samples."""
        return self._n

    def batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        """Yield random batches (one sample each when a shape was fixed without a batch axis)."""
        rng = np.random.default_rng(self._seed)
        for _ in range(self._n):
            batch = {}
            for spec in self._specs:
                shape = self._shapes[spec.name]
                if np.issubdtype(spec.dtype, np.floating):
                    batch[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
                elif spec.dtype == np.bool_:
                    batch[spec.name] = rng.random(shape) < 0.5
                else:
                    batch[spec.name] = rng.integers(0, 16, size=shape).astype(spec.dtype)
            yield batch


def _sample_axis(spec: InputSpec | None, ndim: int) -> int | None:
    """The axis of an array in a file that counts samples (``None``: the array is one sample)."""
    if spec is None or ndim == len(spec.shape) + 1:
        return 0  # labels, and [N, *input_shape]
    return spec.batch_axis  # stacked along the dynamic batch axis; a fixed-shape input: one sample


def _rows_needed(spec: InputSpec | None, shape: tuple[int, ...], samples: int | None) -> int | None:
    """How many leading rows of an array of ``shape`` hold the first ``samples`` (``None``: read all)."""
    if samples is None or not shape or _sample_axis(spec, len(shape)) != 0:
        return None
    return min(samples, shape[0])


def _read_exact(stream: BinaryIO, nbytes: int, what: str) -> bytearray:
    buffer = bytearray(nbytes)
    view, done = memoryview(buffer), 0
    while done < nbytes:
        got = stream.readinto(view[done:])
        if not got:
            raise CalibrationError(f"{what}: truncated ({done} of {nbytes} data bytes)")
        done += got
    return buffer


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, rows: RowsFn, what: str) -> np.ndarray:
    """One ``.npy`` member of an ``.npz``, reading only the leading rows ``rows(shape)`` asks for.

    The header is parsed with :mod:`numpy.lib.format`; stored members are read from their offset,
    compressed ones decompressed only as far as the rows needed. Object arrays are refused.
    """
    with archive.open(info) as stream:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
        if dtype.hasobject:
            raise CalibrationError(f"{what}: cannot read Python objects (pickles are never loaded)")
        count = math.prod(shape)
        held = info.file_size - stream.tell()
        if count * dtype.itemsize != held:
            raise CalibrationError(
                f"{what}: declares {dtype} {list(shape)} ({count * dtype.itemsize} bytes) but holds {held}"
            )
        needed = rows(shape)
        if needed is not None and (not fortran or len(shape) < 2):
            shape = (needed, *shape[1:])
        data = _read_exact(stream, math.prod(shape) * dtype.itemsize, what)
    return np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")


def _read_arrays(path: Path, specs: Sequence[InputSpec], samples: int | None) -> dict[str, np.ndarray]:
    """The input (and label) arrays of one file, only their first ``samples`` where the layout allows it.

    ``.npy``: memory-mapped, the rows needed copied out. ``.npz``: see :func:`_read_member`; arrays
    that are neither inputs nor labels are not read (a warning names them).
    """
    by_name = {s.name: s for s in specs}

    def rows(key: str) -> RowsFn:
        return lambda shape: _rows_needed(by_name.get(key), shape, samples)

    try:
        if path.suffix == ".npy":
            if len(specs) != 1:
                raise CalibrationError(f"{path}: a .npy file can feed only a single-input model")
            mapped = np.load(path, mmap_mode="r", allow_pickle=False)
            needed = rows(specs[0].name)(mapped.shape)
            array = np.array(mapped if needed is None else mapped[:needed])
            del mapped
            return {specs[0].name: array}
        arrays, ignored = {}, []
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                key = info.filename.removesuffix(".npy")
                if key not in by_name and key not in LABEL_KEYS:
                    ignored.append(key)
                    continue
                arrays[key] = _read_member(archive, info, rows(key), f"{path}: array '{key}'")
        if ignored:
            logger.warning("%s: ignoring arrays that are not model inputs: %s", path, ", ".join(sorted(ignored)))
        return arrays
    except CalibrationError:
        raise
    except Exception as e:
        raise CalibrationError(f"{path}: cannot read calibration arrays ({type(e).__name__}: {e})") from e


def _count(spec: InputSpec, array: np.ndarray) -> int:
    axis = _sample_axis(spec, array.ndim)
    return 1 if axis is None or array.ndim <= axis else int(array.shape[axis])


def _check_finite(path: Path, key: str, array: np.ndarray, axis: int | None, offset: int) -> None:
    """Refuse NaN/inf in a float array, naming the file, the input and the (overall) sample index."""
    if not np.issubdtype(array.dtype, np.floating) and not np.issubdtype(array.dtype, np.complexfloating):
        return
    bad = ~np.isfinite(array)
    if not bad.any():
        return
    where = tuple(int(i) for i in np.argwhere(bad)[0])
    sample = offset + (0 if axis is None or axis >= len(where) else where[axis])
    kind = "NaN" if np.isnan(array[where]) else "inf"
    raise CalibrationError(f"{path}: input '{key}' sample {sample} holds {kind}; calibration data must be finite")


def check_input_shapes(specs: Sequence[InputSpec], shapes: Mapping[str, tuple[int, ...]]) -> None:
    """Refuse ``--input-shape`` names the model has no input for, and dims below 1."""
    names = [s.name for s in specs]
    for name, dims in shapes.items():
        if name not in names:
            raise CalibrationError(
                f"--input-shape {short(name)}: the model has no such input (inputs: {', '.join(names) or 'none'})"
            )
        if not dims or any(d < 1 for d in dims):
            raise CalibrationError(f"--input-shape {name}: dims must be >= 1, got {list(dims)}")


def open_source(
    path: str | os.PathLike | CalibrationDataReader | None,
    model: ir.Model,
    *,
    samples: int | None = None,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
    seed: int = 0,
    images: ImagePreprocess | None = None,
    text: TextSpec | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> CalibrationSource:
    """Open calibration data for ``model``: arrays, images, text, a reader, or random data.

    ``path`` is an ``.npz``/``.npy`` file or a folder of them; a folder of images (preprocessed as
    ``images`` says, ``samples`` of them picked by a ``seed``-ed shuffle; see
    :mod:`onnxprune.calibration.images`); a text file when ``text`` says how to tokenize it (see
    :mod:`onnxprune.calibration.text`); an onnxruntime ``CalibrationDataReader``; or ``None`` for
    random inputs. Of arrays, only the first ``samples`` are read where the files hold samples along
    axis 0 (and the files a folder needs for them). NaN/inf in float inputs are refused, naming the
    file, input and sample. ``progress`` is called with (done, total) while images or text are read.
    """
    # the readers of images, text and CalibrationDataReader objects build on this module's ArraySource
    from onnxprune.calibration.images import holds_images, open_images  # noqa: PLC0415
    from onnxprune.calibration.readers import ReaderSource, is_reader  # noqa: PLC0415
    from onnxprune.calibration.text import open_text  # noqa: PLC0415

    specs = input_specs(model)
    check_input_shapes(specs, input_shapes or {})
    if path is None:
        return RandomSource(specs, samples or 8, input_shapes or {}, seed=seed)
    if not isinstance(path, str | os.PathLike):
        if is_reader(path):
            return ReaderSource(path, model, samples=samples)
        raise CalibrationError(f"calibration data must be a path or a CalibrationDataReader, got {type(path).__name__}")
    path = Path(path)
    shapes = input_shapes or {}
    if path.is_dir() and holds_images(path):
        return open_images(path, specs, images, samples=samples, seed=seed, input_shapes=shapes, progress=progress)
    if path.is_file() and path.suffix not in (".npz", ".npy"):
        if text is not None:
            return open_text(path, model, text, samples=samples, seed=seed, input_shapes=shapes, progress=progress)
        if path.suffix.lower() in (".txt", ".text", ".tsv"):
            raise CalibrationError(f"{path}: text data needs a tokenizer (--tokenizer PATH)")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".npz", ".npy"))
        if not files:
            raise CalibrationError(f"{path}: folder holds no images, .npz or .npy files")
    elif path.is_file():
        files = [path]
    else:
        raise CalibrationError(f"{path}: no such calibration file or folder")
    parts: dict[str, list[np.ndarray]] = {}
    have = 0
    for file in files:
        if samples is not None and have >= samples:
            break
        arrays = _read_arrays(file, specs, None if samples is None else samples - have)
        count = 0
        for key, array in arrays.items():
            spec = next((s for s in specs if s.name == key), None)
            if spec is None:
                parts.setdefault(key, []).append(array)
                continue
            if len(files) > 1 and array.ndim == len(spec.shape) and spec.batch_axis not in (None, 0):
                raise CalibrationError(f"{file}: cannot merge '{key}' stacked along axis {spec.batch_axis}")
            _check_finite(file, key, array, _sample_axis(spec, array.ndim), have)
            count = count or _count(spec, array)
            parts.setdefault(key, []).append(array)
        have += count
    arrays = {k: v[0] if len(v) == 1 else _concat(k, v, specs, path) for k, v in parts.items()}
    source = ArraySource(arrays, specs, str(path))
    return source.limited(samples) if samples else source


def _concat(key: str, arrays: list[np.ndarray], specs: Sequence[InputSpec], origin: Path) -> np.ndarray:
    spec = next((s for s in specs if s.name == key), None)
    if spec is not None:
        # one sample per file ([*input_shape]) becomes [1, *input_shape]
        arrays = [a[None] if a.ndim == len(spec.shape) and spec.batch_axis is None else a for a in arrays]
    try:
        return np.concatenate(arrays, axis=0)
    except ValueError as e:
        raise CalibrationError(f"{origin}: arrays for '{key}' do not stack ({e})") from e


def sample_shapes(source: CalibrationSource) -> dict[str, tuple[int, ...]]:
    """The input shapes of one sample (the source's first batch of size 1), to count MACs at real shapes."""
    first = next(iter(source.batches(1)), {})
    return {name: tuple(int(d) for d in array.shape) for name, array in first.items()}
