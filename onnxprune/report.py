"""Reports: model statistics before/after, JSON output and a readable table."""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import onnx_ir as ir
from rich.console import Console
from rich.table import Table

from onnxprune import _io
from onnxprune.analysis.flops import ModelCounts, count_model
from onnxprune.analysis.shapes import complete_shapes

__all__ = ["ModelStats", "comparison_table", "file_sizes", "model_stats", "print_table", "write_json"]


@dataclasses.dataclass(frozen=True)
class ModelStats:
    """Size and cost of one model (MACs per sample at the given input shapes)."""

    params: int
    nonzero_params: int
    macs: int
    sparse_macs: int
    flops: int
    bytes: int
    zipped_bytes: int
    nodes: int

    def as_dict(self) -> dict[str, int]:
        """JSON-friendly form."""
        return dataclasses.asdict(self)


def _zipped_size(paths: list[Path], chunk: int = 1 << 22) -> int:
    size = 0
    for path in paths:
        compressor = zlib.compressobj(6)
        with open(path, "rb") as f:
            while block := f.read(chunk):
                size += len(compressor.compress(block))
        size += len(compressor.flush())
    return size


def file_sizes(model: ir.Model) -> tuple[int, int]:
    """Bytes on disk (model + external data, as :func:`onnxprune.save` writes it) and bytes after zlib."""
    with tempfile.TemporaryDirectory(prefix="onnxprune-size-") as tmp:
        _io.save(model, Path(tmp) / "model.onnx")
        files = [p for p in Path(tmp).iterdir() if p.is_file()]
        return sum(p.stat().st_size for p in files), _zipped_size(files)


def model_stats(model: ir.Model, input_shapes: Mapping[str, tuple[int, ...]] | None = None) -> ModelStats:
    """Parameters, nonzeros, MACs (dense and nonzero-aware), FLOPs, bytes and zipped bytes."""
    counts: ModelCounts = count_model(model, complete_shapes(model, input_shapes))
    size, zipped = file_sizes(model)
    nodes = sum(1 for _ in ir.traversal.RecursiveGraphIterator(model.graph))
    return ModelStats(
        counts.params, counts.nonzero_params, counts.macs, counts.sparse_macs, counts.flops, size, zipped, nodes
    )


def _fmt(value: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{unit}"
    return f"{value:.4g}"


def comparison_table(before: ModelStats, after: ModelStats, validation: Mapping[str, Any] | None = None) -> Table:
    """A before/after table of the model statistics and, if given, the validation figures."""
    table = Table(title="onnxprune: before / after")
    for column in ("metric", "before", "after", "after/before"):
        table.add_column(column, justify="right" if column != "metric" else "left")
    rows = [
        ("parameters", before.params, after.params),
        ("nonzero parameters", before.nonzero_params, after.nonzero_params),
        ("MACs (dense)", before.macs, after.macs),
        ("MACs (nonzero weights)", before.sparse_macs, after.sparse_macs),
        ("bytes on disk", before.bytes, after.bytes),
        ("bytes zipped", before.zipped_bytes, after.zipped_bytes),
    ]
    for name, a, b in rows:
        table.add_row(name, _fmt(a), _fmt(b), f"{b / a:.3f}" if a else "-")
    if validation:
        table.add_row(
            "latency (ms, median)",
            f"{validation['latency_ref_ms']:.3f}",
            f"{validation['latency_cand_ms']:.3f}",
            f"{validation['latency_cand_ms'] / validation['latency_ref_ms']:.3f}",
        )
        for out in validation["outputs"]:
            if out.get("accuracy_ref") is not None:
                table.add_row(
                    f"top-1 accuracy '{out['name']}'",
                    f"{out['accuracy_ref']:.4f}",
                    f"{out['accuracy_cand']:.4f}",
                    f"{out['accuracy_cand'] - out['accuracy_ref']:+.4f}",
                )
            top1 = "" if out["top1_agreement"] is None else f", top-1 agree {out['top1_agreement']:.4f}"
            table.add_row(
                f"output '{out['name']}'",
                "",
                f"max|Δ| {out['max_abs_diff']:.3g}, cos {out['mean_cosine']:.5f}{top1}",
                "",
            )
    return table


def print_table(table: Table, console: Console | None = None) -> None:
    """Render a table to the terminal (used by the CLI only)."""
    (console or Console()).print(table)


def write_json(data: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write ``data`` as JSON atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".onnxprune-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, default=str)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
