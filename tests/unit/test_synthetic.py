"""Synthetic tagged pools: shape, determinism, and the noise the normalization steps target."""

from collections import Counter

import numpy as np
import pytest

from instag.normalize import lexical
from instag.synthetic import canonical_pool, pool_arrays, synthetic_pool, tag_names, variants_of


def test_canonical_pool_has_the_paper_shape():
    pool = canonical_pool(20_000, n_tags=2000, seed=1)
    assert len(pool) == 20_000
    sizes = np.array([len(q) for q in pool])
    assert sizes.min() >= 1 and 4.0 < sizes.mean() < 5.0  # ~4.5 tags per query
    assert sizes.max() >= 15  # a long tail of tag-rich queries
    assert all(q == sorted(set(q)) for q in pool[:500])
    counts = Counter(t for q in pool for t in q)
    ranked = [c for _, c in counts.most_common()]
    assert ranked[0] > 20 * ranked[len(ranked) // 2]  # Zipf: a heavy head and a long tail
    assert len(counts) > 1800


def test_pools_are_deterministic_per_seed():
    assert canonical_pool(500, n_tags=100, seed=4) == canonical_pool(500, n_tags=100, seed=4)
    assert canonical_pool(500, n_tags=100, seed=4) != canonical_pool(500, n_tags=100, seed=5)
    assert synthetic_pool(500, n_tags=100, seed=4) == synthetic_pool(500, n_tags=100, seed=4)


def test_correlated_pairs_always_co_occur():
    arrays = pool_arrays(5000, n_tags=200, seed=2, pair_correlation=0.5)
    X = np.zeros((arrays.n_queries, 200), dtype=bool)
    rows = np.repeat(np.arange(arrays.n_queries), np.diff(arrays.indptr))
    X[rows, arrays.indices] = True
    counts = X.sum(0)
    co = X.T.astype(np.int64) @ X.astype(np.int64)
    implied = [(a, b) for a in range(200) for b in range(200) if a != b and counts[a] and co[a, b] == counts[a]]
    assert len(implied) >= 40  # about half of the 150 tags outside the top 50 imply a partner


def test_raw_pool_adds_variants_that_rule_aggregation_folds_back():
    raw = synthetic_pool(5000, n_tags=300, seed=0, variant_rate=0.3)
    distinct = {t for q in raw for t in q}
    assert len(distinct) > 400  # variants add raw strings beyond the 300 base tags
    base = set(tag_names(300, 0))
    keys = {lexical.rule_key(t) for t in distinct}
    # case, punctuation and plural variants fold back; only the re-ordered phrasings remain extra
    reordered = {t for t in distinct if " for " in t}
    assert len(keys) <= len(base) + len({lexical.rule_key(t) for t in reordered})
    assert all(len(q) == len(set(q)) for q in raw)


def test_variants_and_names():
    v = variants_of("python debugging")
    assert "Python Debugging" in v and "python-debugging" in v and "debugging for python" in v
    assert lexical.rule_key(v[2]) == lexical.rule_key("python debugging")  # the plural stems back
    names = tag_names(12_000)
    assert len(set(names)) == 12_000
    with pytest.raises(ValueError):
        tag_names(10**7)
