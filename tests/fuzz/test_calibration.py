"""Fuzz: every data-reading verb on mutated calibration/validation files."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, note
from hypothesis import strategies as st

from tests.fuzz.calib_mutations import CalibEdit, calib_edits, nonfinite_input, write_mutated
from tests.fuzz.contract import assert_contract, invoke, snapshot
from tests.fuzz.seeds import SEEDS, seed_model, write_calibration, write_model
from tests.fuzz.settings import fuzz_settings

pytestmark = pytest.mark.fuzz

#: command -> (arguments, whether it reads the values of the mutated file)
COMMANDS = {
    "prune --sparsity --calib": (("prune", "{model}", "-o", "{out}", "--sparsity", "0.5", "--calib", "{mut}"), True),
    "prune --pattern --calib": (("prune", "{model}", "-o", "{out}", "--pattern", "2:4", "--calib", "{mut}"), True),
    "prune --channels --calib": (("prune", "{model}", "-o", "{out}", "--channels", "0.5", "--calib", "{mut}"), True),
    "prune --sparsity wanda --calib": (
        ("prune", "{model}", "-o", "{out}", "--sparsity", "0.5", "--importance", "wanda", "--calib", "{mut}"),
        True,
    ),
    "prune --data": (
        ("prune", "{model}", "-o", "{out}", "--sparsity", "0.5", "--calib", "{clean}", "--data", "{mut}"),
        True,
    ),
    "lowrank --calib": (("lowrank", "{model}", "-o", "{out}", "--energy", "0.9", "--calib", "{mut}"), True),
    "inspect --calib": (("inspect", "{model}", "--calib", "{mut}"), False),
    "validate --data": (("validate", "{model}", "{model}", "--data", "{mut}"), True),
}

CALIB_STRATEGIES: dict[str, Any] = {
    "base": st.sampled_from(sorted(b for b in SEEDS if not b.endswith("_ext"))),
    "command": st.sampled_from(sorted(COMMANDS)),
    "edits": st.lists(calib_edits(), min_size=1, max_size=3),
}


def run_mutated_calibration(root: Path, base: str, command: str, edits: list[CalibEdit]) -> None:
    """Write the seed and a mutated calibration file, run the command and assert the contract."""
    folder = root / "in"
    folder.mkdir()
    model = folder / "model.onnx"
    write_model(seed_model(base), model)
    clean = folder / "clean.npz"
    arrays = write_calibration(base, clean)
    key = SEEDS[base][1]
    mutated = folder / "calib.npz"
    final, done = write_mutated(mutated, arrays, key, edits)
    out = folder / "pruned.onnx"
    template, reads_values = COMMANDS[command]
    args = [a.format(model=model, out=out, clean=clean, mut=mutated) for a in template]
    context = f"seed {base}, calibration edits: {'; '.join(done) or '(none applied)'}"
    note(context)
    must_fail = "NaN/Inf calibration values" if reads_values and nonfinite_input(final, key) else None
    before = snapshot(folder)
    outcome = invoke(args)
    assert_contract(
        outcome,
        folder,
        before,
        output=out if args[0] in ("prune", "lowrank") else None,
        sample={k: v[:1] for k, v in arrays.items()},
        must_fail=must_fail,
        gated=args[0] != "inspect",
        context=context,
    )


@fuzz_settings(examples=200)
@given(**CALIB_STRATEGIES)
def test_mutated_calibration_keeps_the_contract(base: str, command: str, edits: list[CalibEdit]) -> None:
    with tempfile.TemporaryDirectory(prefix="fuzz-calib-") as root:
        run_mutated_calibration(Path(root), base, command, edits)
