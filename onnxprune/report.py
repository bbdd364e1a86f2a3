"""Reports: model statistics before/after, JSON output and a readable table."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import onnx_ir as ir
from rich.console import Console
from rich.table import Table

from onnxprune import _io, _scratch
from onnxprune.analysis.activity import Activity
from onnxprune.analysis.flops import ModelCounts, count_model
from onnxprune.analysis.shapes import assumed_dims, complete_shapes
from onnxprune.analysis.shrinkbench import ShrinkBenchCounts, prunable_counts
from onnxprune.analysis.weights import drop_pages

__all__ = [
    "HTML_SUFFIXES",
    "STAT_ROWS",
    "ModelStats",
    "activity_table",
    "comparison_table",
    "file_sizes",
    "human",
    "model_stats",
    "is_html",
    "print_table",
    "shrinkbench_of",
    "shrinkbench_table",
    "write_json",
    "write_report",
]


@dataclasses.dataclass(frozen=True)
class ModelStats:
    """Size and cost of one model (MACs per sample at the given input shapes).

    ``assumed_dims`` names the dynamic input dims counted at 1 for want of a shape (see
    :func:`onnxprune.analysis.shapes.assumed_dims`): the MACs are not those of real inputs.
    """

    params: int
    nonzero_params: int
    macs: int
    sparse_macs: int
    flops: int
    bytes: int
    zipped_bytes: int
    nodes: int
    assumed_dims: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly form."""
        return {**dataclasses.asdict(self), "assumed_dims": list(self.assumed_dims)}


def _tensor_chunks(tensor: ir.TensorProtocol, chunk: int = 1 << 22) -> Iterator[bytes]:
    """A tensor's bytes as written to disk; external data is read from its file, not memory-mapped."""
    if not isinstance(tensor, ir.ExternalTensor):
        yield tensor.tobytes()
        return
    left = tensor.length if tensor.length is not None else tensor.nbytes
    with open(tensor.path, "rb") as f:
        f.seek(tensor.offset or 0)
        while left > 0 and (block := f.read(min(chunk, left))):
            left -= len(block)
            yield block


def file_sizes(model: ir.Model) -> tuple[int, int]:
    """Bytes on disk (model + external data, as :func:`onnxprune.save` writes it) and bytes after zlib.

    Computed without writing a copy: the graph without its large tensors, plus their data streamed
    through zlib (alignment padding between tensors in a data file is not counted).
    """
    with _io.stripped_file(model) as path:
        graph = path.read_bytes()
        tensors = [v.const_value for v in model.graph.initializers.values() if _io.by_reference(v.const_value)]
    size, zipped, compressor = len(graph), len(zlib.compress(graph, 6)), zlib.compressobj(6)
    for tensor in tensors:
        for block in _tensor_chunks(tensor):
            size += len(block)
            zipped += len(compressor.compress(block))
    return size, zipped + len(compressor.flush())


def model_stats(model: ir.Model, input_shapes: Mapping[str, tuple[int, ...]] | None = None) -> ModelStats:
    """Parameters, nonzeros, MACs (dense and nonzero-aware), FLOPs, bytes and zipped bytes.

    ``input_shapes`` should be real per-sample shapes (``--input-shape``, or the data's; see
    :func:`onnxprune.calibration.sources.sample_shapes`); dynamic dims left out are counted at 1 and named.
    """
    counts: ModelCounts = count_model(model, complete_shapes(model, input_shapes))
    for graph in model.graphs():  # counting nonzeros read every weight: memory-mapped pages count in RSS
        for value in graph.initializers.values():
            if isinstance(value.const_value, ir.ExternalTensor):
                drop_pages(value.const_value)
    size, zipped = file_sizes(model)
    nodes = sum(1 for _ in ir.traversal.RecursiveGraphIterator(model.graph))
    return ModelStats(
        counts.params,
        counts.nonzero_params,
        counts.macs,
        counts.sparse_macs,
        counts.flops,
        size,
        zipped,
        nodes,
        assumed_dims(model, input_shapes),
    )


