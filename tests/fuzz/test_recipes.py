"""Fuzz: ``onnxprune run`` on mutated recipes (fields, types, paths, raw YAML)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, note
from hypothesis import strategies as st

from tests.fuzz.contract import assert_contract, invoke, snapshot
from tests.fuzz.recipe_mutations import (
    BASE_PASSES,
    PATHS,
    RecipeEdit,
    TextEdit,
    apply_text,
    dump,
    invalid_value,
    make_links,
    recipe_edits,
    render,
    text_edits,
)
from tests.fuzz.seeds import make_external, seed_model, write_calibration, write_model
from tests.fuzz.settings import fuzz_settings

pytestmark = pytest.mark.fuzz

RECIPE_STRATEGIES: dict[str, Any] = {
    "base": st.sampled_from(("cnn", "mlp_ext")),
    "pass_name": st.sampled_from(sorted(BASE_PASSES)),
    "edits": st.lists(recipe_edits(), max_size=3),
    "text_edit": st.none() | text_edits(),
    "output": st.none() | st.sampled_from(PATHS),
    "report": st.none() | st.sampled_from(PATHS),
}


def _effective(folder: Path, override: str | None, value: Any) -> Path | None:
    if override is not None:
        return Path(override) if Path(override).is_absolute() else folder / override
    return folder / value if isinstance(value, str) else None


def _as_read(text: str | bytes, fallback: dict[str, Any]) -> dict[str, Any]:
    """The mapping the edited text holds (where the tool may write), else the mapping before the edit."""
    try:
        parsed = yaml.safe_load(text)
    except (yaml.YAMLError, ValueError):
        return fallback
    return parsed if isinstance(parsed, dict) else fallback


def run_mutated_recipe(
    root: Path,
    base: str,
    pass_name: str,
    edits: list[RecipeEdit],
    text_edit: TextEdit | None,
    output: str | None,
    report: str | None,
) -> None:
    """Write model, calibration and a mutated recipe; ``run`` it and assert the contract."""
    folder = root / "in"
    folder.mkdir()
    proto = seed_model(base)
    if base.endswith("_ext"):
        make_external(proto, folder)
    write_model(proto, folder / "model.onnx")
    arrays = write_calibration(base, folder / "calib.npz")
    make_links(folder)
    data, done = render(folder, pass_name, edits)
    text: str | bytes = dump(data)
    if text_edit is not None:
        text, what = apply_text(text, text_edit, folder)
        done.append(what)
        data = _as_read(text, data)
    recipe = folder / "recipe.yaml"
    recipe.write_bytes(text if isinstance(text, bytes) else text.encode())
    spell = {"@abs-model": str(folder / "model.onnx"), "../in/model.onnx": f"../{folder.name}/model.onnx"}
    args = ["run", str(recipe)]
    if output is not None:
        output = spell.get(output, output)
        args += ["-o", output if Path(output).is_absolute() else str(folder / output)]
    if report is not None:
        report = spell.get(report, report)
        args += ["--report", report if Path(report).is_absolute() else str(folder / report)]
    context = f"{base} recipe with pass {pass_name}: {'; '.join(done) or '(unchanged)'}"
    note(context)
    must_fail = invalid_value(data) if text_edit is None else None
    before = snapshot(folder)
    outcome = invoke(args)
    assert_contract(
        outcome,
        folder,
        before,
        output=_effective(folder, args[args.index("-o") + 1] if output else None, data.get("output")),
        report=_effective(folder, args[args.index("--report") + 1] if report else None, data.get("report")),
        sample={k: v[:1] for k, v in arrays.items()},
        must_fail=must_fail,
        context=context,
    )
    assert not (folder / "pwned").exists(), f"a YAML tag ran code\n{context}"


@fuzz_settings(examples=120)
@given(**RECIPE_STRATEGIES)
def test_mutated_recipe_keeps_the_contract(
    base: str,
    pass_name: str,
    edits: list[RecipeEdit],
    text_edit: TextEdit | None,
    output: str | None,
    report: str | None,
) -> None:
    with tempfile.TemporaryDirectory(prefix="fuzz-recipe-") as root:
        run_mutated_recipe(Path(root), base, pass_name, edits, text_edit, output, report)
