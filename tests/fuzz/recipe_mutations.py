"""Recipes for ``onnxprune run``: a valid base, field mutations, protected-path spellings and raw YAML."""

from __future__ import annotations

import copy
import dataclasses
import math
import os
from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st

__all__ = ["BASE_PASSES", "RecipeEdit", "TextEdit", "invalid_value", "render", "recipe_edits", "text_edits"]

#: pass name -> a valid config
BASE_PASSES: dict[str, dict[str, Any]] = {
    "unstructured": {"sparsity": 0.5},
    "nm": {"n": 2, "m": 4},
    "sparsegpt": {"sparsity": 0.5},
    "channels": {"ratio": 0.5},
    "lowrank": {"energy": 0.9},
    "depth": {"blocks": 1, "criterion": "angular"},
}
TOP_KEYS = (
    "model", "output", "validate", "validation_data", "latency_runs", "threads", "external_data", "report",
    "metric", "strict", "max_drop", "passes", "calibration", "preset", "overrides",
)  # fmt: skip
CALIB_KEYS = ("path", "samples", "batch_size", "input_shapes", "seed", "sequential", "memory_mb")
CONFIG_KEYS = (
    "sparsity", "n", "m", "ratio", "energy", "rank", "importance", "scope", "allocation", "include", "exclude",
    "round_to", "min_channels", "percdamp", "blocksize", "target_flops", "target_params", "max_ratio", "ridge",
    "blocks", "criterion", "unit", "max_error",
)  # fmt: skip
WEIRD = (
    None, True, False, 0, -1, -5, 0.5, 1.5, 1e308, math.nan, math.inf, -math.inf, "", "abc", "0.5", [], [1, 2],
    {}, {"a": 1}, 2**70, "ü",
)  # fmt: skip
#: spellings of the recipe's own inputs (and of other outputs) for output paths
PATHS = (
    "model.onnx", "./model.onnx", "../in/model.onnx", "calib.npz", "recipe.yaml", "weights.data", "link.onnx",
    "hard.onnx", "@abs-model", "out.onnx", "sub/new/out.onnx", "calib-link.npz", "report.json", "out.onnx.data",
)  # fmt: skip
#: CLI ranges the recipe fields must honour (``None`` is not judged here)
RANGES: dict[str, tuple[float, float, bool]] = {  # field -> (low, high, high_open)
    "calibration.samples": (1, math.inf, False),
    "calibration.batch_size": (1, math.inf, False),
    "calibration.memory_mb": (64, math.inf, False),
    "threads": (1, math.inf, False),
    "max_drop": (0, math.inf, True),
    "latency_runs": (0, math.inf, True),
    "passes.0.config.sparsity": (0, 1, True),
    "passes.0.config.ratio": (0, 1, True),
}
INTEGRAL = {"calibration.samples", "calibration.batch_size", "calibration.memory_mb", "threads", "latency_runs"}


@dataclasses.dataclass(frozen=True)
class RecipeEdit:
    """Set (``value``), delete (``@delete``) or add an unknown key at ``path`` (dotted, ``passes.0.config.x``)."""

    path: str
    value: Any

    def __repr__(self) -> str:
        return f"{self.path}={self.value!r}"


@dataclasses.dataclass(frozen=True)
class TextEdit:
    """An edit of the YAML text itself."""

    kind: str
    value: int = 0


def _set(data: dict[str, Any], path: str, value: Any) -> str:
    keys = path.split(".")
    node: Any = data
    for key in keys[:-1]:
        if isinstance(node, list):
            node = node[int(key)] if int(key) < len(node) else None
        elif isinstance(node, dict):
            node = node.setdefault(key, {})
        if not isinstance(node, (dict, list)):
            return ""
    last = keys[-1]
    if not isinstance(node, dict):
        return ""
    if value == "@delete":
        if last not in node:
            return ""
        del node[last]
        return f"{path} deleted"
    node[last] = value
    return f"{path} = {value!r}"


def render(folder: Path, pass_name: str, edits: list[RecipeEdit]) -> tuple[dict[str, Any], list[str]]:
    """The recipe mapping for the base pass with the edits applied (path spellings made concrete)."""
    data: dict[str, Any] = {
        "model": "model.onnx",
        "output": "out.onnx",
        "passes": [{"name": pass_name, "config": copy.deepcopy(BASE_PASSES[pass_name])}],
        "calibration": {"path": "calib.npz", "samples": 8, "batch_size": 4},
        "report": "report.json",
    }
    done = []
    for edit in edits:
        value = edit.value
        if value == "@abs-model":
            value = str(folder / "model.onnx")
        elif isinstance(value, str) and value.startswith("../in/"):
            value = f"../{folder.name}/{value[6:]}"
        done.append(_set(data, edit.path, value))
    return data, [d for d in done if d]


