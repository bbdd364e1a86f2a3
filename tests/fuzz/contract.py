"""Run the CLI in-process as ``main()`` would and assert its contract on the result.

The contract (issue 11): exit 0 or 2 for any input defect (1 is an internal error; 3 only for a
fidelity gate); on failure exactly one stderr line ``onnxprune: error: ...``; every input file
byte-identical afterwards; the output absent, or loadable and runnable in onnxruntime on one sample;
nothing left behind (beside the output, nor in the temporary folder).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import traceback
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from click.testing import CliRunner

from onnxprune.cli import cli

__all__ = [
    "ERROR_PREFIX",
    "Outcome",
    "assert_contract",
    "invoke",
    "invoke_subprocess",
    "snapshot",
]

ERROR_PREFIX = "onnxprune: error:"
#: an error line longer than this does not "name the problem" (an alias bomb printed 3 million characters)
MAX_ERROR_CHARS = 2000
#: one example may not run longer than this (a hang is a failure, not a CI timeout)
TIMEOUT_S = 60
#: address space one example may add (a huge declared dim must fail cleanly, not swap the machine)
EXTRA_ADDRESS_SPACE = 4 << 30
_ENTRY = "from onnxprune.cli import main; main()"


class ExampleTimeout(BaseException):  # noqa: N818 - a BaseException so that handle_errors cannot swallow it
    """Raised by the alarm when one example runs past :data:`TIMEOUT_S`."""


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What one CLI run did."""

    args: tuple[str, ...]
    exit_code: int
    stdout: str
    stderr: str
    traceback: str = ""
    tmp_leftovers: tuple[str, ...] = ()

    def describe(self) -> str:
        tail = f"\n{self.traceback}" if self.traceback else ""
        return f"onnxprune {' '.join(self.args)}\nexit {self.exit_code}\nstderr: {self.stderr!r}{tail}"


def snapshot(folder: Path) -> dict[str, str]:
    """Every entry under ``folder`` (relative path -> sha256 of a file, 'dir' or 'link:target')."""
    found = {}
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        if path.is_symlink():
            found[rel] = f"link:{path.readlink()}"
        elif path.is_dir():
            found[rel] = "dir"
        elif path.is_file():
            found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            found[rel] = "special"
    return found


def _address_space() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


@contextlib.contextmanager
def _bounded() -> Iterator[None]:
    """Cap the address space and the wall time of one in-process run."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = _address_space() + EXTRA_ADDRESS_SPACE
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)

    def alarm(_signum: int, _frame: object) -> None:
        raise ExampleTimeout(f"the command ran longer than {TIMEOUT_S} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    signal.alarm(TIMEOUT_S)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@contextlib.contextmanager
def _fresh_warnings() -> Iterator[None]:
    """Python's default warning filters, with every warning shown again (as in a new process)."""
    with warnings.catch_warnings():
        warnings.resetwarnings()  # also makes warnings already shown once appear again
        warnings.simplefilter("default")
        for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.simplefilter("ignore", category)
        yield


@contextlib.contextmanager
def _private_tempdir() -> Iterator[Path]:
    """Point ``tempfile`` at a fresh folder for the run, so that leftovers there can be seen."""
    saved = tempfile.tempdir
    with tempfile.TemporaryDirectory(prefix="fuzz-tmp-") as scratch:
        tempfile.tempdir = scratch
        try:
            yield Path(scratch)
        finally:
            tempfile.tempdir = saved


def _process_exit() -> None:
    """Do what the end of a real process does to module-level scratch state (its ``atexit`` removal).

    The spill store of ``onnxprune.analysis.weights`` is a process global removed at exit; one
    in-process run must not see the previous run's. (A no-op once the store belongs to a run.)
    """
    weights = sys.modules.get("onnxprune.analysis.weights")
    spill_dir = getattr(weights, "_SPILL_DIR", None)
    if spill_dir is not None:
        shutil.rmtree(spill_dir, ignore_errors=True)
        weights._SPILL_DIR = None  # type: ignore[union-attr]


def invoke(args: Sequence[str | Path]) -> Outcome:
    """Run ``onnxprune -q ARGS`` in-process exactly as the console script does.

    ``main()`` is ``cli(prog_name="onnxprune")`` in click's standalone mode, which is what
    ``CliRunner.invoke`` runs: usage errors print and exit 2, ``handle_errors`` maps typed errors,
    and an exception escaping it (a traceback and exit 1 in a real shell) comes back as exit 1.
    """
    argv = ("-q", *map(str, args))
    with _private_tempdir() as scratch:
        with _bounded(), _fresh_warnings():
            result = CliRunner().invoke(cli, argv, prog_name="onnxprune", catch_exceptions=True)
        _process_exit()
        leftovers = tuple(sorted(p.name for p in scratch.iterdir()))
    tb = ""
    if result.exc_info is not None and not isinstance(result.exception, SystemExit):
        tb = "".join(traceback.format_exception(*result.exc_info))
    return Outcome(argv, result.exit_code, result.stdout, result.stderr, tb, leftovers)


