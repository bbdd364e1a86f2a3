"""Collect activation statistics by running onnxruntime with intermediate values exposed as outputs."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence

import numpy as np
import onnx_ir as ir
import onnxruntime as ort

from onnxprune import _ort
from onnxprune.calibration.sources import CalibrationSource
from onnxprune.calibration.stats import ALL_SUMS, ChannelStats, ConvGeometry, gram_rows, sample_rows
from onnxprune.errors import CalibrationError, UnsupportedModelError

__all__ = ["StatRequest", "collect_stats", "conv_geometry"]

logger = logging.getLogger(__name__)

#: Called after each batch with (samples done, samples in total).
ProgressFn = Callable[[int, int], None]


@dataclasses.dataclass(frozen=True)
class StatRequest:
    """Statistics wanted for one value: per-channel sums along ``axis``, optionally a Gram matrix.

    ``sums`` picks the running sums to keep (``abs``, ``sq``, ``nonzero``; all by default).
    With ``gram`` set, XᵀX is accumulated over rows of the value moved to ``[-1, channels]``, or,
    when ``conv`` is given, over the im2col rows of a 2-D Conv input. With ``paired`` as well, the
    same value of the reference model is unfolded alongside and the cross sums are kept (see
    :class:`ChannelStats`); ``paired_gram`` also keeps the reference's own Gram. Results are keyed
    by ``key`` (default: the value name), so one value can be unfolded for two different convs.
    ``holdout`` also sums every other batch apart (``ChannelStats.holdout``), so that a fit on the
    other batches can be checked on data it did not see. ``sample`` keeps the rows of that many
    samples themselves (``ChannelStats.sample``; a Conv's patches, at most ``positions`` per sample).
    """

    value: str
    axis: int
    gram: bool = False
    conv: ConvGeometry | None = None
    sums: frozenset[str] = ALL_SUMS
    key: str | None = None
    paired: bool = False
    paired_gram: bool = False
    holdout: bool = False
    sample: int = 0
    positions: int = 64

    @property
    def name(self) -> str:
        """The key its statistics are returned under."""
        return self.key or self.value


def conv_geometry(node: ir.Node, kernel: tuple[int, int]) -> ConvGeometry | str:
    """How a 2-D Conv node unfolds its input, or why it cannot be described."""
    attrs = node.attributes
    auto_pad = attrs.get_string("auto_pad", "NOTSET")
    if auto_pad not in ("NOTSET", "VALID"):
        return f"Conv with auto_pad={auto_pad} is not supported (needs explicit pads)"
    strides = tuple(attrs.get_ints("strides", (1, 1)))
    dilations = tuple(attrs.get_ints("dilations", (1, 1)))
    pads = (0, 0, 0, 0) if auto_pad == "VALID" else tuple(attrs.get_ints("pads", (0, 0, 0, 0)))
    if len(strides) != 2 or len(dilations) != 2 or len(pads) != 4:
        return "Conv attributes do not describe a 2-D convolution"
    return ConvGeometry(kernel, strides, pads, dilations)  # type: ignore[arg-type]


def _sample_bytes(runs: Sequence[tuple[ort.InferenceSession | None, Sequence[str]]], source: CalibrationSource) -> int:
    """Bytes that ``runs`` ((session, fetched names) pairs) fetch for one sample.

    Measured by running one sample: shape inference cannot see through every exported Reshape.
    """
    first = next(iter(source.batches(1)), None)
    runs = [(sess, names) for sess, names in runs if sess is not None and names]
    if not first or not runs:
        return 0
    return sum(np.asarray(a).nbytes for sess, names in runs for a in sess.run(list(names), first))


def _batch_within_budget(per_sample: int, batch_size: int, budget: int) -> int:
    """Largest batch (at most ``batch_size``) whose fetched activations fit in ``budget`` bytes."""
    fitted = max(1, min(batch_size, budget // max(per_sample, 1)))
    if fitted < batch_size:
        logger.info("calibration batch %d -> %d to keep activations under %d MB", batch_size, fitted, budget >> 20)
    return fitted


def _reference_first(
    sess: ort.InferenceSession, names: list[str], source: CalibrationSource, batch_size: int, budget: int
) -> tuple[int, list[dict[str, np.ndarray]] | None]:
    """The batch size, and the reference's values over all batches when they fit in half of ``budget``.

    Paired statistics need the reference's and the model's values of the same batch together. When
    the reference's values for every sample are small enough, they are computed first, so that the
    reference session can be released before the model's session is built; ``None`` otherwise.
    """
    per_sample = _sample_bytes([(sess, names)], source)
    batch_size = _batch_within_budget(2 * per_sample, batch_size, budget)  # the model's values beside them
    if per_sample * source.num_samples > budget // 2:
        return batch_size, None
    return batch_size, [_run(sess, names, batch) for batch in source.batches(batch_size)]


def _merge(requests: Sequence[StatRequest]) -> dict[str, StatRequest]:
    """One request per key; the sums of duplicates are combined (the Gram of whichever asks for one)."""
    merged: dict[str, StatRequest] = {}
    for request in requests:
        prior = merged.get(request.name)
        if prior is None:
            merged[request.name] = request
        else:
            gram_of = request if request.gram else prior
            holdout = prior.holdout or request.holdout
            sample = max(prior.sample, request.sample)
            merged[request.name] = dataclasses.replace(
                gram_of, sums=prior.sums | request.sums, holdout=holdout, sample=sample
            )
    return merged


def _run(sess: ort.InferenceSession | None, fetch: list[str], batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The fetched values of one batch, with the batch's own inputs beside them."""
    try:
        outputs = sess.run(fetch, batch) if sess is not None else []
    except Exception as e:
        raise CalibrationError(f"onnxruntime failed on calibration data: {str(e).splitlines()[0]}") from e
    values = dict(zip(fetch, outputs, strict=True))
    values.update({k: v for k, v in batch.items() if k not in values})
    return values


#: a [batch, tokens] input marking real tokens (HF's convention); padding rows are left out of the statistics
TOKEN_MASK = "attention_mask"


def _real_tokens(array: np.ndarray, axis: int, mask: np.ndarray | None) -> tuple[np.ndarray, int]:
    """``array`` [B, S, ..., C] with channels last reduced to the rows of real tokens, and its channel axis.

    Padding positions carry hidden states no output reads; in a short-sentence calibration set they are
    most of the rows, and fitting them (refits, Grams) fits the padding, not the sentences.
    """
    if mask is None or array.ndim < 3 or axis % array.ndim != array.ndim - 1 or array.shape[:2] != mask.shape:
        return array, axis
    return array[np.asarray(mask) != 0], -1


def _keep_sample(entry: ChannelStats, request: StatRequest, array: np.ndarray) -> None:
    """Append the rows of this batch's first samples to ``entry.sample`` until it holds ``request.sample``."""
    have = 0 if entry.sample is None else entry.sample.shape[0]
    if have >= request.sample:
        return
    rows = sample_rows(array, request.axis, request.conv, request.sample - have, request.positions)
    entry.sample = rows if entry.sample is None else np.concatenate([entry.sample, rows])


def _accumulate(entry: ChannelStats, request: StatRequest, array: np.ndarray, ref: np.ndarray | None) -> None:
    entry.update(array)
    if request.sample:
        _keep_sample(entry, request, array)
    if not request.gram:
        return
    chunk_bytes = 16 << 20  # three chunks (model, reference, difference) alive at once
    rows = gram_rows(array, request.axis, request.conv, chunk_bytes)
    if ref is None:
        for chunk in rows:
            entry.update_gram(chunk)
        return
    for chunk, ref_chunk in zip(rows, gram_rows(ref, request.axis, request.conv, chunk_bytes), strict=True):
        entry.update_gram(chunk, ref_chunk, reference_gram=request.paired_gram)


def collect_stats(
    model: ir.Model,
    source: CalibrationSource,
    requests: Sequence[StatRequest],
    *,
    batch_size: int = 32,
    threads: int | None = None,
    progress: ProgressFn | None = None,
    memory_mb: int = 64,
    reference: ir.Model | None = None,
) -> dict[str, ChannelStats]:
    """Run the model over ``source`` once and return statistics keyed by request name.

    Only the part of the graph that the requested values need is run. Memory holds one batch of the
    requested activations plus the running sums; the batch is made smaller than ``batch_size`` where
    the activations of one batch would exceed ``memory_mb``, and Gram rows are unfolded in chunks.
    Requests marked ``paired`` also run ``reference`` (same value names) on the same batches.
    """
    merged = _merge(requests)
    if not merged:
        return {}
    input_names = {v.name for v in model.graph.inputs}
    fetch = list(dict.fromkeys(r.value for r in merged.values() if r.value not in input_names))
    paired = list(dict.fromkeys(r.value for r in merged.values() if r.paired and r.value not in input_names))
    if any(r.paired for r in merged.values()) and reference is None:
        raise ValueError("paired statistics need a reference model")
    cached: list[dict[str, np.ndarray]] | None = None
    ref_sess = None
    if reference is not None and paired:
        ref_sess = _ort.session(reference, paired, threads=threads, what="reference model", only=True)
        if paired == fetch:
            batch_size, cached = _reference_first(ref_sess, paired, source, batch_size, memory_mb << 20)
            if cached is not None:
                ref_sess = None  # one onnxruntime session alive at a time
    sess = _ort.session(model, fetch, threads=threads, what="model for calibration", only=True) if fetch else None
    if cached is None:
        per_sample = _sample_bytes([(sess, fetch), (ref_sess, paired)], source)
        batch_size = _batch_within_budget(per_sample, batch_size, memory_mb << 20)
    stats: dict[str, ChannelStats] = {}
    done, total = 0, source.num_samples
    for i, batch in enumerate(source.batches(batch_size)):
        values = _run(sess, fetch, batch)
        if cached is not None:
            ref_values, cached[i] = cached[i], {}
        else:
            ref_values = _run(ref_sess, paired, batch) if reference is not None else {}
        for name, request in merged.items():
            array = np.asarray(values[request.value])
            if not -array.ndim <= request.axis < array.ndim:
                raise UnsupportedModelError(
                    f"value '{request.value}' has shape {list(array.shape)} on the calibration data, "
                    f"with no channel axis {request.axis} for the weight that reads it (malformed model?)"
                )
            ref = np.asarray(ref_values[request.value]) if request.paired else None
            mask = batch.get(TOKEN_MASK)
            array, axis = _real_tokens(array, request.axis, mask)
            ref = None if ref is None else _real_tokens(ref, request.axis, mask)[0]
            entry = stats.get(name)
            if entry is None:
                entry = stats[name] = ChannelStats(axis, array.shape[axis], sums=request.sums)
                if request.holdout:
                    entry.holdout = ChannelStats(axis, array.shape[axis], sums=request.sums)
            _accumulate(entry, dataclasses.replace(request, axis=axis), array, ref)
            if entry.holdout is not None and i % 2:
                _accumulate(entry.holdout, dataclasses.replace(request, axis=axis), array, ref)
        done += next(iter(batch.values())).shape[0] if batch else 1
        if progress is not None:
            progress(min(done, total), total)
    logger.info("collected statistics for %d values over %d samples", len(stats), done)
    return stats
