"""Target of the heads/GQA/hidden/FFN channel analysis on the transformer zoo (both exporters).

What :func:`analyze_channels` should find, per layer, named by the torch parameters the group's
weights came from (matched by value, see :func:`torch_names`):

* ``bert`` -- a heads group (units 4 x D, block D = head_dim) carrying Q/K/V's output rows and O's
  input columns; an FFN group; the residual stream (hidden) prunable only with ``allow_inexact``
  (LayerNorms normalise over it) and with ``restore_outputs`` (it is the graph output
  ``last_hidden_state``, mapped back to its width after pruning).
* ``vit`` -- the FFN; the packed qkv Linear split by a reshape [B,N,3,H,D] puts q/k/v and the heads
  on two axes, which one channel axis per value cannot follow: refused with a reason.
* ``llama`` -- a KV-group unit (2 KV groups, each taking its 2 query heads) for Q/K/V/O; the
  SwiGLU FFN (gate and up coupled, down's input).
* ``llama_kv`` -- the FFN; the KV heads are the cache's interface (past inputs, present outputs),
  so their group is blocked with a reason.

Plus the numeric checks the analysis must pass on each: pruning nothing changes nothing, removing a
head whose Q/K/V/O weights are zero changes nothing, masked equals shrunk.  These are reusable
helpers (:func:`assert_prune_nothing_is_identity`, :func:`assert_dead_head_removal_is_exact`,
``_assert_masked_equals_shrunk`` of ``test_channels_rules``).

"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable, Iterable

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from onnxprune.analysis.channels import ChannelAnalysis, Group, analyze_channels, record, shrink
from tests.analysis.test_channels_rules import _assert_masked_equals_shrunk
from tests.conftest import ort_run, to_ir
from tests.models.transformer_zoo import CONFIG, build_transformer, transformer_inputs, transformer_onnx

torch = pytest.importorskip("torch")

EXPORTERS = [pytest.param(False, id="torchscript17"), pytest.param(True, id="dynamo", marks=pytest.mark.slow)]
TOLERANCE = 1e-5
D = CONFIG.head_dim


# -- naming groups by the torch parameters they carry ------------------------------------------------
def torch_names(model: ir.Model, module: object) -> dict[str, tuple[str, bool]]:
    """ONNX initializer name -> (torch parameter name, stored transposed), matched by value.

    Exporters rename and pre-transpose Linear weights (``onnx::MatMul_*``, ``val_*``), so values are
    the only name that survives both exporters.
    """
    params = {n: p.detach().numpy() for n, p in module.named_parameters()}  # type: ignore[attr-defined]
    found: dict[str, tuple[str, bool]] = {}
    for value in model.graph.initializers.values():
        if value.const_value is None or not value.const_value.dtype.is_floating_point():
            continue
        array = value.const_value.numpy()
        for pname, param in params.items():
            if array.shape == param.shape and np.array_equal(array, param):
                found[value.name or ""] = (pname, False)
            elif array.ndim == 2 and array.T.shape == param.shape and np.array_equal(array.T, param):
                found[value.name or ""] = (pname, True)
    return found


def group_params(analysis: ChannelAnalysis, names: dict[str, tuple[str, bool]]) -> dict[int, set[tuple[str, str]]]:
    """Group id -> {(torch parameter, role)} of the channel parameters that follow it."""
    out: dict[int, set[tuple[str, str]]] = defaultdict(set)
    for use in record(analysis):
        layout = analysis.layout(use.by)
        found = names.get(use.node.inputs[use.index].name or "")
        if layout is None or found is None:
            continue
        for gid in layout.groups():
            out[analysis.groups.find(gid)].add((found[0], use.role))
    return out


def describe(analysis: ChannelAnalysis, params: dict[int, set[tuple[str, str]]]) -> str:
    """One line per group: id, units/block, prunable or why not, torch weights carried."""
    lines = []
    for g in analysis.groups.roots():
        state = "prunable" if g.prunable else f"blocked: {g.blockers[0]}"
        if g.prunable and analysis.inexact(g):
            state = "prunable (inexact)"
        weights = sorted(f"{n}:{r}" for n, r in params.get(g.id, ()) if r in ("out", "in"))
        lines.append(f"  group {g.id}: {g.units} units / block {g.block}, {state}; {', '.join(weights)}")
    return "\n".join(lines)


def find_group(
    analysis: ChannelAnalysis, params: dict[int, set[tuple[str, str]]], wanted: Iterable[tuple[str, str]]
) -> Group | None:
    """The group carrying all of ``wanted`` (torch parameter, role) pairs, if one does."""
    wanted = set(wanted)
    for g in analysis.groups.roots():
        if wanted <= params.get(g.id, set()):
            return g
    return None


# -- the target, per model ----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Expect:
    """A group the analysis must find in one layer: the weights it carries and its shape.

    ``blocks`` is ``units // block`` (the removable pieces: heads, KV groups, neurons); ``prunable``
    False means blocked (with a reason); ``inexact`` means prunable only with ``allow_inexact``.
    """

    what: str
    weights: frozenset[tuple[str, str]]
    blocks: int
    block: int | None = None
    prunable: bool = True
    inexact: bool = False


def _w(*pairs: tuple[str, str]) -> frozenset[tuple[str, str]]:
    return frozenset(pairs)


def _bert(i: int) -> list[Expect]:
    p = f"layers.{i}."
    attn = p + "attention."
    return [
        Expect(
            "heads",
            _w(
                (attn + "query.weight", "out"),
                (attn + "key.weight", "out"),
                (attn + "value.weight", "out"),
                (p + "attention_output.weight", "in"),
            ),
            blocks=CONFIG.heads,
            block=D,
        ),
        Expect("ffn", _w((p + "intermediate.weight", "out"), (p + "output.weight", "in")), blocks=CONFIG.intermediate),
        Expect(
            "hidden",
            _w(
                (p + "attention_output.weight", "out"),
                (p + "output.weight", "out"),
                (attn + "query.weight", "in"),
                (p + "intermediate.weight", "in"),
            ),
            blocks=CONFIG.hidden,
            inexact=True,
        ),
    ]


def _vit(i: int) -> list[Expect]:
    p = f"blocks.{i}."
    return [
        # a packed QKV projection splits into (3, heads, head_dim): q, k and v sit on one axis and the heads on
        # another, which one channel axis per value cannot describe, so the group is refused with a reason
        Expect(
            "packed qkv",
            _w(
                (p + "attn.qkv.weight", "out"),
            ),
            blocks=3,
            prunable=False,
        ),
        Expect("ffn", _w((p + "fc1.weight", "out"), (p + "fc2.weight", "in")), blocks=CONFIG.intermediate),
    ]


def _llama_attention(i: int) -> frozenset[tuple[str, str]]:
    a = f"layers.{i}.self_attn."
    return _w(
        (a + "q_proj.weight", "out"),
        (a + "k_proj.weight", "out"),
        (a + "v_proj.weight", "out"),
        (a + "o_proj.weight", "in"),
    )


def _llama_ffn(i: int) -> Expect:
    p = f"layers.{i}."
    weights = _w((p + "gate_proj.weight", "out"), (p + "up_proj.weight", "out"), (p + "down_proj.weight", "in"))
    return Expect("ffn", weights, blocks=CONFIG.intermediate)


def _llama(i: int) -> list[Expect]:
    return [Expect("kv groups", _llama_attention(i), blocks=CONFIG.kv_heads), _llama_ffn(i)]


def _llama_kv(i: int) -> list[Expect]:
    """The cache inputs/outputs fix the KV heads (a pruned model must keep its signature): all refused."""
    a = f"layers.{i}.self_attn."
    return [
        Expect("q heads", _w((a + "q_proj.weight", "out")), blocks=CONFIG.heads, prunable=False),
        Expect("k heads", _w((a + "k_proj.weight", "out")), blocks=CONFIG.kv_heads, prunable=False),
        Expect("v heads", _w((a + "v_proj.weight", "out")), blocks=CONFIG.kv_heads, prunable=False),
        _llama_ffn(i),
    ]


EXPECTED: dict[str, Callable[[int], list[Expect]]] = {
    "bert": _bert,
    "vit": _vit,
    "llama": _llama,
    "llama_kv": _llama_kv,
}


def _model_and_names(name: str, dynamo: bool) -> tuple[onnx.ModelProto, dict[str, tuple[str, bool]]]:
    proto = transformer_onnx(name, dynamo=dynamo)
    return proto, torch_names(to_ir(proto), build_transformer(name))


def _check(expect: Expect, exact: ChannelAnalysis, inexact: ChannelAnalysis, names: dict) -> list[str]:
    """What is wrong with ``expect`` in the two analyses (empty: as expected)."""
    problems = []
    params = group_params(exact, names)
    group = find_group(exact, params, expect.weights)
    if group is None:
        return [f"{expect.what}: no group carries {sorted(expect.weights)}"]
    if group.units // group.block != expect.blocks:
        problems.append(f"{expect.what}: {group.units // group.block} blocks of {group.block}, not {expect.blocks}")
    if expect.block is not None and group.block != expect.block:
        problems.append(f"{expect.what}: block {group.block}, not {expect.block}")
    wanted_exact = expect.prunable and not expect.inexact
    if group.prunable != wanted_exact:
        problems.append(f"{expect.what}: prunable={group.prunable} without allow_inexact, want {wanted_exact}")
    if not expect.prunable and not group.blockers:
        problems.append(f"{expect.what}: blocked without a reason")
    if expect.inexact:
        loose = find_group(inexact, group_params(inexact, names), expect.weights)
        if loose is None or not loose.prunable or not inexact.inexact(loose):
            problems.append(f"{expect.what}: not prunable (inexact) with allow_inexact=True")
    return problems


@pytest.mark.parametrize("dynamo", EXPORTERS)
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_groups_found(name: str, dynamo: bool) -> None:
    proto, names = _model_and_names(name, dynamo)
    exact = analyze_channels(to_ir(proto))
    inexact = analyze_channels(to_ir(proto), allow_inexact=True, restore_outputs=True)
    problems = [p for i in range(CONFIG.layers) for e in EXPECTED[name](i) for p in _check(e, exact, inexact, names)]
    assert not problems, "\n".join(problems) + "\nfound:\n" + describe(exact, group_params(exact, names))


# -- numeric checks ------------------------------------------------------------------------------------
def zoo_feeds(name: str, seed: int = 11) -> dict[str, np.ndarray]:
    """Inputs at a batch/sequence different from the export's."""
    return {k: v.numpy() for k, v in transformer_inputs(name, batch=3, seq=6, past=4, seed=seed).items()}