#: The before/after rows every report shows: (label, :class:`ModelStats` field).
STAT_ROWS = (
    ("parameters", "params"),
    ("nonzero parameters", "nonzero_params"),
    ("MACs (dense)", "macs"),
    ("MACs (nonzero weights)", "sparse_macs"),
    ("bytes on disk", "bytes"),
    ("bytes zipped", "zipped_bytes"),
)


def human(value: float) -> str:
    """``value`` with a k/M/G suffix and 3 significant digits (4 below 1000)."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{unit}"
    return f"{value:.4g}"


def comparison_table(before: ModelStats, after: ModelStats, validation: Mapping[str, Any] | None = None) -> Table:
    """A before/after table of the model statistics and, if given, the validation figures."""
    table = Table(title="onnxprune: before / after")
    for column in ("metric", "before", "after", "after/before"):
        table.add_column(column, justify="right" if column != "metric" else "left")
    for name, field in STAT_ROWS:
        a, b = getattr(before, field), getattr(after, field)
        table.add_row(name, human(a), human(b), f"{b / a:.3f}" if a else "-")
    if before.assumed_dims or after.assumed_dims:
        dims = ", ".join(dict.fromkeys((*before.assumed_dims, *after.assumed_dims)))
        table.add_row("[bold red]MACs at assumed dim 1[/bold red]", "", dims, "")
    if validation:
        _validation_rows(table, validation)
    return table


def _fidelity_cell(out: Mapping[str, Any]) -> str:
    parts = [f"max|Δ| {out['max_abs_diff']:.3g}", f"cos {out['mean_cosine']:.5f}"]
    if out.get("top1_agreement") is not None:
        parts.append(f"top-1 agree {out['top1_agreement']:.4f}")
    elif out.get("argmax_agreement") is not None:
        parts.append(f"argmax agree {out['argmax_agreement']:.4f} per position")
    if out.get("sequence_agreement") is not None:
        parts.append(f"whole sequence {out['sequence_agreement']:.4f}")
    if out.get("nonfinite_cand"):
        parts.append(f"[bold red]{out['nonfinite_cand']} NaN/inf[/bold red]")
    if out.get("nonfinite_ref"):
        parts.append(f"[bold red]reference {out['nonfinite_ref']} NaN/inf[/bold red]")
    return ", ".join(parts)


def _validation_rows(table: Table, validation: Mapping[str, Any]) -> None:
    table.add_row(
        "latency (ms, median)",
        f"{validation['latency_ref_ms']:.3f}",
        f"{validation['latency_cand_ms']:.3f}",
        f"{validation['latency_cand_ms'] / validation['latency_ref_ms']:.3f}",
    )
    if validation.get("random_inputs"):
        table.caption = "[bold yellow]validated on random inputs: fidelity not measured[/bold yellow]"
    metric = validation.get("metric")
    if metric:
        table.add_row(
            f"metric {metric['spec']}",
            f"{metric['reference']:.4g}",
            f"{metric['candidate']:.4g}",
            f"{-metric['drop']:+.4g}",
        )
    for out in validation["outputs"]:
        if out.get("accuracy_ref") is not None:
            table.add_row(
                f"top-1 accuracy '{out['name']}'",
                f"{out['accuracy_ref']:.4f}",
                f"{out['accuracy_cand']:.4f}",
                f"{out['accuracy_cand'] - out['accuracy_ref']:+.4f}",
            )
        table.add_row(f"output '{out['name']}'", "", _fidelity_cell(out), "")


def shrinkbench_of(model: ir.Model, stats: ModelStats) -> ShrinkBenchCounts:
    """ShrinkBench's counts of ``model``, reusing the parameter and MAC counts of its ``stats``."""
    prunable, nonzero = prunable_counts(model)
    return ShrinkBenchCounts(stats.params, stats.nonzero_params, prunable, nonzero, stats.macs, stats.sparse_macs)


