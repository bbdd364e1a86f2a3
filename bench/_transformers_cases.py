"""Cases and goals of the transformer benchmark (all-MiniLM-L6-v2, ``bench/bench_transformers.py``).

A :class:`Case` is one ``onnxprune prune`` configuration applied to each export (and, for the ``fused``
graph, to onnxruntime's fused BERT graph of it), optionally followed by ``onnxprune finetune`` (distillation
from the dense model on the calibration sentences). Nothing here knows which parts of the model are
prunable: the figures are whatever the CLI does with the flags, so they move when the analysis does.
"""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path
from typing import Any

from _common import CACHE

#: benchmark model name -> exported with dynamo?
MODELS = {"ts": False, "dynamo": True}
#: ``onnxruntime.transformers.optimizer.optimize_model`` settings of all-MiniLM-L6-v2
FUSION = {"model_type": "bert", "num_heads": 12, "hidden_size": 384}
WORK = CACHE / "transformers"


@dataclasses.dataclass(frozen=True)
class Goals:
    """The issue's targets for one case; ``None``: no target for that figure.

    Attributes:
        speedup: Batch-1 latency speedup (dense / pruned) reached at 1 *and* 2 threads.
        params_kept: Largest fraction of the dense parameters kept.
        one_shot: Smallest similarity Spearman of the one-shot pruned model.
        finetuned: Smallest similarity Spearman after the distillation fine-tune.
    """

    speedup: float | None = None
    params_kept: float | None = None
    one_shot: float | None = None
    finetuned: float | None = None

    def check(self, figures: dict[str, float | None]) -> dict[str, bool | None]:
        """Goal name -> met (``None``: not measured) for the goals set; ``figures`` has the same names."""
        out: dict[str, bool | None] = {}
        for name, target in dataclasses.asdict(self).items():
            if target is None:
                continue
            value = figures.get(name)
            out[name] = None if value is None else (value <= target if name == "params_kept" else value >= target)
        return out

    def describe(self) -> dict[str, str]:
        """Goal name -> its wording in a table header."""
        words = {
            "speedup": "≥ {:g}× faster",
            "params_kept": "≥ {:.0%} fewer params",
            "one_shot": "Spearman ≥ {:g} one-shot",
            "finetuned": "Spearman ≥ {:g} fine-tuned",
        }
        return {
            name: words[name].format(1 - target if name == "params_kept" else target)
            for name, target in dataclasses.asdict(self).items()
            if target is not None
        }


@dataclasses.dataclass(frozen=True)
class Case:
    """One pruning configuration.

    Attributes:
        name: Short id (``--cases`` takes these).
        title: Heading of the case's table.
        words: ``onnxprune prune`` options (model, output, calibration, report and threads are added).
        goals: The targets the case is judged against.
        finetune: Follow the one-shot model with ``onnxprune finetune``.
        graph: ``export`` (the exporter's graph) or ``fused`` (onnxruntime's fused BERT graph of it).
        channels_config: ``channels`` pass options without a CLI flag today; each becomes the flag
            ``--NAME`` (``_`` as ``-``) once ``prune --help`` lists it, else it is set in the recipe that
            ``prune --dump-recipe`` prints and the recipe is run with ``onnxprune run``.
    """

    name: str
    title: str
    words: tuple[str, ...]
    goals: Goals
    finetune: bool = False
    graph: str = "export"
    channels_config: tuple[tuple[str, Any], ...] = ()

    def flags(self) -> list[str]:
        """The CLI flags of :attr:`channels_config` (boolean options as switches)."""
        out = []
        for key, value in self.channels_config:
            flag = "--" + key.replace("_", "-")
            out += [flag] if value is True else [flag, str(value)]
        return out


ONE_SHOT = Goals(speedup=1.4, params_kept=0.7, one_shot=0.9, finetuned=0.95)
HALF_FLOPS = Goals(speedup=1.8, finetuned=0.9)
CASES: tuple[Case, ...] = (
    Case(
        "channels",
        "`--channels 0.3` (importance l2, the default), then fine-tune",
        ("--channels", "0.3"),
        ONE_SHOT,
        finetune=True,
    ),  # fmt: skip
    Case("flops", "`--target-flops 0.5`, then fine-tune", ("--target-flops", "0.5"), HALF_FLOPS, finetune=True),
    Case("wanda", "`--channels 0.3 --importance wanda`", ("--channels", "0.3", "--importance", "wanda"), ONE_SHOT),
    Case(
        "act_mean",
        "`--channels 0.3 --importance act_mean`",
        ("--channels", "0.3", "--importance", "act_mean"),
        ONE_SHOT,
    ),  # fmt: skip
    Case(
        "hidden",
        "`--channels 0.3 --hidden` (heads, FFN and the hidden size; the last hidden state restored), then fine-tune",
        ("--channels", "0.3", "--hidden"),
        ONE_SHOT,
        finetune=True,
    ),  # fmt: skip
    Case(
        "wanda_ft",
        "`--channels 0.3 --importance wanda`, then fine-tune",
        ("--channels", "0.3", "--importance", "wanda"),
        ONE_SHOT,
        finetune=True,
    ),  # fmt: skip
    Case(
        "fused",
        "`--channels 0.3` on onnxruntime's fused BERT graph (`optimize_model(model_type='bert', "
        "num_heads=12, hidden_size=384)`)",
        ("--channels", "0.3"),
        ONE_SHOT,
        graph="fused",
    ),  # fmt: skip
)
BY_NAME = {case.name: case for case in CASES}


def fused_model(model: Path, work: Path = WORK) -> Path:
    """onnxruntime's fused BERT graph of ``model`` (:data:`FUSION`), written once under ``work``."""
    out = work / f"{model.stem}_fused.onnx"
    if not out.is_file():
        from onnxruntime.transformers.optimizer import optimize_model

        work.mkdir(parents=True, exist_ok=True)
        optimized = optimize_model(str(model), **FUSION)
        tmp = out.with_name(out.stem + ".tmp.onnx")
        optimized.save_model_to_file(str(tmp))
        tmp.replace(out)
    return out


def custom_ops(model: Path) -> dict[str, int]:
    """How many nodes of each non-ONNX-domain op type ``model`` has (what the fusion made)."""
    from collections import Counter

    import onnx

    graph = onnx.load(str(model), load_external_data=False).graph
    return dict(Counter(f"{n.domain}::{n.op_type}" for n in graph.node if n.domain not in ("", "ai.onnx")))


def code_hash(root: Path) -> str:
    """Short digest of the onnxprune sources (``onnxprune/``, ``passes/``, ``calibration/``): the cache key
    that makes a run after any change to the tool measure afresh."""
    import hashlib

    digest = hashlib.sha256()
    for folder in ("onnxprune", "passes", "calibration"):
        for path in sorted((root / folder).rglob("*.py")):
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def shell(words: list[str]) -> str:
    """``words`` as one shell command line."""
    return shlex.join(words)
