"""Evaluate the known ONNX→torch converters against onnxprune's torch view on the test architectures.

onnx2torch 1.5.15 and onnx2pytorch 0.6.0 are installed with ``pip install --no-deps --target DIR`` and
put on ``sys.path`` (``--lib DIR``). Both import torchvision at import time, and there is no CPU
torchvision wheel here, so a stub ``torchvision`` module (only the names they import) is inserted
first. The ops that really need torchvision (RoiAlign, NMS, deformable conv) are not in the test
models. For each architecture of ``tests/models/structured_zoo.py`` exported at opset 13
(TorchScript) and at the dynamo default (20), and for one weight shared by two MatMuls, the script
records whether conversion and a forward
pass succeed, the max abs difference from onnxruntime, and how many of the float initializers
become trainable ``nn.Parameter``s. onnxprune's ``TorchView`` is evaluated the same way.

Usage: python bench/eval_converters.py --lib /tmp/convlib --out bench/results
"""

from __future__ import annotations

import argparse
import re
import sys
import types
from pathlib import Path
from typing import Any

from _common import ROOT, setup_logging, write_json

ARCHS = (
    "resnet_basic", "resnet_bottleneck", "mobilenetv2_ir", "efficientnet_se", "vgg", "densenet",
    "inception", "unet", "shufflenet", "transformer_mlp", "efficientnet_b0_like",
)  # fmt: skip


def _stub_torchvision() -> None:
    vision = types.ModuleType("torchvision")
    vision.__path__ = []  # type: ignore[attr-defined]  # a package, so submodules resolve
    stubs = {
        "ops": ("roi_align", "nms", "deform_conv2d", "batched_nms", "roi_pool", "ps_roi_align"),
        "io": ("decode_image", "ImageReadMode"),
    }
    sys.modules.setdefault("torchvision", vision)
    for sub, names in stubs.items():
        module = types.ModuleType(f"torchvision.{sub}")
        for name in names:
            setattr(module, name, None)
        setattr(vision, sub, module)
        sys.modules.setdefault(f"torchvision.{sub}", module)


def _float_initializers(proto: Any) -> int:
    from onnx import TensorProto

    floats = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE)
    return sum(1 for t in proto.graph.initializer if t.data_type in floats and len(t.dims) > 0)


def _evaluate(convert: Any, proto: Any, x: Any, want: Any) -> dict[str, Any]:
    import numpy as np
    import torch

    try:
        module = convert(proto)
    except Exception as e:
        found = re.search(r"operation_type='(\w+)', version=(\d+)", str(e))
        message = f"no converter for {found[1]}-{found[2]}" if found else str(e).splitlines()[0][:160]
        return {"converted": False, "error": f"{type(e).__name__}: {message}"}
    try:
        with torch.no_grad():
            out = module(torch.from_numpy(x))
        out = out["y"] if isinstance(out, dict) else out[0] if isinstance(out, (list, tuple)) else out
        diff = float(np.max(np.abs(out.numpy() - want)))
    except Exception as e:
        return {"converted": True, "ran": False, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"}
    trainable = sum(1 for p in module.parameters() if p.requires_grad)
    return {"converted": True, "ran": True, "max_abs_diff": diff, "trainable_tensors": trainable}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lib", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    setup_logging("converters")
    sys.path.insert(0, str(args.lib))
    sys.path.insert(0, str(ROOT))
    _stub_torchvision()
    import numpy as np
    import onnx
    import onnx2pytorch
    import onnx2torch
    import onnx_ir as ir

    from onnxprune.torchview import TorchView
    from tests.conftest import ort_run
    from tests.models.structured_zoo import example_input, zoo_onnx

    converters = {
        "onnx2torch 1.5.15": lambda p: onnx2torch.convert(p),
        "onnx2pytorch 0.6.0": lambda p: onnx2pytorch.ConvertModel(p, experimental=True),
        "onnxprune TorchView": lambda p: TorchView(ir.serde.deserialize_model(p)),
    }
    from tests.models.lowrank_models import shared_matmul

    cases = [(arch, dynamo) for arch in ARCHS for dynamo in (False, True)] + [("shared_weight", None)]
    rows = []
    for arch, dynamo in cases:
        if dynamo is None:  # one weight read by two MatMuls (through an Identity alias)
            proto = shared_matmul()
            x = np.random.default_rng(5).standard_normal((2, 32)).astype(np.float32)
        else:
            proto = zoo_onnx(arch, dynamo=dynamo)
            x = example_input(arch, batch=2, seed=5).numpy()
        want = ort_run(proto, {"x": x})["y"]
        opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
        row = {"arch": arch, "opset": opset, "float_initializers": _float_initializers(proto)}
        for name, convert in converters.items():  # each gets its own copy: converters may edit the proto
            copy = onnx.ModelProto()
            copy.CopyFrom(proto)
            row[name] = _evaluate(convert, copy, x, want)
        rows.append(row)
    write_json(rows, args.out / "converters.json")
    lines = [
        "# ONNX → torch converters on the test architectures",
        "",
        "Cell: max abs difference from onnxruntime / trainable tensors (of the float initializers), or the "
        "first error. Reproduce: `python bench/eval_converters.py --lib DIR` after "
        "`pip install --no-deps --target DIR onnx2torch==1.5.15 onnx2pytorch==0.6.0`.",
        "",
        "| model | opset | float inits | " + " | ".join(converters) + " |",
        "|---|---|---|" + "---|" * len(converters),
    ]
    for row in rows:
        cells = []
        for name in converters:
            r = row[name]
            if r.get("ran"):
                cells.append(f"{r['max_abs_diff']:.1e} / {r['trainable_tensors']}")
            else:
                cells.append(("fails: " if r["converted"] else "no convert: ") + r["error"].replace("|", "/")[:90])
        lines.append(f"| {row['arch']} | {row['opset']} | {row['float_initializers']} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    (args.out / "converters.md").write_text(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