def invoke_subprocess(args: Sequence[str | Path], cwd: Path) -> Outcome:
    """Run ``onnxprune -q ARGS`` as a real process through ``main()`` (slow: about 1.5 s of imports)."""
    argv = ("-q", *map(str, args))
    with tempfile.TemporaryDirectory(prefix="fuzz-tmp-") as scratch:
        env = {"PATH": "/usr/bin:/bin", "TMPDIR": scratch, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        done = subprocess.run(
            [sys.executable, "-c", _ENTRY, *argv],
            capture_output=True,
            text=True,
            cwd=cwd,
            env=env,
            timeout=TIMEOUT_S * 2,
            stdin=subprocess.DEVNULL,
        )
        # importing onnxruntime (1.2x) writes a session id file ``.ses`` into TMPDIR: not the tool's leftover
        leftovers = tuple(sorted(p.name for p in Path(scratch).iterdir() if p.name != ".ses"))
    return Outcome(argv, done.returncode, done.stdout, done.stderr, "", leftovers)


def _feeds(session: ort.InferenceSession, sample: dict[str, np.ndarray] | None) -> dict[str, np.ndarray]:
    """One sample per input: from the calibration data when it has the input, else zeros of its shape."""
    feeds = {}
    types = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int64)": np.int64}
    for info in session.get_inputs():
        dtype = types.get(info.type, np.float32)
        if sample is not None and info.name in sample:
            feeds[info.name] = np.asarray(sample[info.name]).astype(dtype)
        else:
            shape = [d if isinstance(d, int) and d > 0 else 1 for d in info.shape]
            feeds[info.name] = np.zeros(shape, dtype=dtype)
    return feeds


def _data_files(out: Path) -> set[Path]:
    """The external data files OUT refers to."""
    proto = onnx.load(str(out), load_external_data=False)
    files = set()
    for tensor in onnx.external_data_helper._get_all_tensors(proto):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            location = {e.key: e.value for e in tensor.external_data}.get("location", "")
            files.add((out.parent / location).resolve())
    return files


def _check_output(out: Path, sample: dict[str, np.ndarray] | None, context: str) -> set[Path]:
    """OUT loads and runs in onnxruntime on one sample; returns the files it consists of."""
    assert out.is_file(), f"exit 0 but no output file {out}\n{context}"
    try:
        session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        outputs = session.run(None, _feeds(session, sample))
    except Exception as e:  # noqa: BLE001 - any failure is the finding
        message = f"the output {out.name} does not run in onnxruntime: {type(e).__name__}: {e}\n{context}"
        raise AssertionError(message) from e
    assert outputs, f"the output {out.name} has no outputs\n{context}"
    return {out.resolve(), *_data_files(out)}


def assert_contract(
    outcome: Outcome,
    folder: Path,
    before: dict[str, str],
    *,
    output: Path | None = None,
    report: Path | None = None,
    sample: dict[str, np.ndarray] | None = None,
    must_fail: str | None = None,
    gated: bool = True,
    context: str = "",
) -> None:
    """Assert the CLI contract for one run whose inputs (and only they) lay in ``folder``.

    Args:
        outcome: The run.
        folder: The folder holding every input file; ``before`` is its :func:`snapshot` before the run.
        output: The model the command writes, if any; must run in onnxruntime on ``sample`` if written.
        report: The JSON report the command writes, if any.
        sample: One sample of the calibration data (a batch of one per input name).
        must_fail: Why this input must be refused (non-zero exit), when it must.
        gated: The command checks fidelity (exit 3 allowed); ``inspect`` does not.
        context: What was mutated, for the failure message.
    """
    where = f"{context}\n{outcome.describe()}"
    assert outcome.exit_code in (0, 2, 3), f"exit {outcome.exit_code} (1 is an internal error)\n{where}"
    if outcome.exit_code != 0:
        lines = outcome.stderr.splitlines()
        assert len(lines) == 1, f"a failure must print exactly one stderr line, got {len(lines)}\n{where}"
        assert lines[0].startswith(ERROR_PREFIX), f"the stderr line must start with '{ERROR_PREFIX}'\n{where}"
        assert len(lines[0]) <= MAX_ERROR_CHARS, f"the error line has {len(lines[0])} characters\n{where}"
    if outcome.exit_code == 3:
        assert gated, f"exit 3 is for missed fidelity gates only, and this command has none\n{where}"
    if must_fail is not None:
        assert outcome.exit_code != 0, f"accepted an input that must be refused: {must_fail}\n{where}"

    after = snapshot(folder)
    changed = [name for name, digest in before.items() if after.get(name) != digest]
    assert not changed, f"input files changed or removed: {changed}\n{where}"

    allowed: set[Path] = set()
    if outcome.exit_code == 0 and output is not None:
        allowed |= _check_output(output, sample, where)
    if outcome.exit_code == 0 and report is not None and report.exists():
        allowed.add(report.resolve())
    created = [name for name in after if name not in before]
    ancestors = {p for path in allowed for p in path.parents}
    unexpected = [n for n in created if (folder / n).resolve() not in allowed | ancestors]
    assert not unexpected, f"files left behind beside the inputs: {unexpected}\n{where}"
    assert not outcome.tmp_leftovers, f"left behind in the temporary folder: {outcome.tmp_leftovers}\n{where}"
