"""Folders of images as calibration and validation data.

A folder holds images (``.jpg``, ``.jpeg``, ``.png``, ``.bmp``, ``.webp``, any case) either at its
top level or one folder per class (class index = position of the folder's name in sorted order).
Top-level images take labels from ``labels.txt`` (one integer per line, in the sorted order of the
file names) or ``labels.csv`` (``file,label`` rows, an optional header) beside them. Images are
decoded once, with Pillow, into one array (see :mod:`onnxprune.calibration.preprocess`).
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import math
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from onnxprune._fields import short
from onnxprune.calibration.preprocess import ImageGeometry, ImagePreprocess, image_geometry, preprocess
from onnxprune.calibration.sampling import pick_samples
from onnxprune.calibration.sources import ArraySource, InputSpec
from onnxprune.errors import CalibrationError

__all__ = [
    "IMAGE_SUFFIXES",
    "LABEL_FILES",
    "MAX_DECODED_BYTES",
    "ImageFolder",
    "holds_images",
    "open_images",
    "scan_images",
]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
ARRAY_SUFFIXES = (".npz", ".npy")
LABEL_FILES = ("labels.txt", "labels.csv")
#: The most bytes the decoded images may take (beyond it: an error that suggests ``--samples``).
MAX_DECODED_BYTES = 4 << 30


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()


def _visible(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    except OSError as e:
        raise CalibrationError(f"{folder}: cannot list the folder ({e.strerror or e})") from e


def holds_images(folder: Path) -> bool:
    """Whether ``folder`` holds images at its top level or in class folders."""
    entries = _visible(folder)
    return any(_is_image(p) for p in entries) or any(p.is_dir() and any(map(_is_image, _visible(p))) for p in entries)


@dataclasses.dataclass(frozen=True)
class ImageFolder:
    """The images of a folder in sorted order, with their labels where the folder gives them."""

    root: Path
    files: tuple[Path, ...]
    labels: tuple[int, ...] | None = None
    classes: tuple[str, ...] | None = None

    def inputs(self) -> list[Path]:
        """Every file read: the images and the label file, if any."""
        found = [self.root / name for name in LABEL_FILES if (self.root / name).is_file()]
        return [*self.files, *found]


def scan_images(folder: str | Path) -> ImageFolder:
    """List a folder's images (top level, or one folder per class) and their labels.

    Raises:
        CalibrationError: images mixed with ``.npz``/``.npy`` files or with class folders, no image
            at all, both label files, or a label file that does not fit the images.
    """
    root = Path(folder)
    entries = _visible(root)
    images = [p for p in entries if _is_image(p)]
    arrays = [p for p in entries if p.suffix in ARRAY_SUFFIXES]
    folders = [p for p in entries if p.is_dir()]
    classes = folders if any(any(map(_is_image, _visible(p))) for p in folders) else []
    if arrays and (images or classes):
        raise CalibrationError(
            f"{root}: holds both images ({(images or classes)[0].name}) and arrays ({arrays[0].name}); keep one kind"
        )
    if images and classes:
        raise CalibrationError(
            f"{root}: holds images ({images[0].name}) and class folders ({classes[0].name}/); "
            "use one folder per class or images with labels.txt/labels.csv"
        )
    if classes:
        files, labels = [], []
        for index, sub in enumerate(classes):
            found = [p for p in _visible(sub) if _is_image(p)]
            if not found:
                logger.warning("%s: class %d (%s) holds no images", root, index, sub.name)
            _warn_ignored(sub, [p for p in _visible(sub) if p.is_file() and p not in found])
            files += found
            labels += [index] * len(found)
        return ImageFolder(root, tuple(files), tuple(labels), tuple(p.name for p in classes))
    if not images:
        raise CalibrationError(f"{root}: no images ({', '.join(IMAGE_SUFFIXES)}) and no .npz/.npy files")
    ignored = [p for p in entries if p.is_file() and p not in images and p.name not in LABEL_FILES]
    _warn_ignored(root, ignored)
    return ImageFolder(root, tuple(images), _read_labels(root, images))


def _warn_ignored(folder: Path, ignored: list[Path]) -> None:
    if ignored:
        names = ", ".join(p.name for p in ignored[:3]) + (" ..." if len(ignored) > 3 else "")
        logger.warning("%s: ignoring %d file(s) that are not images: %s", folder, len(ignored), names)


def _label(text: str, where: str) -> int:
    try:
        value = int(text.strip())
    except ValueError as e:
        raise CalibrationError(f"{where}: expected an integer class index, got {short(text.strip())}") from e
    if value < 0:
        raise CalibrationError(f"{where}: class index {value} is negative")
    return value


def _read_labels(root: Path, images: list[Path]) -> tuple[int, ...] | None:
    txt, table = root / LABEL_FILES[0], root / LABEL_FILES[1]
    if txt.is_file() and table.is_file():
        raise CalibrationError(f"{root}: holds both labels.txt and labels.csv; keep one")
    try:
        if txt.is_file():
            lines = txt.read_text(encoding="utf-8").splitlines()
            while lines and not lines[-1].strip():
                lines.pop()
            if len(lines) != len(images):
                raise CalibrationError(
                    f"{txt}: {len(lines)} labels for {len(images)} images (one per line, in sorted name order)"
                )
            return tuple(_label(line, f"{txt}: line {i + 1}") for i, line in enumerate(lines))
        if table.is_file():
            return _read_csv(table, images)
    except (OSError, UnicodeDecodeError) as e:
        raise CalibrationError(f"{root}: cannot read its labels ({type(e).__name__}: {e})") from e
    return None


def _read_csv(table: Path, images: list[Path]) -> tuple[int, ...]:
    by_name: dict[str, int] = {}
    with table.open(encoding="utf-8", newline="") as f:
        for line, row in enumerate(csv.reader(f), start=1):
            if not row or not "".join(row).strip():
                continue
            if len(row) != 2:
                raise CalibrationError(f"{table}: line {line}: expected 'file,label', got {short(','.join(row))}")
            name, value = row[0].strip(), row[1].strip()
            if line == 1 and not value.lstrip("-").isdigit():
                continue  # a header
            if name in by_name:
                raise CalibrationError(f"{table}: line {line}: {short(name)} is listed twice")
            by_name[name] = _label(value, f"{table}: line {line}")
    known = {p.name for p in images}
    stray = next((n for n in by_name if n not in known), None)
    if stray is not None:
        raise CalibrationError(f"{table}: names {short(stray)}, which is not an image in {table.parent}")
    missing = next((p.name for p in images if p.name not in by_name), None)
    if missing is not None:
        raise CalibrationError(f"{table}: has no label for {short(missing)}")
    return tuple(by_name[p.name] for p in images)


def _decode(path: Path, spec: ImagePreprocess, geometry: ImageGeometry) -> np.ndarray:
    from PIL import Image  # noqa: PLC0415 - Pillow is the optional [data] extra

    try:
        with Image.open(path) as image:
            image.load()
            return preprocess(image, spec, geometry, str(path))
    except CalibrationError:
        raise
    except Exception as e:  # PIL raises OSError, ValueError, SyntaxError, DecompressionBombError, ...
        message = " ".join(str(e).split()) or type(e).__name__
        raise CalibrationError(f"{path}: cannot read image ({type(e).__name__}: {message})") from e


def open_images(
    folder: str | Path,
    specs: list[InputSpec],
    spec: ImagePreprocess | None,
    *,
    samples: int | None = None,
    seed: int = 0,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ArraySource:
    """Decode a folder's images (``samples`` of them by a seeded shuffle) into a source for the model's input.

    Raises:
        CalibrationError: no preprocessing given, a file that is not a readable image (named), a
            model input images cannot feed, or more than :data:`MAX_DECODED_BYTES` decoded.
    """
    _require_pillow()
    found = scan_images(folder)
    if spec is None:
        raise CalibrationError(
            f"{found.root}: holds images; say how to scale their pixels: --preprocess imagenet|0-1|-1-1|raw "
            "(or --scale/--mean/--std)"
        )
    geometry = image_geometry(spec, specs, dict(input_shapes or {}), str(found.root))
    chosen = pick_samples(len(found.files), samples, seed)
    sample = geometry.sample_shape()
    lead = (len(chosen),) if geometry.shape[0] is None else (len(chosen), 1)
    nbytes = math.prod((*lead, *sample)) * geometry.input.dtype.itemsize
    if nbytes > MAX_DECODED_BYTES:
        raise CalibrationError(
            f"{found.root}: {len(chosen)} images take {nbytes / 2**30:.1f} GiB decoded "
            f"(at most {MAX_DECODED_BYTES / 2**30:.0f}); read fewer with --samples N"
        )
    pixels = np.empty((*lead, *sample), dtype=geometry.input.dtype)
    for done, index in enumerate(chosen):
        pixels[done] = _decode(found.files[index], spec, geometry).reshape(pixels.shape[1:])
        if progress is not None:
            progress(done + 1, len(chosen))
    arrays = {geometry.input.name: pixels}
    if found.labels is not None:
        arrays["label"] = np.asarray([found.labels[i] for i in chosen], dtype=np.int64)
    resolved = InputSpec(geometry.input.name, geometry.input.dtype, geometry.shape)
    return ArraySource(arrays, [resolved], str(found.root), kind="images")


def _require_pillow() -> None:
    try:
        import PIL  # noqa: F401, PLC0415
    except ImportError as e:
        raise CalibrationError("reading images needs Pillow: pip install 'onnxprune[data]'") from e
