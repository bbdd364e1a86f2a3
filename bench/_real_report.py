"""``real.md``: the real-model benchmark's results as readable tables, one section per model."""

from __future__ import annotations

from typing import Any


def _ratio(row: dict[str, Any], key: str, base: str | None = None) -> str:
    before = row["before"][base or key]
    return f"{row['after'][key] / before:.3f}" if before else "–"


def _row(row: dict[str, Any]) -> str:
    command = f"`{row['command']}`"
    if "metric" not in row:
        return f"| {row['label']} | **failed**: {row.get('error', '?')} | – | – | – | – | – | – | – | {command} |"
    drop = row["metric"] - row["dense_metric"]
    latency = row["latency"]
    ms = f" ({latency['ref_ms']:.3g} → {latency['cand_ms']:.3g} ms)" if "ref_ms" in latency else ""
    rss = f"{row['peak_rss_mb']:.0f}" if row.get("peak_rss_mb") else "–"
    mark = " †" if row.get("recovered_from_log") else ""
    return (
        f"| {row['label']}{mark} | **{row['metric']:.4f}** | {drop:+.4f} | {_ratio(row, 'params')} "
        f"| {_ratio(row, 'nonzero_params', 'params')} | {_ratio(row, 'macs')} | {_ratio(row, 'sparse_macs', 'macs')} "
        f"| {latency['speedup']:.2f}x{ms} "
        f"| {row['wall_s']:.0f} s / {rss} MB | {command} |"
    )


def markdown(results: dict[str, Any]) -> str:
    """The whole report: how it was measured, then per model its metric, dense baseline and case table."""
    env = results["environment"]
    latency = results["latency"]
    lines = [
        "# Real-model benchmark",
        "",
        "Trained models, real (rendered or hand-written) data, task metrics; calibration and evaluation samples "
        "are disjoint. Every case is one `onnxprune` command (shown; run from the repository root after "
        "`python bench/bench_real.py --only MODEL/` has prepared the files, `--threads "
        f"{results['prune_threads']}` added). Columns: the task metric of the pruned model and its change from "
        "the dense model; parameters and MACs kept (stored, and on nonzero weights: `nz`), from the command's "
        f"report; batch-1 latency speedup dense/pruned (onnxruntime CPU, {latency['threads']} thread, both "
        f"sessions in one process run alternately, median of {latency['rounds']} rounds of "
        f"{latency['runs'] // latency['rounds']} runs each); wall time and peak RSS of the command "
        "(`/usr/bin/time`).",
        "",
        f"Reproduce: `python bench/bench_real.py --out bench/results` (or `make bench-real`). Measured "
        f"{results['date']} on {env['cpu_count']} cores shared with other jobs (load average at the end "
        f"{results.get('loadavg_end')}), onnxruntime {env['onnxruntime']}, torch {env['torch']}; whole run "
        f"{results['seconds'] / 60:.1f} min{' (subset ' + repr(results['only']) + ')' if results.get('only') else ''}.",
    ]
    if any(row.get("recovered_from_log") for row in results["rows"]):
        lines += [
            "",
            "† Rebuilt from the log of an interrupted run (metric to 4 decimals, latency ratio to 2, wall time and "
            "RSS to the unit; counts from the command's report on disk); rerun the case to refresh it.",
        ]
    by_model: dict[str, list[dict[str, Any]]] = {}
    for row in results["rows"]:
        by_model.setdefault(row["model"], []).append(row)
    for name, rows in by_model.items():
        model = results["models"].get(name, {})
        lines += [
            "",
            f"## {model.get('title', name)}",
            "",
            f"Model `{model.get('file')}`; calibration `{model.get('calibration')}`, evaluation "
            f"`{model.get('evaluation')}`. Metric ({model.get('metric')}, `{model.get('metric_spec')}`): "
            f"{model.get('metric_doc')} **Dense: {rows[0]['dense_metric']:.4f}.**",
            "",
            f"| case | {model.get('metric', 'metric')} | Δ | params | nz params | MACs | nz MACs | latency "
            "| prune wall / peak RSS | command |",
            "|---|---|---|---|---|---|---|---|---|---|",
            *(_row(r) for r in rows),
        ]
    return "\n".join(lines) + "\n"
