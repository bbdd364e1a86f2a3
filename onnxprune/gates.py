"""Fidelity gates over a validation report: ``--fail-below`` thresholds, NaN/inf outputs, low agreement.

``--fail-below`` takes comma-separated ``KEY=VALUE`` pairs; every key names a figure of the report:

=========== ======================================================================================
cos         mean per-sample cosine, every output
agree       argmax agreement per position, every output with a class axis ([N, C], [N, T, C])
top1        top-1 agreement, every [N, C] output
seq         fraction of samples whose every position agrees, every [N, T, C] output
acc         candidate top-1 accuracy, every output scored on the data's ``label``
acc-drop    reference accuracy minus candidate accuracy (fails when ABOVE the value)
metric      candidate ``--metric`` value
metric-drop reference ``--metric`` minus candidate (fails when ABOVE the value)
=========== ======================================================================================

A gate whose figure the report does not hold (``agree`` on a model without class outputs, ``acc``
without labels) is a usage error, never a silent pass. NaN fails every gate.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

from onnxprune.errors import OptionError

__all__ = ["LOW_AGREEMENT", "Gate", "low_agreement", "missed_gates", "nonfinite_outputs", "parse_fail_below"]

#: Argmax agreement on real data below which a result is flagged (``--strict`` refuses it).
LOW_AGREEMENT = 0.9

Figures = Callable[[Mapping[str, Any]], list[tuple[str, float]]]


def _per_output(field: str) -> Figures:
    def figures(validation: Mapping[str, Any]) -> list[tuple[str, float]]:
        return [(f"output '{o['name']}'", o[field]) for o in validation["outputs"] if o.get(field) is not None]

    return figures


def _accuracy_drop(validation: Mapping[str, Any]) -> list[tuple[str, float]]:
    return [
        (
            f"output '{o['name']}': {o['accuracy_ref']:.4f} -> {o['accuracy_cand']:.4f}",
            o["accuracy_ref"] - o["accuracy_cand"],
        )
        for o in validation["outputs"]
        if o.get("accuracy_ref") is not None
    ]


def _metric(field: str) -> Figures:
    def figures(validation: Mapping[str, Any]) -> list[tuple[str, float]]:
        m = validation.get("metric")
        return [] if not m else [(f"metric '{m['spec']}': {m['reference']:.4g} -> {m['candidate']:.4g}", m[field])]

    return figures


#: key -> (figures, fails when above the value, what is missing when there is no figure)
_KEYS: dict[str, tuple[Figures, bool, str]] = {
    "cos": (_per_output("mean_cosine"), False, "no numeric output"),
    "agree": (_per_output("argmax_agreement"), False, "no output has a class axis ([N, C] or [N, T, C])"),
    "top1": (_per_output("top1_agreement"), False, "no output is [N, C]"),
    "seq": (_per_output("sequence_agreement"), False, "no output is a sequence [N, T, C]"),
    "acc": (_per_output("accuracy_cand"), False, "the data holds no 'label'"),
    "acc-drop": (_accuracy_drop, True, "the data holds no 'label'"),
    "metric": (_metric("candidate"), False, "no --metric was given"),
    "metric-drop": (_metric("drop"), True, "no --metric was given"),
}


@dataclasses.dataclass(frozen=True)
class Gate:
    """One threshold: the figure ``key`` must be at least ``value`` (at most, for ``*-drop``)."""

    key: str
    value: float

    @property
    def upper(self) -> bool:
        """Whether the figure fails when above the value (drops)."""
        return _KEYS[self.key][1]


def parse_fail_below(text: str, *, metric: bool = True) -> tuple[Gate, ...]:
    """Parse ``cos=0.99,agree=0.95``; :class:`OptionError` on unknown keys, bad numbers, or metric keys without one."""
    gates = []
    for item in (part.strip() for part in text.split(",")):
        key, sep, value = item.partition("=")
        key = key.strip()
        if key not in _KEYS:
            raise OptionError(f"--fail-below '{item}': unknown key '{key}' (known: {', '.join(_KEYS)})")
        try:
            number = float(value) if sep else math.nan
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            raise OptionError(f"--fail-below '{item}': expected {key}=NUMBER")
        if key.startswith("metric") and not metric:
            raise OptionError(f"--fail-below {key}: {_KEYS[key][2]} (add --metric module:function)")
        gates.append(Gate(key, number))
    return tuple(gates)


def missed_gates(validation: Mapping[str, Any], gates: tuple[Gate, ...]) -> list[str]:
    """One line per figure that misses its gate; :class:`OptionError` for a gate the report has no figure for."""
    missed = []
    for gate in gates:
        figures, upper, absent = _KEYS[gate.key]
        found = figures(validation)
        if not found:
            raise OptionError(f"--fail-below {gate.key}: {absent}")
        for where, value in found:
            ok = value <= gate.value if upper else value >= gate.value
            if not ok:  # NaN fails too
                sign = ">" if upper else "<"
                missed.append(f"{gate.key} {value:.4g} {sign} {gate.value:g} ({where})")
    return missed


def nonfinite_outputs(validation: Mapping[str, Any]) -> list[str]:
    """Outputs holding NaN/inf: the candidate's where the reference is finite, then the reference's own.

    Either is a failure: NaN compares as neither different nor equal, so no figure would show it.
    """
    broken = [
        f"output '{o['name']}' holds {o['nonfinite_cand']} NaN/inf values where the reference is finite"
        for o in validation["outputs"]
        if o.get("nonfinite_cand")
    ]
    return broken + [
        f"the reference's output '{o['name']}' holds {o['nonfinite_ref']} NaN/inf values: fidelity cannot be measured"
        for o in validation["outputs"]
        if o.get("nonfinite_ref")
    ]


def low_agreement(validation: Mapping[str, Any], floor: float = LOW_AGREEMENT) -> list[str]:
    """Class outputs whose argmax agreement is below ``floor`` on real data (random inputs: none)."""
    if validation.get("random_inputs"):
        return []
    return [
        f"output '{o['name']}' argmax agreement {o['argmax_agreement']:.3f} < {floor:g} on real data"
        for o in validation["outputs"]
        if o.get("argmax_agreement") is not None and not o["argmax_agreement"] >= floor
    ]
