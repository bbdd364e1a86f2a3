"""``torch.onnx.export`` wrapper for the test models (torch imported lazily).

Exporter facts (measured with torch 2.13.0 / onnxscript 0.7.2 / onnx 1.23):

* ``dynamo=True`` with ``opset_version=None`` emits **opset 20** (IR 10);
  ``opset_version=18`` works.  Below 18 the exporter builds at 18 and
  down-converts with the onnx C API; when that fails (TinyCNN: ReduceMean with
  an axes input, Relu 14->13) it only logs and returns opset 18, so
  :func:`torch_export` raises instead.  ``dynamo=False`` honours 13..18+.
* Both exporters fold eval-mode BatchNorm into the preceding Conv (TorchScript only with
  ``do_constant_folding=True``, its default; without it every BN stays a separate node).
  Dynamo drops all-zero initializers: a freshly initialized BN (beta 0, mean 0) folds into an
  all-zero bias, so the Conv is emitted with 2 inputs (see :mod:`tests.models.vision_zoo`).  The
  TorchScript exporter names the folded tensors ``onnx::Conv_<n>``; dynamo
  keeps the torch parameter name (``features.0.weight``) for the *folded*
  values and adds ``<name>_bias`` — names do not imply torch values.
* ``nn.Linear`` on 2-D input -> ``Gemm(transB=1)`` with the ``[out, in]``
  parameter; on 3-D input (BERT) both exporters emit ``MatMul`` with a
  constant-folded, pre-transposed ``[in, out]`` initializer (``onnx::MatMul_*``
  / ``val_*``) followed by ``Add(bias)``.  A bias-free Linear also becomes such
  a MatMul in the TorchScript exporter, even for tied weights (no sharing).
* De-duplication: the TorchScript exporter de-dups initializers **by value**
  (e.g. equal all-zero biases, all-one LayerNorm gammas) and re-creates the
  duplicates as ``Identity(first)`` nodes whose output has the duplicate's
  name.  Dynamo de-dups by value too, but makes all consumers read the same
  initializer name (no Identity), and all-zero Linear biases disappear (Gemm
  with 2 inputs).  To keep exported models trained-looking, the modules in
  :mod:`tests.models.torch_modules` randomise BatchNorm/LayerNorm stats and keep
  non-zero biases (``random_norm_stats=True``); with that no Identity nodes appear.
* Constants: the TorchScript exporter emits ``Constant`` *nodes* for scalars
  and shape pieces (ReLU6 -> ``Clip(x, Constant 0, Constant 6)`` per Clip,
  reshape/shape arithmetic in BERT); weights are always initializers.  Dynamo
  emits no Constant nodes: small constants are shared initializers (``val_*``,
  ``min_val_cast``/``max_val_cast`` shared by all 35 Clips of MobileNetV2).
* Op differences: TorchScript@13 decomposes LayerNorm (ReduceMean/Sub/Pow/
  Sqrt/Div/Mul/Add with gamma/beta as Mul/Add initializers) and GELU (Erf) and
  uses GlobalAveragePool+Flatten; dynamo@20 emits LayerNormalization, Gelu,
  ReduceMean(axes input)+Reshape, and Reshape with ``allowzero=1``.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import onnx

__all__ = ["torch_export"]


@contextlib.contextmanager
def _quiet_export() -> Iterator[None]:
    """Silence exporter deprecation warnings and the 'torchvision is not installed' log spam."""
    logger = logging.getLogger("torch.onnx")
    old = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(old)


def _by_signature(module: Any, specs: list[Any]) -> tuple[Any, ...]:
    """Per-argument dynamic shapes, with those of a ``*args`` parameter nested in one tuple (torch.export's layout)."""
    params = list(inspect.signature(module.forward).parameters.values())
    fixed = sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)
    if any(p.kind == p.VAR_POSITIONAL for p in params) and len(specs) > fixed:
        return (*specs[:fixed], tuple(specs[fixed:]))
    return tuple(specs)


