"""Constants and standard-library helpers shared by the sparsify benchmark stages.

Only the standard library is imported here: the orchestrating process imports this module, and on
Linux an exec'd child inherits its parent's RSS high-water mark in ``ru_maxrss``.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import resource
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "bench" / "_models"
MODELS = ("resnet18", "mobilenetv2", "bert")
CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "magnitude-50%": ("unstructured", {"sparsity": 0.5, "importance": "magnitude", "scope": "layer"}),
    "wanda-50%": ("unstructured", {"sparsity": 0.5, "importance": "wanda", "scope": "layer"}),
    "2:4-magnitude": ("nm", {"n": 2, "m": 4, "importance": "magnitude"}),
}
TARGET_RATIO = 1.5
SEED = 0

logger = logging.getLogger("bench_sparsify")


def setup_logging(prefix: str) -> None:
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s {prefix} %(name)s %(levelname)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


def maxrss_mb() -> float:
    """``ru_maxrss`` of this process in MB (Linux reports KiB, macOS bytes)."""
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return value / 2**20 if sys.platform == "darwin" else value / 1024


def vmhwm_mb() -> float | None:
    """``VmHWM`` (this process's own RSS high-water mark) in MB, where /proc exists."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def environment() -> dict[str, Any]:
    """Python, machine and package versions for the report."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for package in ("onnxruntime", "numpy", "onnx", "onnx_ir", "torch"):
        try:
            versions[package] = version(package.replace("_", "-"))
        except PackageNotFoundError:
            versions[package] = None
    return {
        "python": platform.python_version(),
        "machine": platform.processor() or platform.machine(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        **versions,
    }


def time_v(stderr: str, field: str) -> str:
    """One field of ``/usr/bin/time -v``'s report (``""`` when absent)."""
    match = re.search(rf"^\s*{re.escape(field)}: (.+)$", stderr, re.MULTILINE)
    return match.group(1).strip() if match else ""


def clock_seconds(clock: str) -> float:
    """``/usr/bin/time`` elapsed ``[h:]m:ss.ss`` as seconds."""
    total = 0.0
    for part in clock.split(":"):
        total = total * 60 + float(part)
    return total


def rel(path: Path) -> str:
    """``path`` relative to the repository root where it lies inside it."""
    for candidate in (Path(path).absolute(), Path(path).resolve()):  # a link inside the repository stays inside
        if candidate.is_relative_to(ROOT):
            return str(candidate.relative_to(ROOT))
    return str(path)


def model_path(name: str) -> Path:
    """The cached export of benchmark model ``name``."""
    return CACHE / f"{name}_ts_op13.onnx"


def calib_path(name: str, samples: int) -> Path:
    """The cached calibration arrays of benchmark model ``name``."""
    return CACHE / f"{name}_calib_{samples}_seed{SEED}.npz"


def write_json(data: Any, path: Path) -> None:
    """Write ``data`` as indented JSON, atomically (temporary file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)


def write_results(out: Path, stem: str, meta: dict[str, Any], rows: list[dict[str, Any]], text: str) -> None:
    """``OUT/STEM.json`` (``meta`` and ``rows``) and ``OUT/STEM.md`` (``text``), each written atomically."""
    write_json({"meta": meta, "rows": rows}, out / f"{stem}.json")
    tmp = out / f"{stem}.md.tmp"
    tmp.write_text(text)
    tmp.replace(out / f"{stem}.md")
