"""Hypothesis settings of the fuzzers: bounded and reproducible in CI, longer on request.

``ONNXPRUNE_FUZZ_EXAMPLES=N`` runs N examples per test instead of the CI default;
``ONNXPRUNE_FUZZ_RANDOM=1`` draws fresh random examples (CI is derandomized: the same examples every run).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, Phase, settings

__all__ = ["fuzz_settings"]


def fuzz_settings(examples: int) -> settings:
    """Settings for one fuzz test that runs ``examples`` examples in CI."""
    randomized = bool(os.environ.get("ONNXPRUNE_FUZZ_RANDOM"))
    return settings(
        max_examples=int(os.environ.get("ONNXPRUNE_FUZZ_EXAMPLES", examples)),
        deadline=None,
        derandomize=not randomized,
        database=None,
        print_blob=randomized,
        suppress_health_check=list(HealthCheck),
        # the explain phase traces every line: the CLI runs 10-100x slower under it
        phases=tuple(p for p in Phase if p is not Phase.explain),
    )
