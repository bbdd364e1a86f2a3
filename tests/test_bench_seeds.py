"""Smoke test of the seed-method reproductions' bookkeeping (``bench/bench_seeds.py``), no model run.

Every claim module registers without clashes, every stored outcome belongs to a registered claim with a
known verdict, the page renders every outcome with its CPU time, and an unknown key is refused.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import REPO


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    import bench_seeds

    return bench_seeds


def test_every_stored_outcome_is_a_registered_claim_and_renders(bench):
    claims = bench.load_claims()
    records = bench.stored()
    assert len(claims) >= 28 and {r["key"] for r in records} == set(claims)
    page = bench.render(records)
    for record in records:
        assert record["verdict"] in ("reproduced", "partly", "not reproduced", "n/a")
        assert f"(`{record['key']}`)" in page and claims[record["key"]].command in page
        assert isinstance(record["seconds"], float)
    assert "s of CPU" in page


def test_an_unknown_claim_is_refused_with_exit_2(bench, capsys):
    assert bench.main(["--only", "M99-nothing"]) == 2
    assert "unknown claim M99-nothing" in capsys.readouterr().err


def test_each_claim_names_its_paper_and_method(bench):
    for key, item in bench.load_claims().items():
        assert key.startswith(item.method) and len(item.paper_claim) > 40, key
        json.dumps({"claim": item.paper_claim})  # stored as JSON
