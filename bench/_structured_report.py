"""The Markdown report and the console summary of the structured-pruning benchmark (standard library only)."""

from __future__ import annotations

from typing import Any


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _kept(kept: list[list[int]]) -> str:
    """``64->47 x4, 128->93 x4`` from [units, kept] pairs."""
    tally: dict[tuple[int, int], int] = {}
    for units, k in kept:
        tally[(units, k)] = tally.get((units, k), 0) + 1
    return ", ".join(f"{u}->{k}" + (f" x{n}" if n > 1 else "") for (u, k), n in sorted(tally.items()))


def _intro(results: dict[str, Any]) -> list[str]:
    env = results["environment"]
    load = results.get("loadavg_start"), results.get("loadavg_end")
    return [
        "# Structured (channel) pruning benchmark",
        "",
        f"{results['date']}; {env['cpu_count']} CPU cores ({env['machine']}), onnxruntime {env.get('onnxruntime')}, "
        f"onnx {env.get('onnx')}, onnx-ir {env.get('onnx_ir')}, numpy {env.get('numpy')}, torch {env.get('torch')}, "
        f"onnxsim {env.get('onnxsim')}, Python {env['python']}; load average at start / end {load[0]} / {load[1]}; "
        f"whole run {results['wall_s']:.0f} s.",
        "",
        "## How measured",
        "",
        "Models are exported from plain torch modules with the TorchScript exporter (`dynamo=False`, opset 13; "
        "trained-looking BatchNorm statistics, 10 classes) and, for the *dynamo* rows, with torch's default "
        "exporter (`dynamo=True`, opset 20) from `tests/models/vision_zoo.py` at full size with torchvision's own "
        "initialization and 1000 classes (BN folded, the all-zero folded biases dropped: every Conv bias-free), "
        "and cached in `bench/_models/`. *MACs* are the multiply-accumulates of Conv/Gemm/MatMul nodes at batch 1 "
        "(`onnxprune.analysis.flops.count_model` over `infer_shapes`), *params* every float initializer. "
        "Latency: batch 1, onnxruntime CPU execution provider, dense and pruned sessions built in the same process "
        "with the same intra-op thread count (1, then 2; inter-op 1) and intra-op spinning off "
        '(`session.intra_op.allow_spinning=0`, see "2 threads, measured three ways"), timed by '
        "`onnxprune.verify.measure_latency`, "
        "which alternates the two models run by run; it is called in "
        f"{results['rounds']} rounds of {results['runs'] // max(results['rounds'], 1)} runs (after warm-up), and "
        "the speedup is the median over rounds of dense median / pruned median (the spread over rounds is shown "
        "as min-max). *FLOPs speedup* = dense MACs / pruned MACs; *efficiency* = latency speedup / FLOPs speedup "
        f"(target >= {results['target_efficiency']} for the named 224x224 models). Every onnxprune run in "
        "sections 1 and 2 has `verify=True` (the shrunk model must equal the channel-masked model in onnxruntime). "
        "The machine is shared: other processes ran during the measurement (see the load average), which mostly "
        "shows in the 2-thread figures.",
        "",
    ]


