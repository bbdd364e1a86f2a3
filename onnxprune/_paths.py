"""Output paths checked before any work: never an input file, never a special file, always writable.

:func:`check_outputs` is the one place that decides. Every command that writes calls it with
what it will write (``-o``, ``--report``, OUT's external-data file, analyze's files) and every
file it reads (model and its external data, calibration and validation data, labels, teacher,
recipe, metric module), before a pass runs. A path is the same file as another when both exist
and share ``st_dev``/``st_ino`` (hard links, symlinks) or when their resolved forms are equal
(``../`` spellings, symlinked folders, files not yet written).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path

from onnxprune.calibration.images import IMAGE_SUFFIXES, LABEL_FILES
from onnxprune.errors import OutputPathError

__all__ = ["DATA_SUFFIX_LEN", "check_outputs", "data_files", "name_max", "same_file"]

#: ``OUT.onnx.<token>.data``: the longest external-data name :func:`onnxprune._io.save` writes for OUT.
DATA_SUFFIX_LEN = len(".0123456789abcdef.data")


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a symlink loop
        return Path(os.path.abspath(path))


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether ``a`` and ``b`` name the same file (inode when both exist, else resolved path)."""
    a, b = Path(a), Path(b)
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        pass
    else:
        if (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino):
            return True
    return _resolved(a) == _resolved(b)


def data_files(path: str | os.PathLike | None) -> list[Path]:
    """The files a data argument reads: the file itself, or a folder's arrays, images and label files.

    Images count at the folder's top level and one folder down (one folder per class).
    """
    if path is None:
        return []
    path = Path(path)
    if not path.is_dir():
        return [path]
    wanted = (".npz", ".npy", *IMAGE_SUFFIXES)
    try:
        found = [p for p in path.iterdir() if p.suffix.lower() in wanted or p.name in LABEL_FILES]
        for sub in (p for p in path.iterdir() if p.is_dir()):
            found += [p for p in sub.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
    except OSError:
        return []
    return sorted(found)


def name_max(folder: Path) -> int:
    """The longest file name the folder's file system takes (255 when it cannot be asked)."""
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return 255


def _existing_ancestor(path: Path) -> Path:
    folder = Path(os.path.abspath(path)).parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def _check_writable(label: str, path: Path, data_name_len: int) -> None:
    """One output: names that fit, not a folder, not a special file, in a writable folder."""
    folder = _existing_ancestor(path)
    limit = name_max(folder)
    if len(os.fsencode(path.name)) > limit:
        raise OutputPathError(f"{path}: {label}'s file name is longer than {limit} bytes; choose a shorter name")
    if data_name_len and len(os.fsencode(path.name)) + data_name_len > limit:
        raise OutputPathError(
            f"{path}: {label}'s name is too long for its external-data file "
            f"(OUT name + {data_name_len} bytes > {limit}); choose a shorter name"
        )
    try:
        info = os.stat(path)
    except FileNotFoundError:
        info = None
    except OSError as e:
        raise OutputPathError(f"{path}: {label} cannot be used ({e.strerror or e})") from e
    if info is not None:
        if stat.S_ISDIR(info.st_mode):
            raise OutputPathError(f"{path}: {label} is a directory; give a file name")
        if not stat.S_ISREG(info.st_mode):
            raise OutputPathError(
                f"{path}: {label} is {_kind(info.st_mode)}, not a regular file; refusing to replace it"
            )
    if not folder.is_dir():
        raise OutputPathError(f"{path}: {label} cannot be written: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputPathError(f"{path}: {label} cannot be written: folder {folder} is not writable")


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a special file"


def check_outputs(
    outputs: Mapping[str, str | os.PathLike | None],
    inputs: Mapping[str, str | os.PathLike | Iterable[str | os.PathLike] | None],
    *,
    external_data: Iterable[str] = (),
) -> None:
    """Refuse outputs that are input files, each other, special files, folders or unwritable.

    Args:
        outputs: What will be written, by its option (``{"-o": out, "--report": report}``); ``None`` skipped.
        inputs: Every file read, by what it is (``{"the input model": path, "the calibration data": [...]}``).
        external_data: The labels of ``outputs`` that may be written with an external-data file
            beside them (the name must leave room for it, and it must not be another output).

    Raises:
        OutputPathError: One line naming the output, the option and the file it would overwrite.
    """
    given = {label: Path(p) for label, p in outputs.items() if p is not None}
    read: list[tuple[str, Path]] = []
    for what, value in inputs.items():
        if value is None:
            continue
        paths = [value] if isinstance(value, str | os.PathLike) else list(value)
        read.extend((what, Path(p)) for p in paths)
    with_data = set(external_data)
    for label, path in given.items():
        for what, source in read:
            if same_file(path, source):
                raise OutputPathError(f"{path}: {label} would overwrite {what} ({source}); choose another path")
    labels = list(given)
    for i, first in enumerate(labels):
        for second in labels[i + 1 :]:
            if same_file(given[first], given[second]):
                raise OutputPathError(f"{given[second]}: {second} is the same file as {first}; choose another path")
        if first in with_data:
            for other, path in given.items():
                if other != first and _is_data_of(path, given[first]):
                    raise OutputPathError(
                        f"{path}: {other} would overwrite the external data of {first} ({given[first]}); "
                        "choose another path"
                    )
    for label, path in given.items():
        _check_writable(label, path, DATA_SUFFIX_LEN if label in with_data else 0)


def _is_data_of(path: Path, model: Path) -> bool:
    """Whether ``path`` is (or could be) the external-data file onnxprune writes beside ``model``."""
    if _resolved(path).parent != _resolved(model).parent and not same_file(path.parent, model.parent):
        return False
    name, prefix = path.name, model.name + "."
    return name.startswith(prefix) and name.endswith(".data")
