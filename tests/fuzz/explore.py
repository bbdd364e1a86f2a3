"""Run the fuzzers long and collect every distinct failure instead of stopping at the first.

Not a test (CI runs ``test_*.py``). Usage, from the repository root::

    python -m tests.fuzz.explore models 2000 > failures.txt    # models, calibration, recipes or all

Failures are grouped by their first assertion line and the error's first words (paths and
numbers masked); each group shows its count and the example with the fewest edits.
"""

from __future__ import annotations

import re
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.fuzz import test_calibration, test_models, test_recipes

#: name -> (runner taking a root folder and the drawn values, the strategies)
TARGETS: dict[str, tuple[Callable[..., None], dict[str, Any]]] = {
    "models": (
        test_models.run_mutated_model,
        {**test_models.MODEL_STRATEGIES, "file_edit": st.none() | test_models.file_mutations()},
    ),
    "calibration": (test_calibration.run_mutated_calibration, test_calibration.CALIB_STRATEGIES),
    "recipes": (test_recipes.run_mutated_recipe, test_recipes.RECIPE_STRATEGIES),
}


def _signature(message: str) -> str:
    lines = message.splitlines()
    stderr = next((line[8:] for line in lines if line.startswith("stderr:")), "")
    stderr = re.sub(r"/tmp/[\w./-]+", "PATH", stderr.replace("onnxprune: ", ""))
    stderr = re.sub(r"(?<=[ (])'[^' ]*'", "'…'", stderr)
    key = f"{lines[0][:60]} | {stderr[:110]}"
    return re.sub(r"\d+", "N", key)


def explore(name: str, examples: int) -> dict[str, list[str]]:
    """Run ``examples`` examples of one target and return failure messages grouped by signature."""
    runner, strategies = TARGETS[name]
    found: dict[str, list[str]] = {}

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=(Phase.generate,),
    )
    @given(**strategies)
    def run(**drawn: Any) -> None:
        with tempfile.TemporaryDirectory(prefix=f"explore-{name}-") as root:
            try:
                runner(Path(root), **drawn)
            except (AssertionError, BaseException) as e:  # noqa: B036 - collect timeouts as well
                if isinstance(e, KeyboardInterrupt):
                    raise
                message = f"{type(e).__name__}: {e}" if not isinstance(e, AssertionError) else str(e)
                found.setdefault(_signature(message), []).append(f"{drawn!r}\n{message}")

    run()
    return found


def main() -> None:
    target, examples = sys.argv[1], int(sys.argv[2])
    for name in TARGETS if target == "all" else [target]:
        start = time.perf_counter()
        found = explore(name, examples)
        print(f"## {name}: {examples} examples, {len(found)} failure classes, {time.perf_counter() - start:.0f} s")
        for signature, cases in sorted(found.items(), key=lambda kv: -len(kv[1])):
            shortest = min(cases, key=len)
            print(f"\n### [{len(cases)}x] {signature}\n{shortest[:3000]}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
