"""SIGINT and SIGTERM end a command cleanly: the stack unwinds, scratch folders and half-written files go.

Python's default SIGTERM kills the process on the spot (no ``finally``, no ``atexit``), leaving
scratch folders behind; SIGINT raises ``KeyboardInterrupt``, which click reports as "Aborted!" with
exit 1. Inside :func:`exit_on_signals` both raise :class:`Interrupted` instead (a ``BaseException``,
so no ``except Exception`` swallows it), every cleanup runs, and the command prints one line and
exits ``128 + signal`` (130 for SIGINT, 143 for SIGTERM).
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator
from types import FrameType

import click

from onnxprune import _scratch

__all__ = ["Interrupted", "exit_on_signals"]

_SIGNALS = tuple(s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None)


class Interrupted(BaseException):
    """A signal asked the command to stop."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        """The signal's name (``SIGTERM``)."""
        try:
            return signal.Signals(self.signum).name
        except ValueError:
            return f"signal {self.signum}"


def _raise(signum: int, _frame: FrameType | None) -> None:
    for s in _SIGNALS:  # a second signal must not interrupt the cleanups the first one started
        signal.signal(s, signal.SIG_IGN)
    raise Interrupted(signum)


@contextlib.contextmanager
def exit_on_signals() -> Iterator[None]:
    """Turn SIGINT/SIGTERM/SIGHUP into :class:`Interrupted` in the block; exit 128+signal with one line."""
    previous = {s: signal.signal(s, _raise) for s in _SIGNALS}
    try:
        yield
    except Interrupted as e:
        _scratch.remove_all()  # in case the signal cut a cleanup short
        click.echo(f"onnxprune: error: interrupted by {e.name}; temporary files removed", err=True)
        sys.exit(128 + e.signum)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
