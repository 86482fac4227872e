"""Step 4, association aggregation: merge tags that (almost) always co-occur, recursively (paper.md §2.2, A6).

Our reading (A6): transactions are the per-query tag sets after the semantic step; FP-Growth (mlxtend) mines
itemsets with an absolute minimum support (paper: 40 queries) and ``association_rules`` keeps rules with
confidence >= 0.99. Only pair rules A -> B are used: A almost never appears without B, so A adds nothing and
merges into B. When A has several such rules it merges into the consequent with the highest confidence
(ties: the more frequent, then the alphabetically first). Merges are applied with union-find (chains
A -> B -> C end in C; a mutual pair ends in the more frequent tag), the pool is relabelled, and mining runs
again until no rule passes ("recursively"): a fixed point.

Re-mining is exact and cheap: after a round, only pairs that involve a tag that absorbed another can change
(every other pair keeps its counts, and its rule already failed), so later rounds mine only the queries that
carry such a tag and keep only rules that involve one; single-tag supports always come from the whole pool.
For the same reason the first round mines only queries with two or more frequent tags.

Two engines mine the same rules. ``engine="cooccurrence"`` (the default) counts every pair of frequent tags
with one sparse product S^T S over the same queries and applies the same support and confidence arithmetic
as mlxtend; ``engine="mlxtend"`` runs mlxtend's FP-Growth (``max_len=2``) and ``association_rules``, the
paper's method. The unit tests compare their rule lists round by round (real-text transactions from
../shared/data and synthetic pools); at a million synthetic queries both find the same rules, the
co-occurrence engine in seconds where FP-Growth takes minutes and gigabytes (benchmarks/normalize.py).
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np

from .pool import TagPool

log = logging.getLogger(__name__)

PAPER_MIN_SUPPORT = 40
PAPER_MIN_CONFIDENCE = 0.99
#: Rule miners, the default first (both give the same rules).
ENGINES = ("cooccurrence", "mlxtend")
DEFAULT_ENGINE = ENGINES[0]


def _relative_support(min_count: int, m: int) -> float:
    """The relative support that makes FP-Growth keep exactly the itemsets in >= ``min_count`` of ``m`` rows.

    mlxtend turns ``min_support`` back into a count with ``ceil(min_support * m)``; for many ``m`` the float
    ``min_count / m * m`` lands one ulp above ``min_count`` and the ceiling asks for ``min_count + 1`` (e.g.
    3 of 187). Step down to the largest float whose ceiling is ``min_count`` (still above ``(min_count-1)/m``).
    """
    support = min_count / m
    while math.ceil(support * m) > min_count:
        support = float(np.nextafter(support, 0.0))
    return support


def _rules_mlxtend(X, counts: np.ndarray, min_count: int, min_confidence: float, focus: np.ndarray | None):
    """Pair rules (a, b, pair count, confidence) with FP-Growth over the queries that can hold a new pair."""
    import pandas as pd
    from mlxtend.frequent_patterns import association_rules, fpgrowth

    n = X.shape[0]
    freq = np.flatnonzero(counts >= min_count)
    if freq.size < 2:
        return []
    Xf = X[:, freq].tocsr()
    rows = np.diff(Xf.indptr) >= 2
    if focus is not None:
        in_focus = np.zeros(X.shape[1], dtype=bool)
        in_focus[focus] = True
        has_focus = np.asarray(Xf[:, in_focus[freq]].sum(axis=1)).ravel() > 0
        rows &= has_focus
    sub = Xf[rows]
    m = sub.shape[0]
    if m < min_count:
        return []
    # drop items that cannot reach min_count inside the subset (FP-Growth would ignore them anyway)
    sub_counts = np.asarray(sub.sum(axis=0)).ravel()
    cols = np.flatnonzero(sub_counts >= min_count)
    if cols.size < 2:
        return []
    sub = sub[:, cols].tocsc()
    items = freq[cols]
    df = pd.DataFrame.sparse.from_spmatrix(sub, columns=[str(i) for i in items.tolist()])
    fi = fpgrowth(df, min_support=_relative_support(min_count, m), use_colnames=True, max_len=2)
    pairs = fi[fi["itemsets"].map(len) == 2]
    if pairs.empty:
        return []
    # supports relative to the whole pool: pair counts from the subset (exact: every query holding a pair of
    # frequent tags with a focus tag is in it), single-tag counts from the whole pool
    pair_counts = np.rint(pairs["support"].to_numpy() * m)
    pair_sets = [frozenset(int(i) for i in s) for s in pairs["itemsets"]]
    singles = np.unique(np.concatenate([np.fromiter(s, dtype=np.int64, count=2) for s in pair_sets]))
    fi_all = pd.DataFrame(
        {
            "support": np.concatenate([counts[singles] / n, pair_counts / n]),
            "itemsets": [frozenset([int(i)]) for i in singles] + pair_sets,
        }
    )
    rules = association_rules(
        fi_all,
        num_itemsets=n,
        metric="confidence",
        min_threshold=min_confidence,
        return_metrics=["support", "confidence"],
    )
    out = []
    for ante, cons, sup, conf in zip(
        rules["antecedents"], rules["consequents"], rules["support"], rules["confidence"], strict=False
    ):
        (a,), (b,) = tuple(ante), tuple(cons)
        out.append((int(a), int(b), int(round(sup * n)), float(conf)))
    if focus is not None:
        in_focus = set(focus.tolist())
        out = [r for r in out if r[0] in in_focus or r[1] in in_focus]
    return out


def _pair_matrix(X, counts: np.ndarray, min_count: int, focus: np.ndarray | None):
    """The queries that can hold a rule, as a CSR matrix over the frequent tags (int32 ones), and those tags.

    Same subset as the mlxtend engine mines: queries with two or more tags of count >= ``min_count`` (and,
    after the first round, one of the ``focus`` tags). Built from the CSR arrays directly (no column slicing
    of the whole pool, which costs more than the product below at a million queries).
    """
    import scipy.sparse as sp

    freq = np.flatnonzero(counts >= min_count)
    if freq.size < 2:
        return None, freq
    col = np.full(X.shape[1], -1, dtype=np.int32)
    col[freq] = np.arange(freq.size, dtype=np.int32)
    mapped = col[X.indices]
    keep = mapped >= 0
    n_rows = X.shape[0]
    entry_row = np.repeat(np.arange(n_rows, dtype=np.int64), np.diff(X.indptr))
    per_row = np.bincount(entry_row[keep], minlength=n_rows)
    rows_ok = per_row >= 2
    if focus is not None:
        is_focus = np.zeros(X.shape[1], dtype=bool)
        is_focus[focus] = True
        rows_ok &= np.bincount(entry_row[keep & is_focus[X.indices]], minlength=n_rows) > 0
    sel = keep & rows_ok[entry_row]
    n_sub = int(rows_ok.sum())
    if n_sub < min_count:
        return None, freq
    indptr = np.zeros(n_sub + 1, dtype=np.int64)
    np.cumsum(per_row[rows_ok], out=indptr[1:])
    data = np.ones(int(sel.sum()), dtype=np.int32)
    sub = sp.csr_matrix((data, mapped[sel], indptr), shape=(n_sub, freq.size))
    return sub, freq


def _rules_cooccurrence(X, counts: np.ndarray, min_count: int, min_confidence: float, focus: np.ndarray | None):
    """The same pair rules as :func:`_rules_mlxtend`, from the co-occurrence matrix S^T S of the same queries.

    Support and confidence are computed with the same floating-point operations as mlxtend's
    ``association_rules`` on the supports the mlxtend engine hands it (``(c/n * n) / (count_a/n * n)``), so
    rules at the exact confidence threshold come out the same; the unit tests compare the rule lists.
    """
    n = X.shape[0]
    sub, freq = _pair_matrix(X, counts, min_count, focus)
    if sub is None:
        return []
    C = (sub.T @ sub).tocoo()
    keep = (C.row != C.col) & (C.data >= min_count)
    a, b, c = freq[C.row[keep]], freq[C.col[keep]], C.data[keep].astype(np.int64)
    if focus is not None:
        is_focus = np.zeros(X.shape[1], dtype=bool)
        is_focus[focus] = True
        inv = is_focus[a] | is_focus[b]
        a, b, c = a[inv], b[inv], c[inv]
    # mlxtend: supports sAC = c / n and sA = count_a / n, confidence = sAC * n / (sA * n)
    conf = ((c / n) * n) / ((counts[a] / n) * n)
    ok = conf >= min_confidence
    sup = np.rint((c / n) * n).astype(np.int64)
    order = np.lexsort((b[ok], a[ok]))
    return [
        (int(x), int(y), int(z), float(w))
        for x, y, z, w in zip(a[ok][order], b[ok][order], sup[ok][order], conf[ok][order], strict=True)
    ]


def _find(parent: list[int], i: int) -> int:
    root = i
    while parent[root] != root:
        root = parent[root]
    while parent[i] != root:
        parent[i], i = root, parent[i]
    return root


def merge_rules(names: list[str], counts: np.ndarray, rules: list[tuple[int, int, int, float]]) -> dict[int, int]:
    """Union-find over the chosen rule of each antecedent; returns {merged tag id: surviving tag id}."""
    best: dict[int, tuple] = {}
    for a, b, _sup, conf in rules:
        key = (-conf, -int(counts[b]), names[b])
        if a not in best or key < best[a][0]:
            best[a] = (key, b)
    chosen = sorted(
        ((a, b) for a, (_, b) in best.items()), key=lambda ab: (-int(counts[ab[1]]), names[ab[1]], names[ab[0]])
    )
    parent = list(range(len(names)))
    for a, b in chosen:
        ra, rb = _find(parent, a), _find(parent, b)
        if ra != rb:
            parent[ra] = rb
    return {i: _find(parent, i) for i in range(len(names)) if _find(parent, i) != i}


def aggregate(
    pool: TagPool,
    *,
    min_support: int = PAPER_MIN_SUPPORT,
    min_confidence: float = PAPER_MIN_CONFIDENCE,
    max_rounds: int = 50,
    engine: str = DEFAULT_ENGINE,
    scale: bool = False,
    reference_queries: int = 500_000,
    min_support_floor: int = 5,
) -> dict:
    """Merge associated tags until no rule passes; return the step result (mapping and per-round counts).

    With ``scale`` the absolute support is scaled like the frequency threshold:
    ``max(min_support_floor, round(min_support * tagged queries / reference_queries))``.
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown association engine '{engine}' ({', '.join(ENGINES)})")
    min_count = int(min_support)
    if scale:
        min_count = max(min_support_floor, int(round(min_support * pool.n_tagged / reference_queries)))
    mine = _rules_mlxtend if engine == "mlxtend" else _rules_cooccurrence
    final = {name: name for name in pool.names}
    current = pool
    rounds: list[dict] = []
    focus: np.ndarray | None = None
    converged = False
    for r in range(1, max_rounds + 1):
        t = time.perf_counter()
        X = current.csr()
        counts = current.counts()
        rules = mine(X, counts, min_count, min_confidence, focus)
        merges = merge_rules(current.names, counts, rules) if rules else {}
        rounds.append(
            {
                "round": r,
                "rules": len(rules),
                "merged": len(merges),
                "tags_before": current.n_tags,
                "seconds": round(time.perf_counter() - t, 3),
            }
        )
        log.info("association round %d: %d rules, %d tags merged", r, len(rules), len(merges))
        if not merges:
            converged = True
            break
        step_map = {name: current.names[merges.get(i, i)] for i, name in enumerate(current.names)}
        for raw, cur in final.items():
            final[raw] = step_map[cur]
        current = current.relabel(step_map)
        # tags that absorbed another: the only ones whose pairs can change in the next round
        index = {name: i for i, name in enumerate(current.names)}
        focus = np.asarray(sorted({index[b] for a, b in step_map.items() if a != b}), dtype=np.int64)
    if not converged:
        log.warning("association: no fixed point after %d rounds", max_rounds)
    return {
        "step": "association",
        "params": {
            "min_support": min_support,
            "min_confidence": min_confidence,
            "engine": engine,
            "scale": scale,
            "reference_queries": reference_queries,
            "min_support_floor": min_support_floor,
            "max_rounds": max_rounds,
            "transactions": "queries",
            "rules": "pairs A->B, A merged into B",
        },
        "min_support_used": min_count,
        "tags_in": pool.n_tags,
        "tags_out": current.n_tags,
        "rules_first_round": rounds[0]["rules"] if rounds else 0,
        "rounds": rounds,
        "rounds_with_merges": sum(1 for x in rounds if x["merged"]),
        "converged": converged,
        "mapping": final,
    }
