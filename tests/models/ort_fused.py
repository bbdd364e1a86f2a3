"""A tiny HF-BERT encoder exported to ONNX and fused by onnxruntime's transformer optimizer.

Measured (torch 2.13, transformers 5.24, onnxruntime 1.32):

* ``transformers.BertModel`` with ``attn_implementation="eager"``, TorchScript exporter: the optimizer
  (``model_type="bert"``) fuses everything: ``EmbedLayerNormalization`` (with the mask), one
  ``Attention`` per layer (packed QKV weight, ``mask_index`` from the embedding op),
  ``SkipLayerNormalization`` twice per layer, ``BiasGelu``; left are the output projections and
  FFN MatMuls and a few Casts.
* The default ``sdpa`` attention exports a mask built with ``IsNaN``/``Where`` that the optimizer does not
  recognize: only ``SkipLayerNormalization`` and ``BiasGelu`` are fused (the same holds for the
  benchmark's ``minilm_ts.onnx``).
* The dynamo exporter (eager attention too): ``SkipLayerNormalization`` and ``BiasGelu`` only, the
  attention stays decomposed.
* ``tests.models.torch_modules.BertLikeEncoder`` (hand-written attention, no mask) fuses to ``Attention``
  without a mask, but its embeddings stay Gather/Add/LayerNormalization.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["BERT", "bert_inputs", "fused_bert"]

#: the tiny encoder: hidden 32 in 4 heads of 8, FFN 64, 2 layers, sequences of 8 tokens
BERT = {"vocab": 100, "hidden": 32, "heads": 4, "intermediate": 64, "layers": 2, "seq": 8}
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def bert_inputs(batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random token ids, a padding mask (the last tokens of odd rows masked) and segment ids."""
    rng = np.random.default_rng(seed)
    seq = BERT["seq"]
    ids = rng.integers(0, BERT["vocab"], (batch, seq), dtype=np.int64)
    mask = np.ones((batch, seq), dtype=np.int64)
    mask[1::2, seq - 2 :] = 0
    segments = (np.arange(seq)[None, :] >= seq // 2).astype(np.int64).repeat(batch, axis=0)
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": segments}


def _encoder(seed: int) -> Any:
    import torch
    from transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=BERT["vocab"],
        hidden_size=BERT["hidden"],
        num_hidden_layers=BERT["layers"],
        num_attention_heads=BERT["heads"],
        intermediate_size=BERT["intermediate"],
        max_position_embeddings=4 * BERT["seq"],
        type_vocab_size=16,  # the CLI's random samples draw ids from [0, 16): valid token and segment ids
    )
    config._attn_implementation = "eager"  # the sdpa mask pattern is not fused by onnxruntime's optimizer

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = BertModel(config, add_pooling_layer=False)
            with torch.no_grad():  # trained-looking norms and biases (fresh ones are 1 and 0)
                for name, param in self.bert.named_parameters():
                    if "LayerNorm" in name or name.endswith("bias"):
                        param.add_(0.1 * torch.randn_like(param))

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Encoder().eval()


def fused_bert(directory: Path, *, dynamo: bool = False, seed: int = 0) -> tuple[Path, Path]:
    """(exported, fused) model files of the tiny encoder in ``directory`` (written once, then reused)."""
    import onnx
    import torch
    from onnxruntime.transformers.optimizer import optimize_model

    from tests.models.export import torch_export

    tag = f"bert_{'dynamo' if dynamo else 'ts'}_{seed}"
    plain, fused = directory / f"{tag}.onnx", directory / f"{tag}_fused.onnx"
    if fused.exists():
        return plain, fused
    example = bert_inputs(2)
    proto = torch_export(
        _encoder(seed),
        tuple(torch.from_numpy(example[name]) for name in INPUTS),
        dynamo=dynamo,
        opset=None if dynamo else 14,
        input_names=list(INPUTS),
        output_names=["last_hidden_state"],
    )
    onnx.save(proto, plain)
    logging.getLogger("onnxruntime.transformers").setLevel(logging.WARNING)
    optimized = optimize_model(str(plain), model_type="bert", num_heads=BERT["heads"], hidden_size=BERT["hidden"])
    optimized.save_model_to_file(str(fused))
    return plain, fused
