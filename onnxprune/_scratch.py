"""Scratch folders that belong to one run, and the removal of those a dead run left behind.

Every folder (and save-time file) onnxprune creates is named after its owner: the boot, the
process id and the process's start time (``onnxprune-spill-<boot>-<pid>-<start>-XXXX``). A later
run can then prove an owner dead -- same boot and the pid gone or now another process, or another
boot and the folder untouched since this one began -- and remove what it left (SIGKILL, power
loss). A folder whose owner cannot be proven dead is kept.

A :class:`Scratch` is created lazily and removed by :meth:`Scratch.close` (a run's ``finally``),
when it is garbage collected, or at interpreter exit. :func:`current` is the scratch of the run in
progress (see :meth:`Scratch.activate`); outside any run it is a process-wide fallback.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import logging
import os
import re
import shutil
import tempfile
import time
import weakref
from collections.abc import Iterator
from pathlib import Path

__all__ = ["OWNER", "Scratch", "current", "is_dead", "owner", "remove_all", "sweep", "temp_dir", "temp_dir_path"]

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^\.?onnxprune-(?P<kind>[a-z]+)-(?P<boot>[0-9a-f]{8})-(?P<pid>\d+)-(?P<start>\d+)-")


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip().replace("-", "")[:8] or "00000000"
    except OSError:
        return "00000000"


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), ``None`` when unknown or gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    try:
        return int(stat.rsplit(")", 1)[1].split()[19])  # field 22, counted after the command name
    except (IndexError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: alive, owned by another user
        return True
    return True


def _boot_time() -> float | None:
    try:
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return time.time() - uptime


_BOOT = _boot_id()


def _owner() -> str:
    return f"{_BOOT}-{os.getpid()}-{_start_ticks(os.getpid()) or 0}"


#: This process's owner tag (recomputed in a forked child by :func:`owner`).
OWNER = _owner()


def owner() -> str:
    """The owner tag of the calling process."""
    global OWNER
    if f"-{os.getpid()}-" not in OWNER:
        OWNER = _owner()
    return OWNER


def is_dead(path: Path) -> bool:
    """Whether ``path`` is an onnxprune scratch entry whose owner is provably dead."""
    match = _NAME.match(path.name)
    if match is None:
        return False
    pid, start = int(match["pid"]), int(match["start"])
    if pid == os.getpid():
        return False
    if match["boot"] != _BOOT:
        boot = _boot_time()
        try:
            return boot is not None and path.lstat().st_mtime < boot
        except OSError:
            return False
    if not _alive(pid):
        return True
    ticks = _start_ticks(pid)
    return ticks is not None and start != 0 and ticks != start


def sweep(folder: Path) -> list[Path]:
    """Remove the onnxprune scratch entries in ``folder`` whose owners are provably dead; return them."""
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for entry in entries:
        if not is_dead(entry):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except OSError as e:
            logger.debug("cannot remove stale %s: %s", entry, e)
            continue
        logger.info("removed %s, left behind by a run that ended", entry)
        removed.append(entry)
    return removed


#: Every folder this process created and has not removed yet: the last resort of :func:`remove_all`.
_LIVE: dict[Path, int] = {}


def _remove(path: Path) -> None:
    if _LIVE.get(path, os.getpid()) == os.getpid():  # a forked child never removes its parent's folders
        shutil.rmtree(path, ignore_errors=True)
    _LIVE.pop(path, None)


def remove_all() -> None:
    """Remove every folder this process created and still holds (a signal cut a cleanup short, or exit)."""
    for path in list(_LIVE):
        _remove(path)


atexit.register(remove_all)


def temp_dir_path(kind: str, parent: str | os.PathLike | None = None, *, hidden: bool = False) -> Path:
    """Create an owned, empty folder (``parent``: default the system temp folder); the caller removes it.

    Entries that dead runs left in ``parent`` are removed first.
    """
    folder = Path(parent) if parent is not None else Path(tempfile.gettempdir())
    sweep(folder)
    prefix = f"{'.' if hidden else ''}onnxprune-{kind}-{owner()}-"
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=folder))
    _LIVE[path] = os.getpid()
    return path


@contextlib.contextmanager
def temp_dir(kind: str, parent: str | os.PathLike | None = None, *, hidden: bool = False) -> Iterator[Path]:
    """An owned temporary folder, removed on exit (also on exceptions and signals turned into them)."""
    path = temp_dir_path(kind, parent, hidden=hidden)
    try:
        yield path
    finally:
        _remove(path)


class Scratch:
    """One run's scratch folder: created on first use, removed on :meth:`close`, collection or exit."""

    def __init__(self, kind: str = "spill", parent: str | os.PathLike | None = None) -> None:
        self.kind = kind
        self.parent = parent
        self._path: Path | None = None
        self._finalizer: weakref.finalize | None = None

    @property
    def path(self) -> Path:
        """The folder (created now if it does not exist yet)."""
        if self._path is None:
            self._path = temp_dir_path(self.kind, self.parent)
            self._finalizer = weakref.finalize(self, _remove, self._path)
            logger.debug("scratch folder %s", self._path)
        return self._path

    @property
    def created(self) -> bool:
        """Whether the folder was created (and not yet removed)."""
        return self._path is not None

    def file(self, suffix: str = ".bin") -> Path:
        """A new empty file in the folder."""
        fd, name = tempfile.mkstemp(suffix=suffix, dir=self.path)
        os.close(fd)
        return Path(name)

    def close(self) -> None:
        """Remove the folder and everything in it (tensors spilled there become unreadable)."""
        if self._finalizer is not None:
            self._finalizer()
        self._path, self._finalizer = None, None

    @contextlib.contextmanager
    def activate(self) -> Iterator[Scratch]:
        """Make this the :func:`current` scratch in the block and close it when the block ends."""
        token = _CURRENT.set(self)
        try:
            yield self
        finally:
            _CURRENT.reset(token)
            self.close()

    def __enter__(self) -> Scratch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_CURRENT: contextvars.ContextVar[Scratch | None] = contextvars.ContextVar("onnxprune_scratch", default=None)
_fallback: Scratch | None = None


def current() -> Scratch:
    """The scratch of the run in progress; outside a run, one for the process (removed at exit)."""
    global _fallback
    active = _CURRENT.get()
    if active is not None:
        return active
    if _fallback is None:
        _fallback = Scratch()
    return _fallback
