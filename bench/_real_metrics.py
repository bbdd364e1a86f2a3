"""Task metrics of the real-model benchmark: ``metric(outputs, data_path) -> float``, higher is better.

``outputs`` maps each output name of the candidate model to its values over *all* samples of the
``.npz`` file ``data_path``, in file order (stacked along axis 0). The file holds the model inputs and,
under keys that are not model inputs, the ground truth the metric reads (``texts`` + ``charset``,
``labels``, ``boxes``, ``reference``). Every metric only needs these two arguments, so that
``--metric bench/_real_metrics.py:char_accuracy`` style callers can use it standalone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "box_f1",
    "char_accuracy",
    "ctc_greedy",
    "edit_distance",
    "similarity_spearman",
    "top1_accuracy",
]


def _first(outputs: Mapping[str, np.ndarray]) -> np.ndarray:
    return np.asarray(next(iter(outputs.values())))


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions all cost 1)."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def ctc_greedy(probs: np.ndarray, charset: Sequence[str]) -> list[str]:
    """Greedy CTC decoding of ``probs`` [N, T, C]: argmax per step, merge repeats, drop class 0 (blank)."""
    best = probs.argmax(-1)
    texts = []
    for row in best:
        keep = np.ones(len(row), dtype=bool)
        keep[1:] = row[1:] != row[:-1]
        texts.append("".join(charset[i] for i in row[keep & (row != 0)]))
    return texts


def char_accuracy(outputs: Mapping[str, np.ndarray], data_path: str) -> float:
    """Mean over lines of ``max(0, 1 - edit_distance(decoded, truth) / len(truth))`` (CTC recognizer).

    ``data_path`` holds ``texts`` (the ground-truth strings) and ``charset`` (the class of each CTC index,
    ``charset[0]`` the blank).
    """
    with np.load(data_path, allow_pickle=False) as data:
        truth, charset = [str(t) for t in data["texts"]], [str(c) for c in data["charset"]]
    decoded = ctc_greedy(_first(outputs), charset)
    scores = [max(0.0, 1.0 - edit_distance(d, t) / max(len(t), 1)) for d, t in zip(decoded, truth, strict=True)]
    return float(np.mean(scores))


def top1_accuracy(outputs: Mapping[str, np.ndarray], data_path: str) -> float:
    """Fraction of samples whose argmax over the last axis equals ``labels``."""
    with np.load(data_path, allow_pickle=False) as data:
        labels = data["labels"]
    logits = _first(outputs).reshape(len(labels), -1)
    return float(np.mean(logits.argmax(-1) == labels))


def _boxes_from_map(prob: np.ndarray, threshold: float, unclip: float, min_area: int) -> list[tuple[float, ...]]:
    """DBNet's box post-processing for axis-aligned text: components of ``prob > threshold``, each box
    grown by ``area * unclip / perimeter`` on every side (the map marks shrunk text regions)."""
    from scipy import ndimage

    labeled, count = ndimage.label(prob > threshold)
    boxes = []
    for index, found in enumerate(ndimage.find_objects(labeled), 1):
        if found is None:
            continue
        ys, xs = found
        h, w = ys.stop - ys.start, xs.stop - xs.start
        if int((labeled[found] == index).sum()) < min_area:
            continue
        grow = h * w * unclip / (2 * (h + w))
        boxes.append((xs.start - grow, ys.start - grow, xs.stop + grow, ys.stop + grow))
    return boxes


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def box_f1(outputs: Mapping[str, np.ndarray], data_path: str) -> float:
    """Text-detection F1 at IoU >= 0.5 against the rendered line boxes, over all pages.

    Predicted boxes: connected components of the probability map above 0.3, grown by DBNet's unclip
    distance (ratio 1.5), components under 10 pixels dropped; each ground-truth box (``boxes`` [N, K, 4],
    rows of -1 unused) matches at most one prediction, greedily by IoU.
    """
    with np.load(data_path, allow_pickle=False) as data:
        truth = data["boxes"]
    maps = _first(outputs)
    hits = predicted = expected = 0
    for prob, page in zip(maps, truth, strict=True):
        found = _boxes_from_map(prob.reshape(prob.shape[-2:]), 0.3, 1.5, 10)
        gt = [tuple(map(float, b)) for b in page if b[0] >= 0]
        predicted, expected = predicted + len(found), expected + len(gt)
        pairs = sorted(((_iou(f, g), i, j) for i, f in enumerate(found) for j, g in enumerate(gt)), reverse=True)
        used_f, used_g = set(), set()
        for iou, i, j in pairs:
            if iou < 0.5:
                break
            if i not in used_f and j not in used_g:
                used_f.add(i)
                used_g.add(j)
                hits += 1
    return 2 * hits / max(predicted + expected, 1)


def _mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    weights = mask[..., None].astype(np.float64)
    return (hidden.astype(np.float64) * weights).sum(1) / np.maximum(weights.sum(1), 1e-9)


def _pairwise_cosine(embeddings: np.ndarray) -> np.ndarray:
    unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    sims = unit @ unit.T
    return sims[np.triu_indices(len(sims), k=1)]


def _ranks(values: np.ndarray) -> Any:
    from scipy.stats import rankdata

    return rankdata(values)


def similarity_spearman(outputs: Mapping[str, np.ndarray], data_path: str) -> float:
    """Spearman correlation of all pairwise cosine similarities against the dense model's.

    Sentence embeddings: the first output (``last_hidden_state`` [N, L, H]) mean-pooled over the tokens
    with ``attention_mask`` as weights. The dense model's embeddings are stored in the file (``reference``
    [N, H]), so the dense model scores 1.0.
    """
    with np.load(data_path, allow_pickle=False) as data:
        mask, reference = data["attention_mask"], data["reference"]
    hidden = _first(outputs)
    pooled = hidden if hidden.ndim == 2 else _mean_pool(hidden, mask)
    a, b = _ranks(_pairwise_cosine(pooled)), _ranks(_pairwise_cosine(reference.astype(np.float64)))
    return float(np.corrcoef(a, b)[0, 1])
