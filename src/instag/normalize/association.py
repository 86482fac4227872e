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

``engine="cooccurrence"`` computes the same pair rules from a sparse co-occurrence matrix (X^T X) instead of
FP-Growth; the unit tests check that both engines agree. The default is mlxtend, the paper's method.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from .pool import TagPool

log = logging.getLogger(__name__)

PAPER_MIN_SUPPORT = 40
PAPER_MIN_CONFIDENCE = 0.99


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
    fi = fpgrowth(df, min_support=min_count / m, use_colnames=True, max_len=2)
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


def _rules_cooccurrence(X, counts: np.ndarray, min_count: int, min_confidence: float, focus=None):
    """The same pair rules from the co-occurrence matrix X^T X (sparse)."""
    freq = np.flatnonzero(counts >= min_count)
    if freq.size < 2:
        return []
    Xf = X[:, freq].astype(np.int32)
    C = (Xf.T @ Xf).tocoo()
    keep = (C.row != C.col) & (C.data >= min_count)
    a, b, c = freq[C.row[keep]], freq[C.col[keep]], C.data[keep].astype(np.int64)
    conf = c / counts[a]
    ok = conf >= min_confidence
    return [(int(x), int(y), int(z), float(w)) for x, y, z, w in zip(a[ok], b[ok], c[ok], conf[ok], strict=False)]


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
    engine: str = "mlxtend",
    scale: bool = False,
    reference_queries: int = 500_000,
    min_support_floor: int = 5,
) -> dict:
    """Merge associated tags until no rule passes; return the step result (mapping and per-round counts).

    With ``scale`` the absolute support is scaled like the frequency threshold:
    ``max(min_support_floor, round(min_support * tagged queries / reference_queries))``.
    """
    if engine not in ("mlxtend", "cooccurrence"):
        raise ValueError(f"unknown association engine '{engine}' (mlxtend, cooccurrence)")
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
        rules = mine(X, counts, min_count, min_confidence, focus if engine == "mlxtend" else None)
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