def _speed_rows(rows: list[dict[str, Any]], named: bool) -> list[str]:
    lines = [
        "| model | input | round_to | groups pruned / total | channels removed | MACs kept | params kept "
        "| FLOPs speedup | 1 thread ms dense -> pruned | 1 thread speedup | 1 thread eff. "
        "| 2 threads ms dense -> pruned | 2 threads speedup | 2 threads eff. |" + (" target |" if named else ""),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---|" if named else ""),
    ]
    for r in rows:
        if r["named"] != named:
            continue
        shape = "x".join(str(d) for d in next(iter(r.get("input_shapes", {"": ["?"]}).values())))
        round_to = r.get("config", {}).get("round_to", "")
        if "error" in r:
            lines.append(f"| {r['label']} | {shape} | {round_to} | **error**: {r['error']} |")
            continue
        cells = [
            r["label"],
            shape,
            str(round_to),
            f"{r['pruned_groups']} / {r['groups']}",
            f"{r['channels_removed']} / {r['channels_in_prunable_groups']}",
            _pct(r["macs_ratio"]),
            _pct(r["params_ratio"]),
            f"{r['flops_speedup']:.2f}x",
        ]
        for t in ("1", "2"):
            lat = r["latency"][t]
            cells += [
                f"{lat['ref_ms']:.2f} -> {lat['cand_ms']:.2f}",
                f"{lat['speedup']:.2f}x ({lat['speedup_min']:.2f}-{lat['speedup_max']:.2f})",
                f"**{r['efficiency'][t]:.2f}**" if named else f"{r['efficiency'][t]:.2f}",
            ]
        if named:
            cells.append("met" if r["meets_target"] else "**not met**")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _speed(results: dict[str, Any]) -> list[str]:
    speed = results.get("speed")
    if not speed:
        return []
    rows = speed["rows"]
    cfg = speed["config"]
    lines = [
        "## 1. Speed: 50% of the channels removed",
        "",
        f"`ChannelPruneConfig(ratio={cfg['ratio']}, importance='{cfg['importance']}', scope='{cfg['scope']}', "
        f"reconstruct={cfg['reconstruct']}, verify=True, round_to=1|8|16)`; every coupled group keeps half its "
        "channels (with `round_to`, kept counts are rounded to multiples of it). round_to=16 matches the channel "
        "block of onnxruntime's NCHWc convolution kernels on AVX-512 CPUs (8 on AVX2); this machine "
        f"{'has' if results['environment'].get('avx512f') else 'does not have'} AVX-512F. "
        "*groups pruned / total*: coupled channel groups the pass shrank, of all it found (the one "
        "feeding the classifier output is never prunable); *channels removed*: of those in prunable groups.",
        "",
        "### Real-size models (224x224, batch 1)",
        "",
        *_speed_rows(rows, named=True),
        "",
    ]
    for r in rows:
        if r["named"] and "error" not in r:
            lines.append(
                f"- {r['label']}, round_to={r['config']['round_to']}: efficiency "
                f"{r['efficiency']['1']:.2f} (1 thread) / {r['efficiency']['2']:.2f} (2 threads) -> target "
                f"(>= {speed['target_efficiency']} at both thread counts) {'met' if r['meets_target'] else 'NOT met'}"
                + (
                    f"; 2 threads alone with spinning on: {r['efficiency_2_alone_spinning']:.2f}"
                    if "efficiency_2_alone_spinning" in r
                    else ""
                )
            )
    scaling = [
        (r["label"], r["latency"]["1"]["ref_ms"] / r["latency"]["2"]["ref_ms"])
        for r in rows
        if r["named"] and "error" not in r and r["config"]["round_to"] == 1
    ]
    if scaling:
        lines += [
            "",
            "Dense-model 2-thread scaling in the interleaved measurement (1-thread ms / 2-thread ms; ResNet-18-like "
            "reaches about 1.9 on an idle 2-core machine; lower values come from small, memory-bound ops that do "
            "not parallelize, or from another process holding a core): "
            + ", ".join(f"{label} {x:.2f}" for label, x in scaling)
            + ".",
        ]
    other = [r for r in rows if "latency_2_alone-spinning" in r]
    if other:
        lines += [
            "",
            "### 2 threads, measured three ways",
            "",
            "*interleaved, spinning off*: the figure above. *interleaved, spinning on*: the same with "
            "`onnxprune._ort.session` as is (onnxruntime's default `session.intra_op.allow_spinning=1`): while "
            "`measure_latency` alternates the two sessions, the idle intra-op worker of one busy-waits on the core "
            "the other session's run needs, so the dense model barely gets faster with 2 threads and the figures "
            "are distorted (in either direction). *alone, spinning on*: a fresh default session per block of runs "
            "with the other model's session not alive, blocks alternating round by round - what a deployment with "
            "one model per process sees.",
            "",
            "| model | round_to | interleaved, spinning off | interleaved, spinning on | alone, spinning on "
            "| efficiency, alone |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for r in other:
            cells = [r["label"], str(r["config"]["round_to"])]
            for lat in (r["latency"]["2"], r["latency_2_interleaved-spinning"], r["latency_2_alone-spinning"]):
                cells.append(f"{lat['ref_ms']:.2f} -> {lat['cand_ms']:.2f} ms, {lat['speedup']:.2f}x")
            cells.append(f"{r['efficiency_2_alone_spinning']:.2f}")
            lines.append("| " + " | ".join(cells) + " |")
    profiled = [r for r in rows if "profile" in r]
    if profiled:
        lines += [
            "",
            "### Where the time goes (1 thread, onnxruntime profiler, round_to=1)",
            "",
            "Kernel time per run by kind of node, dense -> pruned, beside the MACs of the same nodes. A kind whose "
            "time shrinks less than its MACs drags the efficiency down; *other ops* (activations, SE gating, "
            "pooling, NCHWc layout reorders, Gemm) have time but few or no MACs.",
            "",
            "| model | kind | dense ms | pruned ms | time speedup | share of dense time | MACs dense -> pruned "
            "| MACs speedup |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in profiled:
            kinds = r["profile"]["kinds"]
            total = sum(k["dense_ms"] for k in kinds.values()) or 1.0
            for kind, k in kinds.items():
                if k["dense_ms"] == 0 and k["dense_macs"] == 0:
                    continue
                t_speed = f"{k['dense_ms'] / k['pruned_ms']:.2f}x" if k["pruned_ms"] else "n/a"
                m_speed = f"{k['dense_macs'] / k['pruned_macs']:.2f}x" if k["pruned_macs"] else "n/a"
                lines.append(
                    f"| {r['label']} | {kind} | {k['dense_ms']:.2f} | {k['pruned_ms']:.2f} | {t_speed} | "
                    f"{_pct(k['dense_ms'] / total)} | {k['dense_macs'] / 1e6:.1f} M -> {k['pruned_macs'] / 1e6:.1f} M "
                    f"| {m_speed} |"
                )
    small = [r for r in rows if not r["named"]]
    if small:
        lines += [
            "",
            "### Small test architectures of `tests/models/structured_zoo.py` (default sizes, batch 1)",
            "",
            "Sub-millisecond models: latency is dominated by per-node overhead, so their efficiency says little "
            "about the pruned convolutions (no target). `efficientnet_b0_like` of the zoo is the EfficientNet-B0-like "
            "model above.",
            "",
            *_speed_rows(rows, named=False),
        ]
    blocked = [r for r in rows if "error" not in r and r.get("pruned_groups") == 0]
    if blocked:
        lines += ["", "Nothing pruned:", ""]
        lines += [f"- {r['label']}: " + "; ".join(r["skipped"]) for r in blocked]
    return lines + [""]


def _digits(results: dict[str, Any]) -> list[str]:
    d = results.get("digits")
    if not d:
        return []
    dense = d["dense"]
    inp = d["input"]
    lines = [
        "## 2. Accuracy: trained digits CNN",
        "",
        f"`{d['model']}`: input `{inp['name']}` {inp['dtype']} [{', '.join(map(str, inp['shape']))}] (8x8 grey "
        f"digits), weights {', '.join(f'{k} {v}' for k, v in d['weight_shapes'].items())}; {dense['macs']} MACs, "
        f"{dense['params']} params; dense top-1 accuracy **{_pct(dense['accuracy'])}** on {d['test']}. "
        f"Calibration (statistics, reconstruction, onnxsim Wanda): {d['calibration']}.",
        "",
        "### onnxprune, uniform ratio",
        "",
        "| channels removed | importance | reconstruct | top-1 | MACs kept | params |",
        "|---:|---|---|---:|---:|---:|",
    ]
    for r in d["onnxprune"]:
        c = r["config"]
        if "error" in r:
            lines.append(f"| {_pct(c['ratio'])} | {c['importance']} | {c['reconstruct']} | **error**: {r['error']} |||")
            continue
        lines.append(
            f"| {_pct(c['ratio'])} | {c['importance']} | {'on' if c['reconstruct'] else 'off'} | "
            f"{_pct(r['accuracy'])} | {_pct(r['macs_ratio'])} | {r['params']} |"
        )
    lines += [
        "",
        "### onnxsim 0.8.1 vs onnxprune at the same MACs",
        "",
        "onnxprune runs with `target_flops` = the MACs fraction onnxsim reached (same importance family: L2 for "
        "`apply_structured_pruning`, Wanda for `apply_structured_wanda_pruning`).",
        "",
        "| onnxsim call | onnxsim top-1 | MACs kept | params | onnxsim weights changed | onnxprune top-1 (MACs kept), "
        "reconstruct off | onnxprune top-1 (MACs kept), reconstruct on |",
        "|---|---:|---:|---:|---|---:|---:|",
    ]
    for comp in d["comparisons"]:
        sim = comp["onnxsim"]
        if "error" in sim:
            lines.append(f"| `{sim['function']}` | **error**: {sim['error']} ||||||")
            continue
        changed = (
            ", ".join(f"{k} {v}" for k, v in sim["weight_shapes"].items() if v != d["weight_shapes"].get(k)) or "none"
        )
        cells = [f"`{sim['function']}`", _pct(sim["accuracy"]), _pct(sim["macs_ratio"]), str(sim["params"]), changed]
        matched = {r["config"]["reconstruct"]: r for r in comp["onnxprune_matched"]}
        for rec in (False, True):
            r = matched.get(rec)
            if r is None:
                cells.append("n/a (onnxsim pruned nothing)")
            elif "error" in r:
                cells.append(f"error: {r['error']}")
            else:
                cells.append(f"{_pct(r['accuracy'])} ({_pct(r['macs_ratio'])})")
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def _onnxsim(results: dict[str, Any]) -> list[str]:
    o = results.get("onnxsim")
    if not o:
        return []
    lines = [
        "## 3. onnxsim vs onnxprune on ResNet-18-like (224x224) at onnxsim's MACs",
        "",
        f"Dense: {o['dense']['macs'] / 1e9:.3f} GMACs, {o['dense']['params'] / 1e6:.2f} M params. Fidelity against "
        f"the dense model on {o['eval_inputs']}, so it measures how far the outputs move, not accuracy: *rel L2* = "
        "||y_pruned - y_dense|| / ||y_dense|| over all logits, *top-1 agr.* = same argmax. onnxprune calibration: "
        f"{o['calibration']}.",
        "",
    ]
    distinct = o.get("onnxsim", {}).get("fidelity", {}).get("ref_distinct_top1")
    if distinct is not None and distinct <= 2:
        lines += [
            f"Note: on these random inputs the dense model predicts only {distinct} distinct class(es), so top-1 "
            "agreement is close to meaningless here; rel L2 and cosine are the figures to compare.",
            "",
        ]
    sim = o["onnxsim"]
    if "error" in sim:
        return lines + [f"onnxsim failed: {sim['error']}", ""]
    lines += [
        "*contended*: the dense model ran less than 1.33x faster with 2 threads than with 1 (it reaches about 1.9x "
        "on two idle cores), so another process held a core during that 2-thread measurement.",
        "",
        "| method | MACs kept | params kept | rel L2 | top-1 agr. | mean cosine | 1 thread: dense -> pruned, speedup "
        "| 2 threads: dense -> pruned, speedup | prune s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def row(label: str, r: dict[str, Any]) -> str:
        fid, lat = r["fidelity"], r["latency"]
        speed = [
            f"{lat[t]['ref_ms']:.1f} -> {lat[t]['cand_ms']:.1f} ms, {lat[t]['speedup']:.2f}x "
            f"({lat[t]['speedup_min']:.2f}-{lat[t]['speedup_max']:.2f})"
            for t in "12"
        ]
        if lat["2"]["ref_ms"] > 0.75 * lat["1"]["ref_ms"]:  # ResNet-18-like scales ~1.9x on 2 idle cores
            speed[1] += " **contended**"
        return (
            f"| {label} | {_pct(r['macs_ratio'])} | {_pct(r['params_ratio'])} | {fid['rel_l2']:.4f} | "
            f"{_pct(fid['top1_agreement'])} | {fid['mean_cosine']:.4f} | {speed[0]} | {speed[1]} | {r['seconds']:.1f} |"
        )

    lines.append(row(f"onnxsim `{sim['function']}`", sim))
    for r in o["onnxprune"]:
        c = r["config"]
        label = (
            f"onnxprune l2, target_flops={c['target_flops']:.4f}, reconstruct {'on' if c['reconstruct'] else 'off'}"
            f", round_to={c['round_to']}"
        )
        if "error" in r:
            lines.append(f"| {label} | **error**: {r['error']} ||||||||")
        else:
            lines.append(row(label, r))
    lines += [
        "",
        f"onnxsim changed {len(sim['changed_weights'])} weight tensors (consumer node: old -> new shape): "
        + "; ".join(f"`{n}`" for n in sim["changed_weights"])
        + ".",
        "",
    ]
    for r in o["onnxprune"]:
        if "error" not in r:
            lines.append(
                f"- onnxprune (reconstruct {'on' if r['config']['reconstruct'] else 'off'}, round_to="
                f"{r['config']['round_to']}): uniform ratio "
                f"{r['ratio_used']:.4f}, {r['channels_removed']} of {r['channels_in_prunable_groups']} channels removed"
                + (f" (channels kept per group: {_kept(r['kept'])})" if r.get("kept") else "")
                + (
                    f", {r['refitted']} consumers refitted (mean relative error {r['refit_error_before']:.4f} -> "
                    f"{r['refit_error_after']:.4f} on the calibration set)"
                    if r.get("refitted")
                    else ""
                )
                + "."
            )
    return lines + [""]


def markdown(results: dict[str, Any]) -> str:
    """The ``structured.md`` report."""
    lines = _intro(results) + _speed(results) + _digits(results) + _onnxsim(results)
    errors = results.get("errors") or []
    if errors:
        lines += ["## Problems", "", *[f"- {e}" for e in errors], ""]
    lines += [f"Reproduce: `{results['command']}`", ""]
    return "\n".join(lines)


def summary(results: dict[str, Any]) -> str:
    """The speed table and one line per comparison, for the console."""
    out = []
    speed = results.get("speed")
    if speed:
        out.append(f"{'model':22s} rt  MACs   params FLOPsx  1t-speedup eff   2t-speedup eff   target")
        for r in speed["rows"]:
            if "error" in r:
                out.append(f"{r['label']:22s} error: {r['error']}")
                continue
            lat, eff = r["latency"], r["efficiency"]
            target = ("met" if r["meets_target"] else "NOT met") if r["named"] else ""
            out.append(
                f"{r['label']:22s} {r['config']['round_to']:<3d} {r['macs_ratio']:.3f}  {r['params_ratio']:.3f}  "
                f"{r['flops_speedup']:5.2f}  {lat['1']['speedup']:5.2f}x     {eff['1']:.2f}  "
                f"{lat['2']['speedup']:5.2f}x     {eff['2']:.2f}  {target}"
            )
    digits = results.get("digits")
    if digits:
        out.append(f"digits dense top-1 {_pct(digits['dense']['accuracy'])}")
        for r in digits["onnxprune"]:
            if "error" not in r:
                c = r["config"]
                out.append(
                    f"  onnxprune {c['importance']:5s} ratio {c['ratio']:.2f} reconstruct {c['reconstruct']!s:5s} "
                    f"top-1 {_pct(r['accuracy'])} MACs {_pct(r['macs_ratio'])}"
                )
        for comp in digits["comparisons"]:
            sim = comp["onnxsim"]
            if "error" in sim:
                out.append(f"  onnxsim {sim['function']}: error {sim['error']}")
                continue
            matched = " / ".join(f"{_pct(r.get('accuracy'))}" for r in comp["onnxprune_matched"] if "error" not in r)
            out.append(
                f"  onnxsim {sim['function']}: top-1 {_pct(sim['accuracy'])} MACs {_pct(sim['macs_ratio'])}; "
                f"onnxprune at same MACs (rec off / on): {matched or 'n/a'}"
            )
    o = results.get("onnxsim")
    if o and "error" not in o.get("onnxsim", {}):
        for label, r in [("onnxsim", o["onnxsim"])] + [
            (
                f"onnxprune rec={'on' if r['config']['reconstruct'] else 'off'} rt={r['config'].get('round_to', 1)}",
                r,
            )
            for r in o["onnxprune"]
        ]:
            if "error" in r:
                out.append(f"resnet18 {label}: error {r['error']}")
                continue
            out.append(
                f"resnet18 {label:23s} MACs {_pct(r['macs_ratio'])} rel L2 {r['fidelity']['rel_l2']:.4f} "
                f"top-1 agr {_pct(r['fidelity']['top1_agreement'])} speedup 1t {r['latency']['1']['speedup']:.2f}x "
                f"2t {r['latency']['2']['speedup']:.2f}x"
            )
    return "\n".join(out)
