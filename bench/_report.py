"""The Markdown report and the console summary of the sparsify benchmark (standard library only)."""

from __future__ import annotations

from typing import Any

from _common import TARGET_RATIO


def _intro(results: dict[str, Any]) -> list[str]:
    env = results["environment"]
    return [
        "# Sparsify benchmark",
        "",
        f"{results['samples']} random calibration samples, batch {results['batch_size']}, "
        f"onnxruntime CPU with {results['threads']} intra-op threads; {env['cpu_count']} CPU cores "
        f"({env['machine']}), onnxruntime {env.get('onnxruntime', '?')}, numpy {env.get('numpy', '?')}. "
        "Models exported from plain torch with the TorchScript exporter (`dynamo=False`, opset 13); "
        "images 224x224, BERT-like hidden 256, 4 layers, seq 128.",
        "",
    ]


def _config_table(results: dict[str, Any]) -> list[str]:
    lines = [
        "*pipeline s*: statistics collection + pruning (`Pipeline(...)(model)`), wall time; validation is "
        "timed apart. *peak MB*: `ru_maxrss` of a fresh process per configuration at the end of the pipeline "
        "(interpreter, imports, model + reference copy, calibration arrays included); *+MB*: growth of that "
        "high-water mark during the pipeline. *stats/plain*: median `collect_stats` time for the Wanda "
        "requests over a plain onnxruntime pass over the same samples, same process, alternated "
        f"({results['reps']} repetitions; target <= {TARGET_RATIO}x).",
        "",
        "| model | params | config | pipeline s | validate s | peak MB | +MB | sparsity | stats/plain ratio |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, entry in results["models"].items():
        info, ratio = entry["info"], entry["ratio"]
        for config, run in entry["configs"].items():
            mem = run["memory_mb"]
            ratio_cell = f"{ratio['ratio']:.2f}x" if config.startswith("wanda") else "n/a (no statistics)"
            lines.append(
                f"| {name} | {info['params'] / 1e6:.2f} M | {config} | {run['pipeline_s']:.2f} | "
                f"{run['validate_s']:.2f} | {mem['maxrss_after_pipeline']:.0f} | {mem['pipeline_growth']:.0f} | "
                f"{100 * (run['achieved_sparsity'] or 0):.1f}% | {ratio_cell} |"
            )
    return lines


def _ratio_table(results: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "## Statistics collection vs a plain onnxruntime pass",
        "",
        f"Medians in seconds. *plain*: `session.run` over all batches of {results['batch_size']} with a warm "
        "`_ort.session(model)`; *plain cold*: the same with a fresh session (built inside the timing); "
        "*collect_stats*: the Wanda requests, asked for batch "
        f"{results['batch_size']}; *stats batch*: the batch `collect_stats` actually runs after "
        "`_batch_within_budget` keeps one batch of fetched activations under `memory_mb` "
        "(*MB/batch*: measured size of that batch's activations); *fetch only*: a fresh calibration session "
        "returning the requested activations at the stats batch, no statistics (the floor for any NumPy "
        "statistics code).",
        "",
        "| model | activations | stats batch (memory_mb) | MB/batch | plain | plain cold | collect_stats | ratio "
        "| fetch only | floor ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, entry in results["models"].items():
        r = entry["ratio"]
        med = r["median_s"]
        lines.append(
            f"| {name} | {r['activations']} | {r['collect_batch_size']} ({r['collect_memory_mb']}) | "
            f"{r['fetched_mb_per_batch']:.0f} | {med['plain']:.2f} | {med['plain_cold']:.2f} | "
            f"{med['collect_stats']:.2f} | **{r['ratio']:.2f}x** | {med['fetch_only']:.2f} | "
            f"{r['ratio_floor_fetch_only']:.2f}x |"
        )
    return lines


def _profile_table(results: dict[str, Any]) -> list[str]:
    profiled = [(n, e["ratio"]) for n, e in results["models"].items() if "profile" in e["ratio"]]
    if not profiled:
        return []
    lines = [
        "",
        "## Where collect_stats spends its time (cProfile, one run)",
        "",
        "| model | total | session build | onnxruntime run | `ChannelStats.update` | of which: top callees |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name, r in profiled:
        p = r["profile"]
        callees = ", ".join(f"`{k}` {v:.2f}" for k, v in list(p.get("update_callees_s", {}).items())[:4])
        lines.append(
            f"| {name} | {p['profiled_total_s']:.2f} | {p['session_build_s']:.2f} | {p['onnxruntime_run_s']:.2f} "
            f"| {p.get('update_cumulative_s', 0):.2f} (self {p.get('update_self_s', 0):.2f}) | {callees} |"
        )
    return lines


def markdown(results: dict[str, Any]) -> str:
    """The ``sparsify.md`` report."""
    lines = _intro(results) + _config_table(results) + _ratio_table(results) + _profile_table(results)
    lines += ["", f"Reproduce: `{results['command']}`", ""]
    return "\n".join(lines)


def summary(results: dict[str, Any]) -> str:
    """A few lines per model for the console."""
    rows = []
    for name, entry in results["models"].items():
        r = entry["ratio"]
        rows.append(
            f"{name:12s} stats/plain {r['ratio']:.2f}x (plain {r['median_s']['plain']:.2f}s, collect_stats "
            f"{r['median_s']['collect_stats']:.2f}s at batch {r['collect_batch_size']}; "
            f"fetch-only floor {r['ratio_floor_fetch_only']:.2f}x)"
        )
        for config, run in entry["configs"].items():
            rows.append(
                f"  {config:14s} pipeline {run['pipeline_s']:6.2f}s  validate {run['validate_s']:6.2f}s  "
                f"peak {run['memory_mb']['maxrss_after_pipeline']:6.0f} MB (+{run['memory_mb']['pipeline_growth']:.0f})"
            )
    return "\n".join(rows)
