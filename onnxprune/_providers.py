"""Execution providers by short name (``--ep cpu|cuda|tensorrt``): one parser for every verb that takes ``--ep``.

:func:`resolve_ep` turns the name into the provider list of an onnxruntime session and refuses, on one
line (exit 2), a provider this onnxruntime build lacks, naming those it has. :func:`check_session`
catches the other way a GPU run goes wrong: the provider is compiled in but does not load (missing
CUDA/TensorRT libraries), and onnxruntime silently runs everything on the CPU instead.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import tempfile
from collections.abc import Iterator, Mapping

import onnxruntime as ort

from onnxprune.errors import OptionError, ValidationError

__all__ = [
    "EP_CHOICES",
    "EP_HELP",
    "EP_PROVIDERS",
    "ExecutionTarget",
    "Provider",
    "available_eps",
    "capture_native_stderr",
    "check_session",
    "resolve_ep",
]

#: ``--ep`` names and the onnxruntime providers they select.
EP_PROVIDERS: Mapping[str, str] = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
EP_CHOICES = tuple(EP_PROVIDERS)
EP_HELP = (
    "Execution provider to run on: cpu, cuda or tensorrt (the last two need onnxruntime-gpu and a GPU; nodes the "
    "provider cannot take run on the CPU)."
)

#: A provider as onnxruntime takes it: a name, or a name with its options.
Provider = str | tuple[str, dict[str, str]]


@dataclasses.dataclass(frozen=True)
class ExecutionTarget:
    """Where sessions run: ``ep`` (a ``--ep`` name) and the providers list handed to onnxruntime."""

    ep: str
    providers: tuple[Provider, ...]

    @property
    def provider(self) -> str:
        """The onnxruntime name of the requested provider."""
        return EP_PROVIDERS[self.ep]


def available_eps() -> dict[str, str]:
    """``--ep`` names whose provider this onnxruntime has, plus any other provider it has (by its own name)."""
    have = ort.get_available_providers()
    known = {name: provider for name, provider in EP_PROVIDERS.items() if provider in have}
    others = {p: p for p in have if p not in EP_PROVIDERS.values()}
    return {**known, **others}


def resolve_ep(name: str, options: Mapping[str, str] | None = None) -> ExecutionTarget:
    """The providers for ``--ep NAME`` (``options``: the provider's own options), CPU last as fallback.

    Raises:
        OptionError: an unknown name, or a provider this onnxruntime build does not have (the message
            lists the ones it has).
    """
    if name not in EP_PROVIDERS:
        raise OptionError(f"--ep {name!r}: choose from {', '.join(EP_CHOICES)}")
    provider = EP_PROVIDERS[name]
    if provider not in ort.get_available_providers():
        have = ", ".join(f"{k} ({v})" if k != v else v for k, v in available_eps().items())
        hint = " (install onnxruntime-gpu on a machine with an NVIDIA GPU)" if name != "cpu" else ""
        raise OptionError(f"--ep {name}: this onnxruntime has no {provider}; available: {have}{hint}")
    first: Provider = (provider, dict(options)) if options else provider
    rest: tuple[Provider, ...] = () if name == "cpu" else ("CPUExecutionProvider",)
    return ExecutionTarget(name, (first, *rest))


def check_session(sess: ort.InferenceSession, target: ExecutionTarget, what: str) -> None:
    """Refuse a session on which the requested provider did not load (onnxruntime fell back to the CPU)."""
    used = sess.get_providers()
    if target.provider not in used:
        raise ValidationError(
            f"--ep {target.ep}: {target.provider} did not load for the {what} (onnxruntime runs it on "
            f"{', '.join(used)}; are the CUDA/TensorRT libraries on the library path? rerun with --debug)"
        )


@contextlib.contextmanager
def capture_native_stderr() -> Iterator[list[str]]:
    """Collect what native code writes to file descriptor 2 (onnxruntime's and TensorRT's logs).

    Yields a list that holds the captured text (one string) once the block has ended.
    """
    captured: list[str] = []
    sys.stderr.flush()
    with tempfile.TemporaryFile() as sink:
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.append(sink.read().decode(errors="replace"))
