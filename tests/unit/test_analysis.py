"""Preliminary analysis: diversity, complexity, coverage overlap, correlations, and figures from tables only."""

import json

import pytest

from instag import analysis
from instag.errors import InputError
from instag.io import read_tsv


def rec(rid, dataset, tags, queries=None, status="ok"):
    return {"id": rid, "dataset": dataset, "tags": sorted(tags), "queries": queries or [sorted(tags)], "status": status}


RECORDS = [
    rec("a1", "A", ["x", "y"]),
    rec("a2", "A", ["x", "y", "z", "w"], queries=[["x", "y"], ["z", "w"], None]),  # a session: union of queries
    rec("a3", "A", [], queries=[None], status="untagged"),  # left out of the averages
    rec("b1", "B", ["x"]),
    rec("b2", "B", []),  # tagged, but every tag was dropped by normalization: a sample with 0 tags
    rec("c1", "C", ["v", "x", "y"]),
]


@pytest.fixture
def normalized(tmp_path):
    path = tmp_path / "normalized.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    return path


def run_tables(tmp_path, normalized, **kw):
    out = {k: tmp_path / f"{k}.tsv" for k in ("datasets", "frequency", "top", "coverage", "correlation")}
    summary = analysis.tables(normalized, *out.values(), **kw)
    return summary, {k: read_tsv(v) for k, v in out.items()}, out


def test_diversity_and_complexity_per_dataset(tmp_path, normalized):
    summary, t, _ = run_tables(tmp_path, normalized, datasets=["B", "A", "C"], names={"A": "Alpha"})
    rows = {r["dataset"]: r for r in t["datasets"]}
    assert [r["dataset"] for r in t["datasets"]] == ["B", "A", "C"]  # config order
    a = rows["A"]
    assert a["name"] == "Alpha" and a["records"] == "3" and a["records_tagged"] == "2" and a["records_untagged"] == "1"
    assert a["tags"] == "4" and float(a["coverage"]) == pytest.approx(4 / 5)  # T_all = {v, w, x, y, z}
    assert float(a["complexity"]) == pytest.approx((2 + 4) / 2)  # per session (record)
    assert float(a["tags_per_query"]) == pytest.approx((2 + 2 + 2) / 3)  # per tagged query
    assert float(rows["B"]["complexity"]) == pytest.approx(0.5)
    assert summary["tags"] == 5


def test_frequency_top_tags_and_coverage_matrix(tmp_path, normalized):
    _, t, _ = run_tables(tmp_path, normalized, top_k=2)
    freq = t["frequency"]
    assert [(r["tag"], r["records"], r["datasets"]) for r in freq[:2]] == [("x", "4", "3"), ("y", "3", "2")]
    assert [r["rank"] for r in freq] == [str(i) for i in range(1, 6)]
    top_a = [r["tag"] for r in t["top"] if r["dataset"] == "A"]
    assert top_a == ["x", "y"]
    cov = {r["dataset"]: r for r in t["coverage"]}
    assert float(cov["A"]["C"]) == pytest.approx(2 / 3)  # A has x, y of C's {v, x, y}
    assert float(cov["C"]["A"]) == pytest.approx(2 / 4)
    assert float(cov["B"]["B"]) == 1.0


def test_correlation_with_a_downstream_score(tmp_path, normalized):
    _, t, _ = run_tables(tmp_path, normalized, scores={"A": 70.0, "B": 10.0, "C": 50.0}, score_name="AlpacaEval")
    corr = {r["measure"]: r for r in t["correlation"]}
    # tag-set sizes A 4, B 1, C 3 rank like the scores 70, 10, 50
    assert float(corr["tags"]["spearman_rho"]) == pytest.approx(1.0)
    assert float(corr["coverage"]["pearson_r"]) == pytest.approx(
        analysis.correlations(
            [
                {"tags": 4, "coverage": 0.8, "complexity": 3, "tags_per_query": 2, "score": 70},
                {"tags": 1, "coverage": 0.2, "complexity": 0.5, "tags_per_query": 0.5, "score": 10},
                {"tags": 3, "coverage": 0.6, "complexity": 3, "tags_per_query": 3, "score": 50},
            ],
            "s",
        )[1]["pearson_r"]
    )
    assert corr["tags"]["datasets"] == "3" and corr["tags"]["score"] == "AlpacaEval"


def test_correlation_needs_three_scored_datasets(tmp_path, normalized):
    _, t, _ = run_tables(tmp_path, normalized, scores={"A": 70.0, "B": 10.0})
    assert all(r["pearson_r"] == "" and "needs scores" in r["note"] for r in t["correlation"])


def test_bad_input_is_named(tmp_path):
    bad = tmp_path / "n.jsonl"
    bad.write_text('{"id": "a", "dataset": "A", "tags": []}\n{"id": "b"}\n')
    with pytest.raises(InputError, match=r"n\.jsonl:2"):
        run_tables(tmp_path, bad)


def test_figures_are_drawn_from_the_tables_alone(tmp_path, normalized):
    _, _, out = run_tables(tmp_path, normalized, scores={"A": 70.0, "B": 10.0})
    normalized.unlink()  # the figures must not need the normalized records
    res = analysis.figures(out["datasets"], out["frequency"], out["top"], out["coverage"], tmp_path / "fig")
    assert len(res["figures"]) == 8
    for path in res["figures"]:
        data = open(path, "rb").read(8)
        assert data.startswith(b"\x89PNG") or data.startswith(b"%PDF")