def invalid_value(data: dict[str, Any]) -> str | None:
    """A field of the rendered recipe outside the range the CLI enforces for it (it must be refused)."""
    for path, (low, high, high_open) in RANGES.items():
        node: Any = data
        for key in path.split("."):
            if isinstance(node, list) and key.isdigit() and int(key) < len(node):
                node = node[int(key)]
            elif isinstance(node, dict) and key in node:
                node = node[key]
            else:
                node = None
                break
        value = node
        if value is None or isinstance(value, bool):
            continue
        if not isinstance(value, (int, float)):
            return f"{path} = {value!r} is not a number"
        if math.isnan(value) or value < low or value > high or (high_open and value == high):
            return f"{path} = {value!r} is outside the CLI's range"
        if path in INTEGRAL and not float(value).is_integer():
            return f"{path} = {value!r} is not an integer"
    return None


def apply_text(text: str, edit: TextEdit, folder: Path) -> tuple[str | bytes, str]:
    """The recipe text with a text-level edit; what it did."""
    kind = edit.kind
    if kind == "alias_bomb":
        levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
        levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
        target = ("model", "output", "passes", "bogus", "calibration")[edit.value % 5]
        bomb = "bomb:\n" + "\n".join(f"  {line}" for line in levels) + "\n"
        swapped = text.replace(f"{target}:", f"{target}: *a8\nunused_{target}:", 1)
        return f"{bomb}{swapped}", f"alias bomb at {target}"
    if kind == "huge":
        size = (2, 16)[edit.value % 2] << 20
        return text + "# " + "x" * size + "\n", f"{size >> 20} MB comment appended"
    if kind == "huge_value":
        return text + f"bogus: {'y' * (4 << 20)}\n", "4 MB unknown value"
    if kind == "python_tag":
        marker = folder / "pwned"
        return text + f"metric: !!python/object/apply:os.system ['touch {marker}']\n", "python tag"
    if kind == "truncate":
        at = (edit.value * 7) % max(1, len(text))
        return text[:at], f"truncated at {at}"
    if kind == "bad_utf8":
        return text.encode() + b"\xff\xfe\xc3(\n", "invalid UTF-8"
    if kind == "tabs":
        return text.replace("  ", "\t"), "tabs for indentation"
    if kind == "not_mapping":
        return ("- a\n- b\n", "42\n", "null\n", "", "'text'\n")[edit.value % 5], "top level not a mapping"
    if kind == "multi_doc":
        return f"{text}---\n{text}", "two documents"
    if kind == "dup_key":
        return f"{text}output: model.onnx\n", "duplicate key output: model.onnx"
    return text, ""


def make_links(folder: Path) -> None:
    """Alias spellings of the inputs that the path edits refer to."""
    os.symlink("model.onnx", folder / "link.onnx")
    os.link(folder / "model.onnx", folder / "hard.onnx")
    os.symlink("calib.npz", folder / "calib-link.npz")


def recipe_edits() -> st.SearchStrategy[RecipeEdit]:
    """One edit of the recipe mapping."""
    weird, paths = st.sampled_from(WEIRD), st.sampled_from(PATHS)
    return st.one_of(
        st.builds(RecipeEdit, st.sampled_from(TOP_KEYS), weird),
        st.builds(RecipeEdit, st.sampled_from([f"calibration.{k}" for k in CALIB_KEYS]), weird),
        st.builds(RecipeEdit, st.sampled_from([f"passes.0.config.{k}" for k in CONFIG_KEYS]), weird),
        st.builds(RecipeEdit, st.sampled_from(("passes.0.name", "passes.0", "passes.0.config")), weird),
        st.builds(RecipeEdit, st.sampled_from(("bogus", "calibration.bogus", "passes.0.bogus")), st.just(1)),
        st.builds(
            RecipeEdit,
            st.sampled_from((*TOP_KEYS[:2], "calibration.path", "passes.0", "passes.0.config")),
            st.just("@delete"),
        ),
        st.builds(RecipeEdit, st.sampled_from(("output", "report")), paths),
        st.builds(RecipeEdit, st.sampled_from(("model", "calibration.path", "validation_data")), paths),
    )


def text_edits() -> st.SearchStrategy[TextEdit]:
    """One edit of the YAML text."""
    kinds = ("alias_bomb", "huge", "huge_value", "python_tag", "truncate", "bad_utf8", "tabs", "not_mapping")
    return st.builds(TextEdit, st.sampled_from((*kinds, "multi_doc", "dup_key")), st.integers(0, 1000))


def dump(data: dict[str, Any]) -> str:
    """YAML text of a recipe mapping (NaN and Inf as YAML's .nan/.inf)."""
    return yaml.safe_dump(data, sort_keys=False)