def assert_close(got: dict[str, np.ndarray], want: dict[str, np.ndarray], what: str) -> None:
    for out in want:
        np.testing.assert_allclose(got[out], want[out], rtol=TOLERANCE, atol=TOLERANCE, err_msg=f"{what}: {out}")


def assert_prune_nothing_is_identity(proto: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> None:
    """Keeping every unit of every prunable group (exact or not) leaves the outputs as they were."""
    model = to_ir(proto)
    analysis = analyze_channels(model, allow_inexact=True)
    shrink(analysis, {g.id: np.arange(g.units) for g in analysis.prunable()})
    assert_close(ort_run(model, feeds), ort_run(proto, feeds), "prune 0%")


Cuts = dict[str, tuple[int, "slice | np.ndarray"]]


def zero_rows(model: ir.Model, names: dict[str, tuple[str, bool]], cuts: Cuts) -> None:
    """Zero a slice of torch parameters in ``model``: torch name -> (torch axis, slice), whatever the export did."""
    by_torch = {tname: (onnx_name, transposed) for onnx_name, (tname, transposed) in names.items()}
    for tname, (axis, part) in cuts.items():
        onnx_name, transposed = by_torch[tname]
        value = model.graph.initializers[onnx_name]
        array = np.array(value.const_value.numpy())
        view = array.T if transposed else array
        index: list[slice | np.ndarray] = [slice(None)] * view.ndim
        index[axis] = part
        view[tuple(index)] = 0
        value.const_value = ir.Tensor(array, name=onnx_name)


def _head(h: int, per: int = 1) -> slice:
    return slice(h * D * per, (h + 1) * D * per)


def _bert_head(i: int, h: int) -> Cuts:
    a = f"layers.{i}.attention."
    cuts = {a + f"{p}.{k}": (0, _head(h)) for p in ("query", "key", "value") for k in ("weight", "bias")}
    return {**cuts, f"layers.{i}.attention_output.weight": (1, _head(h))}


def _llama_kv_group(i: int, g: int) -> Cuts:
    a = f"layers.{i}.self_attn."
    rep = CONFIG.heads // CONFIG.kv_heads
    return {
        a + "q_proj.weight": (0, _head(g, rep)),
        a + "k_proj.weight": (0, _head(g)),
        a + "v_proj.weight": (0, _head(g)),
        a + "o_proj.weight": (1, _head(g, rep)),
    }


#: model -> (layer, head or KV group) -> torch slices that make that head dead, and the Expect naming its group
DEAD_HEAD: dict[str, tuple[Callable[[int, int], Cuts], Callable[[int], Expect]]] = {
    "bert": (_bert_head, lambda i: _bert(i)[0]),
    "llama": (_llama_kv_group, lambda i: _llama(i)[0]),
}


def assert_dead_head_removal_is_exact(name: str, dynamo: bool, layer: int, head: int) -> None:
    """Zero one head's Q/K/V/O weights (it adds exactly nothing), then remove that head's block: unchanged.

    The zeroing goes by torch parameter, independently of the analysis, so a wrong block order or a
    wrong slice in the shrink shows up as a difference.
    """
    proto, names = _model_and_names(name, dynamo)
    cut, expect = DEAD_HEAD[name]
    dead = to_ir(proto)
    zero_rows(dead, names, cut(layer, head))
    feeds = zoo_feeds(name)
    want = ort_run(dead, feeds)
    analysis = analyze_channels(dead)
    group = find_group(analysis, group_params(analysis, names), expect(layer).weights)
    assert group is not None and group.prunable, describe(analysis, group_params(analysis, names))
    units = np.arange(group.units)
    keep = units[(units < head * group.block) | (units >= (head + 1) * group.block)]
    shrink(analysis, {group.id: keep})
    assert_close(ort_run(dead, feeds), want, f"{name} without head {head} of layer {layer}")


@pytest.mark.parametrize("dynamo", EXPORTERS)
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_prune_nothing_is_identity(name: str, dynamo: bool) -> None:
    assert_prune_nothing_is_identity(transformer_onnx(name, dynamo=dynamo), zoo_feeds(name))


@pytest.mark.parametrize("dynamo", EXPORTERS)
@pytest.mark.parametrize("name", sorted(DEAD_HEAD))
def test_dead_head_removal_is_exact(name: str, dynamo: bool) -> None:
    assert_dead_head_removal_is_exact(name, dynamo, layer=1, head=1)


@pytest.mark.parametrize("dynamo", EXPORTERS)
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_masked_equals_shrunk(name: str, dynamo: bool) -> None:
    keep = _assert_masked_equals_shrunk(transformer_onnx(name, dynamo=dynamo), 0.5, zoo_feeds(name))
    assert keep  # at least one group was pruned


@pytest.mark.parametrize("dynamo", EXPORTERS)
@pytest.mark.parametrize("name", sorted(DEAD_HEAD))
def test_dead_head_cuts_silence_exactly_one_head(name: str, dynamo: bool) -> None:
    """The helper's cuts are right: zeroing Q/K/V/O of a head equals zeroing only its O columns."""
    proto, names = _model_and_names(name, dynamo)
    cuts = DEAD_HEAD[name][0](1, 1)
    full, output_only = to_ir(proto), to_ir(proto)
    zero_rows(full, names, cuts)
    zero_rows(output_only, names, {k: v for k, v in cuts.items() if v[0] == 1})
    feeds = zoo_feeds(name)
    silenced = ort_run(output_only, feeds)
    assert_close(ort_run(full, feeds), silenced, f"{name}: dead head")
    assert max(float(np.abs(silenced[k] - v).max()) for k, v in ort_run(proto, feeds).items()) > 1e-3
