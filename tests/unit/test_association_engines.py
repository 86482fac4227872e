"""The default association engine (sparse co-occurrence) finds exactly mlxtend FP-Growth's rules.

Every mining round of both engines is recorded and the rule lists compared: (antecedent, consequent,
support, confidence) with the confidence as the same float. Transactions: real text (the word sets of
real instructions from ../shared/data, where words co-occur the way natural text makes them), synthetic
raw and canonical tag pools (src/instag/synthetic.py), and hand-made pools whose pairs sit exactly on the
support and confidence thresholds.
"""

from __future__ import annotations

import json
import re

import pytest

from instag.normalize import association
from instag.normalize.pool import pool_from_lists
from instag.synthetic import canonical_pool, synthetic_pool

WORD = re.compile(r"[a-z][a-z0-9']{2,}")


def _mine_all_rounds(monkeypatch, pool, engine, **params):
    """Run the aggregation with ``engine``, recording each round's rule list (sorted)."""
    rounds = []
    name = "_rules_mlxtend" if engine == "mlxtend" else "_rules_cooccurrence"
    real = getattr(association, name)

    def recording(*args, **kwargs):
        out = real(*args, **kwargs)
        rounds.append(sorted(out))
        return out

    monkeypatch.setattr(association, name, recording)
    result = association.aggregate(pool, engine=engine, **params)
    monkeypatch.setattr(association, name, real)
    return result, rounds


def _assert_same(monkeypatch, pool, min_rules=1, **params):
    a, rules_a = _mine_all_rounds(monkeypatch, pool, "mlxtend", **params)
    b, rules_b = _mine_all_rounds(monkeypatch, pool, "cooccurrence", **params)
    assert sum(len(r) for r in rules_a) >= min_rules
    assert len(rules_a) == len(rules_b)
    for r, (ra, rb) in enumerate(zip(rules_a, rules_b, strict=True), start=1):
        assert ra == rb, f"round {r}: {len(ra)} mlxtend rules vs {len(rb)} co-occurrence rules"
    assert a["mapping"] == b["mapping"]
    strip = [{k: v for k, v in x.items() if k != "seconds"} for x in a["rounds"]]
    assert strip == [{k: v for k, v in x.items() if k != "seconds"} for x in b["rounds"]]
    return a


def _real_word_sets(shared_data, n_per_file=700):
    """Word sets (lowercase, 3+ characters) of real instructions: natural co-occurrence, a long tail."""
    out = []
    for name in ("alpaca-random-9k.json", "dolly-3k.json", "code-alpaca-2k.json"):
        with open(shared_data / name, encoding="utf-8") as fh:
            rows = json.load(fh)
        for row in rows[:n_per_file]:
            text = f"{row.get('instruction', '')} {row.get('input', '')}".lower()
            words = list(dict.fromkeys(WORD.findall(text)))
            if words:
                out.append(words)
    return out


@pytest.mark.parametrize(("min_support", "min_confidence"), [(4, 0.99), (10, 0.8)])
def test_engines_find_the_same_rules_on_real_text(monkeypatch, shared_data, min_support, min_confidence):
    pool = pool_from_lists(_real_word_sets(shared_data))
    res = _assert_same(monkeypatch, pool, min_support=min_support, min_confidence=min_confidence)
    assert res["tags_out"] < res["tags_in"]


def test_engines_find_the_same_rules_on_a_synthetic_raw_pool(monkeypatch):
    pool = pool_from_lists(synthetic_pool(12_000, n_tags=1000, seed=1))
    _assert_same(monkeypatch, pool, min_rules=5, min_support=5, min_confidence=0.99)


def test_engines_find_the_same_rules_on_imperfect_pairs(monkeypatch):
    # pairs that hold in most but not all queries: confidences spread around the threshold
    from instag.synthetic import pool_arrays

    arrays = pool_arrays(10_000, n_tags=600, seed=5, pair_correlation=0.4, pair_strength=0.985)
    _assert_same(monkeypatch, pool_from_lists(arrays.to_lists()), min_rules=5, min_support=10, min_confidence=0.98)
    pool = pool_from_lists(canonical_pool(6000, n_tags=300, seed=3, pair_correlation=0.3))
    _assert_same(monkeypatch, pool, min_rules=5, min_support=20, min_confidence=0.99)


def test_engines_agree_exactly_on_the_thresholds(monkeypatch):
    # A_k -> B_k with pair count 99k and A_k count 100k: confidence exactly 0.99 in exact arithmetic (in floats
    # (c / n) / (a / n) lands on either side); C -> D with pair count exactly the minimum support
    queries = []
    for k in range(1, 6):
        queries += [[f"a{k}", f"b{k}"]] * (99 * k) + [[f"a{k}"]] * k + [[f"b{k}"]] * 50
    queries += [["c", "d"]] * 40 + [["d"]] * 10 + [["e", "f"]] * 39 + [["f"]] * 5 + [["filler"]] * 333
    pool = pool_from_lists(queries)
    res = _assert_same(monkeypatch, pool, min_support=40, min_confidence=0.99)
    assert res["mapping"]["c"] == "d" and res["mapping"]["e"] == "e"


def test_support_exactly_at_the_minimum_in_a_subset_where_the_float_rounds_up(monkeypatch):
    # 187 queries hold two frequent tags; mlxtend's ceil(3 / 187 * 187) is 4, so a pair seen exactly 3 times
    # was lost unless the relative support is stepped down (association._relative_support)
    queries = [["x", "y"]] * 3 + [["p", "q"]] * 184 + [["p"]] * 200 + [["q"]] * 200
    res = _assert_same(monkeypatch, pool_from_lists(queries), min_support=3, min_confidence=0.99)
    assert res["mapping"]["x"] == "x" and res["mapping"]["y"] == "x"  # mutual pair: the first name survives


def test_default_engine_is_the_cooccurrence_one():
    assert association.DEFAULT_ENGINE == "cooccurrence"
    pool = pool_from_lists([["x", "y"]] * 40 + [["y"]] * 5)
    res = association.aggregate(pool)
    assert res["params"]["engine"] == "cooccurrence" and res["mapping"]["x"] == "y"
    with pytest.raises(ValueError, match="unknown association engine"):
        association.aggregate(pool, engine="apriori")