def shrinkbench_table(before: ShrinkBenchCounts, after: ShrinkBenchCounts) -> Table:
    """ShrinkBench's compression ratios and theoretical speedup of both models."""
    table = Table(title="ShrinkBench (nonzero counts)")
    for column in ("metric", "before", "after"):
        table.add_column(column, justify="right" if column != "metric" else "left")
    table.add_row("compression (all parameters)", f"{before.compression:.2f}x", f"{after.compression:.2f}x")
    table.add_row(
        "compression (prunable weights)", f"{before.prunable_compression:.2f}x", f"{after.prunable_compression:.2f}x"
    )
    table.add_row("theoretical speedup (MACs)", f"{before.speedup:.2f}x", f"{after.speedup:.2f}x")
    return table


def activity_table(reference: Activity, candidate: Activity) -> Table:
    """Activation density and dead units of every ReLU output in both models (matched by value name)."""
    table = Table(title=f"ReLU activity over {reference.samples} samples (density / dead-neuron rate / dead units)")
    for column in ("ReLU output", "reference", "candidate"):
        table.add_column(column, justify="right" if column != "ReLU output" else "left")

    def cell(layer: Any) -> str:
        if layer is None:
            return "-"
        return f"{layer.density:.3f} / {layer.dead_rate:.3f} / {layer.dead_units}/{layer.units}"

    ref_layers = {layer.value: layer for layer in reference.layers}
    cand_layers = {layer.value: layer for layer in candidate.layers}
    for name in dict.fromkeys((*ref_layers, *cand_layers)):
        table.add_row(name, cell(ref_layers.get(name)), cell(cand_layers.get(name)))
    table.add_row(
        "all",
        f"{reference.density:.3f} / {reference.dead_rate:.3f}",
        f"{candidate.density:.3f} / {candidate.dead_rate:.3f}",
    )
    return table


def print_table(table: Table, console: Console | None = None) -> None:
    """Render a table to the terminal (used by the CLI only)."""
    (console or Console()).print(table)


def _finite(data: Any) -> Any:
    """Non-finite floats (a NaN cosine, an infinite difference) as ``null``: strict JSON."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, Mapping):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_finite(v) for v in data]
    return data


#: Report paths with these suffixes get the HTML page (see :mod:`onnxprune.html`); any other gets JSON.
HTML_SUFFIXES = (".html", ".htm")


def is_html(path: str | os.PathLike) -> bool:
    """Whether a report written to ``path`` is the HTML page (by suffix, case-insensitive)."""
    return Path(path).suffix.lower() in HTML_SUFFIXES


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_text(text: str, path: Path) -> Path:
    """Write ``text`` to ``path`` atomically (a temporary file beside it, then renamed).

    The file gets the permissions a plain ``open`` would give it (``0o666`` less the umask), not
    the owner-only ones of the temporary file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".onnxprune-report-{_scratch.owner()}-", suffix=path.suffix, dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(data: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write ``data`` as JSON atomically (NaN/inf written as ``null``)."""
    return _write_text(json.dumps(_finite(data), indent=2, default=str), Path(path))


def write_report(
    data: Mapping[str, Any],
    path: str | os.PathLike,
    *,
    op_latency: Mapping[str, Mapping[str, float]] | None = None,
) -> Path:
    """Write a report atomically: JSON (:func:`write_json`), or one self-contained HTML page.

    The page is written for a ``.html``/``.htm`` path; ``op_latency`` (milliseconds per op type for
    each model, see :func:`onnxprune.html.profile.op_latency`) is drawn there as grouped bars.
    """
    if not is_html(path):
        return write_json(data, path)
    from onnxprune.html.page import render_page

    plain = json.loads(json.dumps(_finite(data), default=str))
    return _write_text(render_page(plain, op_latency), Path(path))
