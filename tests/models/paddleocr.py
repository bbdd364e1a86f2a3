"""The PaddleOCR models shipped in the ``rapidocr_onnxruntime`` wheel (real Paddle2ONNX exports).

PP-OCRv4 detection (DB, opset 12) and recognition (SVTR-LCNet, opset 12) and the PP-OCR v2.0 direction
classifier (opset 11): bias-free Convs followed by separate ``BatchNormalization`` nodes (cls; det/rec
mix folded and separate), HardSigmoid squeeze-excitation, hard-swish as ``Clip``/``Div``/``Mul``, scalar
``Constant`` nodes, dynamic spatial dims.  The wheel is found without importing it (that imports cv2).
"""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

__all__ = ["OCR_MODELS", "paddleocr_models"]

#: model file in the wheel -> (short name, calibration input shape [C, H, W])
OCR_MODELS = {
    "ch_PP-OCRv4_det_infer.onnx": ("ocr_det", (3, 320, 320)),
    "ch_PP-OCRv4_rec_infer.onnx": ("ocr_rec", (3, 48, 320)),
    "ch_ppocr_mobile_v2.0_cls_infer.onnx": ("ocr_cls", (3, 48, 192)),
}


def paddleocr_models() -> dict[str, tuple[Path, tuple[int, int, int]]]:
    """Short name -> (model path, input shape [C, H, W]); empty when ``rapidocr_onnxruntime`` is not installed."""
    spec = find_spec("rapidocr_onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        return {}
    folder = Path(next(iter(spec.submodule_search_locations))) / "models"
    return {short: (folder / f, shape) for f, (short, shape) in OCR_MODELS.items() if (folder / f).exists()}
