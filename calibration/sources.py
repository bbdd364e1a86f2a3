"""Calibration data sources: ``.npz`` files, folders of ``.npz``/``.npy``, or random inputs.

A source yields batches as ``dict[input name, array]``. Arrays in a file hold N samples either as
``[N, *input_shape]`` (one full model input per sample) or stacked along the model's dynamic batch
axis. Files are read with ``allow_pickle=False``; nothing user-supplied is ever unpickled.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import onnx_ir as ir

from onnxprune.errors import CalibrationError

__all__ = [
    "ArraySource",
    "CalibrationSource",
    "InputSpec",
    "RandomSource",
    "input_specs",
    "open_source",
    "parse_input_shapes",
    "sample_shapes",
]

logger = logging.getLogger(__name__)

#: Keys of an ``.npz`` that hold class labels rather than model inputs.
LABEL_KEYS = ("label", "labels")


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
        except ValueError as e:
            raise CalibrationError(f"--input-shape '{item}': expected NAME=D1,D2,... with integer dims") from e
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

    def __init__(self, arrays: Mapping[str, np.ndarray], specs: Sequence[InputSpec], origin: str) -> None:
        self._specs = list(specs)
        self._origin = origin
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


def _read_arrays(path: Path, specs: Sequence[InputSpec]) -> dict[str, np.ndarray]:
    try:
        if path.suffix == ".npy":
            if len(specs) != 1:
                raise CalibrationError(f"{path}: a .npy file can feed only a single-input model")
            return {specs[0].name: np.load(path, allow_pickle=False)}
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except CalibrationError:
        raise
    except Exception as e:
        raise CalibrationError(f"{path}: cannot read calibration arrays ({type(e).__name__}: {e})") from e


def open_source(
    path: str | os.PathLike | None,
    model: ir.Model,
    *,
    samples: int | None = None,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
    seed: int = 0,
) -> CalibrationSource:
    """Open calibration data for ``model``: an ``.npz``/``.npy`` file, a folder of them, or random data."""
    specs = input_specs(model)
    if path is None:
        return RandomSource(specs, samples or 8, input_shapes or {}, seed=seed)
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".npz", ".npy"))
        if not files:
            raise CalibrationError(f"{path}: folder holds no .npz or .npy files")
    elif path.is_file():
        files = [path]
    else:
        raise CalibrationError(f"{path}: no such calibration file or folder")
    parts: dict[str, list[np.ndarray]] = {}
    for file in files:
        for key, array in _read_arrays(file, specs).items():
            spec = next((s for s in specs if s.name == key), None)
            if spec is not None and array.ndim == len(spec.shape) and spec.batch_axis not in (None, 0):
                raise CalibrationError(f"{file}: cannot merge '{key}' stacked along axis {spec.batch_axis}")
            parts.setdefault(key, []).append(array)
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