def torch_export(
    module: Any,
    example_inputs: Sequence[Any],
    *,
    dynamo: bool,
    opset: int | None = None,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    dynamic_batch: bool = True,
    constant_folding: bool = True,
    dynamic_axes: Mapping[str, Mapping[int, str]] | None = None,
    dim_max: Mapping[str, int] | None = None,
) -> onnx.ModelProto:
    """Export *module* with ``torch.onnx.export`` and return the loaded ModelProto.

    * ``dynamo=False``: TorchScript exporter at *opset* (default 13); with
      *dynamic_batch* every input and output gets ``dynamic_axes={0: "N"}``.
    * ``dynamo=True``: torch.export-based exporter at *opset* (``None`` = the
      exporter default, opset 20 with torch 2.13); with *dynamic_batch* every
      input gets ``dynamic_shapes={0: Dim("N")}`` (use an example batch >= 2,
      torch.export specialises 0/1).  Saved with ``external_data=False``.

    *dynamic_axes* (input/output name -> {axis: dim name}) replaces *dynamic_batch*'s batch-only
    axes: TorchScript takes it as is; dynamo makes one ``torch.export.Dim`` per dim name, shared by
    the input axes that carry it (bounded above by *dim_max* where given, e.g. a sequence axis that
    slices a position table), and derives the output axes itself.

    ``constant_folding=False`` (TorchScript only) keeps BatchNorm as separate nodes after bias-free Convs.

    The model is written to a temporary file and read back with ``onnx.load``
    (external data, if any, is loaded too), so all weights are initializers.
    Input names default to ``x`` / ``x0, x1, ...``, output names to ``y`` /
    ``y0, y1, ...``.
    """
    import torch

    if dynamo and not constant_folding:
        raise ValueError("constant_folding=False is a TorchScript-exporter option")
    module = module.eval()
    args = tuple(example_inputs)
    if input_names is None:
        input_names = ["x"] if len(args) == 1 else [f"x{i}" for i in range(len(args))]
    if output_names is None:
        with torch.no_grad():
            out = module(*args)
        n_out = len(out) if isinstance(out, (tuple, list)) else 1
        output_names = ["y"] if n_out == 1 else [f"y{i}" for i in range(n_out)]
    input_names, output_names = list(input_names), list(output_names)

    with tempfile.TemporaryDirectory(prefix="onnxprune_export_") as tmp, _quiet_export():
        path = os.path.join(tmp, "model.onnx")
        if dynamo:
            dynamic_shapes = None
            if dynamic_axes is not None:
                dims = {
                    d: torch.export.Dim(d, max=(dim_max or {}).get(d, 2**20))
                    for a in dynamic_axes.values()
                    for d in a.values()
                }
                specs = [{axis: dims[d] for axis, d in dynamic_axes.get(n, {}).items()} for n in input_names]
                dynamic_shapes = _by_signature(module, specs)
            elif dynamic_batch:
                batch_dim = torch.export.Dim("N")
                dynamic_shapes = tuple({0: batch_dim} for _ in args)
            program = torch.onnx.export(
                module,
                args,
                dynamo=True,
                opset_version=opset,
                input_names=input_names,
                output_names=output_names,
                dynamic_shapes=dynamic_shapes,
                external_data=False,
                verbose=False,
            )
            program.save(path, external_data=False)
        else:
            if dynamic_axes is None and dynamic_batch:
                dynamic_axes = {name: {0: "N"} for name in input_names + output_names}
            torch.onnx.export(
                module,
                args,
                path,
                dynamo=False,
                opset_version=13 if opset is None else opset,
                input_names=input_names,
                output_names=output_names,
                dynamic_axes={k: dict(v) for k, v in dynamic_axes.items()} if dynamic_axes else None,
                do_constant_folding=constant_folding,
            )
        model = onnx.load(path, load_external_data=True)
    if dynamo and opset is not None:
        got = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
        if got != opset:
            # The dynamo exporter builds at >= 18 and down-converts with the onnx C API;
            # when that fails it only logs and returns opset 18 (happens e.g. for
            # ReduceMean with an axes input -> 13/17, or Relu 14 -> 13).
            raise RuntimeError(
                f"dynamo exporter produced opset {got}, not the requested {opset}; "
                "use opset=None (exporter default, 20) or an opset >= 18 with dynamo=True"
            )
    return model
