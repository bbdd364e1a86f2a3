"""Fuzz: every verb on models with mutated protobuf fields, external data and bytes."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, note
from hypothesis import strategies as st

from tests.fuzz.contract import assert_contract, invoke, snapshot
from tests.fuzz.model_mutations import FileMutation, Mutation, apply, apply_file, file_mutations, mutations
from tests.fuzz.seeds import SEEDS, make_external, seed_model, write_calibration, write_model
from tests.fuzz.settings import fuzz_settings

pytestmark = pytest.mark.fuzz

#: verb -> arguments after the model ({model}, {out}, {clean}, {calib} are filled in)
COMMANDS = {
    "prune --sparsity": ("prune", "{model}", "-o", "{out}", "--sparsity", "0.5"),
    "prune --pattern": ("prune", "{model}", "-o", "{out}", "--pattern", "2:4"),
    "prune --channels": ("prune", "{model}", "-o", "{out}", "--channels", "0.5"),
    "lowrank --energy": ("lowrank", "{model}", "-o", "{out}", "--energy", "0.9"),
    "inspect": ("inspect", "{model}"),
    "inspect --ranks": ("inspect", "{model}", "--ranks"),
    "inspect --groups": ("inspect", "{model}", "--groups", "--calib", "{calib}"),
    "validate cand": ("validate", "{clean}", "{model}", "--data", "{calib}"),
    "validate ref": ("validate", "{model}", "{clean}", "--data", "{calib}"),
}
WRITES = {"prune", "lowrank"}


def run_mutated_model(
    root: Path,
    base: str,
    command: str,
    edits: list[Mutation],
    file_edit: FileMutation | None = None,
    calibrated: bool = True,
) -> None:
    """Build the seed, mutate it, run the command and assert the contract."""
    folder = root / "in"
    folder.mkdir()
    proto = seed_model(base)
    clean = folder / "clean.onnx"
    write_model(proto, clean)
    if base.endswith("_ext"):
        make_external(proto, folder)
    done = [d for d in (apply(m, proto, folder) for m in edits) if d]
    model = folder / "model.onnx"
    write_model(proto, model)
    if file_edit is not None:
        done.append(apply_file(file_edit, model))
    calib = folder / "calib.npz"
    arrays = write_calibration(base, calib)
    out = folder / "pruned.onnx"
    args = [a.format(model=model, out=out, clean=clean, calib=calib) for a in COMMANDS[command]]
    writes = args[0] in WRITES
    if writes and calibrated:
        args += ["--calib", str(calib)]
    context = f"seed {base}, mutations: {'; '.join(done) or '(none applied)'}"
    note(context)
    before = snapshot(folder)
    outcome = invoke(args)
    sample = {k: v[:1] for k, v in arrays.items()} if calibrated else None
    assert_contract(
        outcome,
        folder,
        before,
        output=out if writes else None,
        sample=sample,
        gated=not command.startswith("inspect"),
        context=context,
    )


MODEL_STRATEGIES: dict[str, Any] = {
    "base": st.sampled_from(sorted(SEEDS)),
    "command": st.sampled_from(sorted(COMMANDS)),
    "edits": st.lists(mutations(), min_size=1, max_size=3),
    "calibrated": st.booleans(),
}


@fuzz_settings(examples=250)
@given(**MODEL_STRATEGIES)
def test_mutated_fields_keep_the_contract(base: str, command: str, edits: list[Mutation], calibrated: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="fuzz-model-") as root:
        run_mutated_model(Path(root), base, command, edits, None, calibrated)


@fuzz_settings(examples=80)
@given(
    base=st.sampled_from(sorted(SEEDS)),
    command=st.sampled_from(sorted(COMMANDS)),
    file_edit=file_mutations(),
    edits=st.lists(mutations(), max_size=1),
)
def test_mutated_bytes_keep_the_contract(
    base: str, command: str, file_edit: FileMutation, edits: list[Mutation]
) -> None:
    with tempfile.TemporaryDirectory(prefix="fuzz-bytes-") as root:
        run_mutated_model(Path(root), base, command, edits, file_edit, True)
