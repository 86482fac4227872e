"""Selection algorithms: Algorithm 1 (complexity-first), the constrained sweeps, the random baseline."""

from __future__ import annotations

import logging
import math

import numpy as np

from .pool import Pool, UnreachableTarget

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------- orders


def ranked_order(key: np.ndarray, seed: int) -> np.ndarray:
    """Query indices sorted by ``key`` ascending, ties in a random order fixed by ``seed`` (A8).

    A seeded permutation followed by a stable sort: equal keys keep their shuffled order.
    """
    perm = np.random.default_rng(seed).permutation(key.size)
    return perm[np.argsort(key[perm], kind="stable")]


def _first_carriers(pool: Pool, rank: np.ndarray, alive: np.ndarray | None = None) -> np.ndarray:
    """For each tag, the smallest rank among the (alive) queries that carry it; ``rank.size`` when none."""
    big = rank.size
    first = np.full(pool.n_tags, big, dtype=np.int64)
    q = pool.entry_query
    if alive is None:
        np.minimum.at(first, pool.indices, rank[q])
    else:
        keep = alive[q]
        np.minimum.at(first, pool.indices[keep], rank[q[keep]])
    return first


# --------------------------------------------------------------------------------------------- Algorithm 1


def complexity_first(pool: Pool, n: int, seed: int = 0) -> tuple[np.ndarray, dict]:
    """Algorithm 1, complexity-first diverse sampling: ``n`` query indices in selection order, and run facts.

    Paper (§5.3): sort by tag count, descending; repeat passes over the queries not yet taken, each pass
    starting from an empty covered-tag set and keeping a query only if it adds an uncovered tag; stop at N.
    Our choices where the paper is silent (A8):
    * ties in tag count: broken by a seeded shuffle before a stable sort (reproducible under ``seed``);
    * the run stops as soon as N are kept, in the middle of a pass if need be (the pass's order decides);
    * a pass that keeps nothing can only happen when every query left has no tag at all; then the rest
      of N is filled from them in sorted (= shuffled) order, counted as ``filled``.
    """
    if n > pool.size:
        raise UnreachableTarget(
            f"size {n} is larger than the pool ({pool.size} queries); Algorithm 1 can return at most {pool.size}"
        )
    order = ranked_order(-pool.counts.astype(np.int64), seed)
    rank = np.empty(pool.size, dtype=np.int64)
    rank[order] = np.arange(pool.size)
    alive = np.ones(pool.size, dtype=bool)
    chosen: list[np.ndarray] = []
    taken, per_pass, filled = 0, [], 0
    while taken < n:
        first = _first_carriers(pool, rank, alive)
        kept_ranks = np.unique(first[first < pool.size])  # ascending = the pass's order
        if kept_ranks.size == 0:  # only tagless queries are left: fill in sorted order
            rest = order[alive[order]][: n - taken]
            chosen.append(rest)
            filled = int(rest.size)
            taken += rest.size
            break
        kept = order[kept_ranks[: n - taken]]  # stop mid-pass at N
        chosen.append(kept)
        alive[kept] = False
        taken += kept.size
        per_pass.append(int(kept.size))
    selection = np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.int64)
    return selection, {"passes": len(per_pass), "kept_per_pass": per_pass, "filled": filled}


# --------------------------------------------------------------------------------------------- the sweeps


def _fill_levels(hist: np.ndarray, n_fill: int, target_sum: int) -> tuple[np.ndarray, int]:
    """How many candidates to take at each tag count so that ``n_fill`` of them sum to ``target_sum``.

    Start from the counts nearest the needed mean (ties: the lower count first), then move items from the
    most distant selected count to the farthest free count that does not overshoot, until the sum is met.
    When no such move is left, try one compound move: one item moved past the target and one moved back by
    exactly the overshoot. Returns the per-count numbers and the remaining difference (target - achieved).
    """
    levels = np.arange(hist.size)
    take = np.zeros(hist.size, dtype=np.int64)
    if n_fill == 0:
        return take, target_sum
    mean = target_sum / n_fill
    left = n_fill
    for c in sorted(levels.tolist(), key=lambda c: (abs(c - mean), c)):
        t = min(int(hist[c]), left)
        take[c] = t
        left -= t
        if not left:
            break
    diff = target_sum - int((take * levels).sum())
    while diff:
        step = 1 if diff > 0 else -1
        if _single_move(take, hist, diff, step):
            diff = target_sum - int((take * levels).sum())
            continue
        if not _compound_move(take, hist, diff, step):
            break
        diff = target_sum - int((take * levels).sum())
    return take, diff


def _single_move(take: np.ndarray, hist: np.ndarray, diff: int, step: int) -> bool:
    """Move items from the most distant selected count towards the target without overshooting it."""
    for a in np.flatnonzero(take)[::step].tolist():  # diff > 0: lowest counts first; < 0: highest first
        lo, hi = (a + 1, min(hist.size - 1, a + diff)) if step > 0 else (max(0, a + diff), a - 1)
        spare = [b for b in range(lo, hi + 1) if hist[b] > take[b]]
        if not spare:
            continue
        b = spare[-1] if step > 0 else spare[0]
        gap = abs(b - a)
        k = min(int(take[a]), int(hist[b] - take[b]), abs(diff) // gap)
        take[a] -= k
        take[b] += k
        return True
    return False


def _compound_move(take: np.ndarray, hist: np.ndarray, diff: int, step: int) -> bool:
    """Move one item past the target (by ``gap``), then one back by exactly the overshoot; smallest gap first."""
    size = hist.size
    for gap in range(abs(diff) + 1, size):
        for a in np.flatnonzero(take).tolist():
            b = a + step * gap
            if not 0 <= b < size or hist[b] <= take[b]:
                continue
            take[a] -= 1
            take[b] += 1
            back = gap - abs(diff)
            src = np.flatnonzero(take)
            dst = src - step * back
            ok = (dst >= 0) & (dst < size)
            ok[ok] &= hist[dst[ok]] > take[dst[ok]]
            if ok.any():
                c, d = int(src[ok][0]), int(dst[ok][0])
                take[c] -= 1
                take[d] += 1
                return True
            take[a] += 1
            take[b] -= 1
    return False


def _cover(pool: Pool, order: np.ndarray, rank: np.ndarray, k_tags: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """One greedy pass over ``order``: keep a query if it adds an uncovered tag and does not carry the
    number of covered tags past ``k_tags``; stop when ``k_tags`` are covered.

    Up to the first query that would overshoot this is the vectorised first-carrier pass; after it the scan
    goes on query by query, taking only queries that add no more tags than are still missing.
    Returns the kept queries in order, the covered-tag mask and facts about the pass.
    """
    first = _first_carriers(pool, rank)
    carriers = np.unique(first[first < pool.size])  # ranks of every query the full pass would keep
    firsts_sorted = np.sort(first)
    covered_by = np.searchsorted(firsts_sorted, carriers, side="right")  # tags covered after each carrier
    n_fit = int(np.searchsorted(covered_by, k_tags, side="right"))  # carriers that keep coverage <= k
    kept = list(order[carriers[:n_fit]])
    in_u = np.zeros(pool.n_tags, dtype=bool)
    in_u[first <= (carriers[n_fit - 1] if n_fit else -1)] = True
    n_cov = int(in_u.sum())
    tail_scanned = 0
    if n_cov < k_tags and n_fit < carriers.size:  # the next carrier overshoots: scan on, one query at a time
        start = int(carriers[n_fit])
        for q in order[start:]:
            tail_scanned += 1
            tags = pool.tags_of(q)
            new = tags[~in_u[tags]]
            if 0 < new.size <= k_tags - n_cov:
                kept.append(q)
                in_u[new] = True
                n_cov += new.size
                if n_cov == k_tags:
                    break
    facts = {
        "cover_size": len(kept),
        "tail_scanned": tail_scanned,
        "carriers_needed_for": covered_by,
    }  # tags covered after each carrier, for the reach message
    return np.asarray(kept, dtype=np.int64), in_u, facts


def _attempt(pool: Pool, n: int, k_tags: int, complexity: float, toward: float, seed: int) -> dict:
    """Cover toward ``toward`` tags, then fill to ``complexity``; a dict with ``selection`` or ``problem``."""
    order = ranked_order(np.abs(pool.counts - toward), seed)
    rank = np.empty(pool.size, dtype=np.int64)
    rank[order] = np.arange(pool.size)
    cover, in_u, facts = _cover(pool, order, rank, k_tags)
    carriers_cov = facts.pop("carriers_needed_for")
    out: dict = {"toward": float(toward), "cover_size": int(cover.size)}
    if cover.size > n:
        reach = int(carriers_cov[min(n, carriers_cov.size) - 1]) if n >= 1 and carriers_cov.size else 0
        out["max_coverage"] = reach / pool.n_tags
        out["problem"] = (
            f"covering {k_tags} tags takes {cover.size} queries, more than {n}; {n} queries of that cover "
            f"reach coverage {reach / pool.n_tags:.4f} ({reach} tags)"
        )
        return out
    outside = np.bincount(pool.entry_query[~in_u[pool.indices]], minlength=pool.size)
    candidate = outside == 0
    candidate[cover] = False
    n_fill = n - cover.size
    n_cand = int(candidate.sum())
    if n_cand < n_fill:
        out["problem"] = (
            f"after a cover of {cover.size} queries only {n_cand} more queries lie within the "
            f"{int(in_u.sum())} covered tags, so this coverage reaches at most size {cover.size + n_cand}"
        )
        return out
    cover_sum = int(pool.counts[cover].sum())
    hist = np.bincount(pool.counts[candidate], minlength=1)
    take, _ = _fill_levels(hist, n_fill, round(complexity * n) - cover_sum)
    cand_in_order = order[candidate[order]]
    cand_levels = pool.counts[cand_in_order]
    fill_mask = np.zeros(pool.size, dtype=bool)
    for c in np.flatnonzero(take):
        fill_mask[cand_in_order[cand_levels == c][: take[c]]] = True
    fill = order[fill_mask[order]]
    cand_sorted = np.sort(pool.counts[candidate])
    out.update(
        selection=np.concatenate([cover, fill]),
        lo=(cover_sum + int(cand_sorted[:n_fill].sum())) / n,
        hi=(cover_sum + int(cand_sorted[cand_sorted.size - n_fill :].sum())) / n,
        info={
            **facts,
            "fill_size": int(fill.size),
            "cover_avg_tags": cover_sum / cover.size if cover.size else 0.0,
            "cover_ordered_toward": float(toward),
        },
    )
    return out


def constrained(
    pool: Pool,
    n: int,
    coverage: float,
    complexity: float,
    seed: int = 0,
    tol_coverage: float = 0.01,
    tol_complexity: float = 0.05,
) -> tuple[np.ndarray, dict]:
    """``n`` queries whose coverage and mean tag count land on the targets (our construction, A11).

    1. Order the pool by how far each query's tag count is from ``complexity`` (ties: seeded shuffle).
    2. Cover: one greedy pass in that order keeps queries that add uncovered tags until
       K = round(coverage * pool tags) tags are covered (exactly K where a query adding few enough
       tags is found; see :func:`_cover`).
    3. Fill: the remaining ``n - cover`` queries come from queries whose tags all lie in the covered set
       (so coverage stays put), chosen per tag count so that the sample's tag total is
       round(complexity * n) (:func:`_fill_levels`), and within a tag count in the seeded order.
    When that misses a target by more than its tolerance, steps 1-3 are retried with the cover ordered
    toward each whole tag count in turn, nearest to ``complexity`` first; the first result within both
    tolerances is returned (``cover_ordered_toward`` in the facts says which). When none is, this raises
    :class:`UnreachableTarget` saying what the pool reaches at this size and coverage.
    """
    if not 0 < coverage <= 1:
        raise UnreachableTarget(f"coverage target {coverage} is not in (0, 1]")
    if n > pool.size:
        raise UnreachableTarget(f"size {n} is larger than the pool ({pool.size} queries)")
    k_tags = max(1, round(coverage * pool.n_tags))
    whole = sorted(range(int(pool.counts.max()) + 1), key=lambda t: (abs(t - complexity), t))
    attempts = []
    for toward in [complexity] + [t for t in whole if t != complexity]:
        a = _attempt(pool, n, k_tags, complexity, toward, seed)
        attempts.append(a)
        if "selection" not in a:
            continue
        m = pool.measure(a["selection"])
        a["measure"] = m
        if (
            abs(m["coverage"] - coverage) <= tol_coverage
            and abs(m["avg_tags_per_query"] - complexity) <= tol_complexity
        ):
            return a["selection"], {**a["info"], "attempts": len(attempts)}
    first = attempts[0]
    parts = [
        f"cannot build size {n}, coverage {coverage:.4g} ({k_tags} of {pool.n_tags} tags), {complexity:.4g} tags "
        f"per query within tolerance (coverage ±{tol_coverage}, tags ±{tol_complexity})"
    ]
    if "problem" in first:
        parts.append(f"with the cover ordered toward {complexity:.4g} tags, {first['problem']}")
    else:
        m = first["measure"]
        parts.append(
            f"with the cover ordered toward {complexity:.4g} tags ({first['cover_size']} queries) the result has "
            f"coverage {m['coverage']:.4f} and {m['avg_tags_per_query']:.4f} tags per query, and its fill can "
            f"range over [{first['lo']:.3f}, {first['hi']:.3f}] tags per query"
        )
    fits = [a for a in attempts if "selection" in a]
    if fits:
        lo, hi = min(a["lo"] for a in fits), max(a["hi"] for a in fits)
        covs = sorted({round(a["measure"]["coverage"], 4) for a in fits})
        parts.append(
            f"over covers ordered toward any whole tag count (0-{int(pool.counts.max())}) the pool reaches "
            f"[{lo:.3f}, {hi:.3f}] tags per query at this size, with coverage {', '.join(map(str, covs))}"
        )
    else:
        best = max((a.get("max_coverage", 0.0) for a in attempts), default=0.0)
        parts.append(
            f"no cover ordered toward any whole tag count fits: at size {n} the pool reaches coverage "
            f"{best:.4f} at most this way"
        )
    raise UnreachableTarget("; ".join(parts))


def complexity_reach(pool: Pool, n: int, coverage: float, seed: int = 0) -> tuple[float, float]:
    """The range of mean tags per query that :func:`constrained` can reach at size ``n`` and ``coverage``:
    over covers ordered toward every whole tag count, the fewest- and the most-tagged fills that fit
    (``(nan, nan)`` when no cover fits)."""
    k_tags = max(1, round(coverage * pool.n_tags))
    fits = [_attempt(pool, n, k_tags, 0.0, t, seed) for t in range(int(pool.counts.max()) + 1)]
    fits = [a for a in fits if "selection" in a]
    if not fits:
        return math.nan, math.nan
    return min(a["lo"] for a in fits), max(a["hi"] for a in fits)


def uniform_random(pool: Pool, n: int, seed: int = 0) -> np.ndarray:
    """``n`` queries drawn uniformly without replacement: the first ``n`` of a seeded permutation, so the
    baselines at growing sizes are nested."""
    if n > pool.size:
        raise UnreachableTarget(f"size {n} is larger than the pool ({pool.size} queries)")
    return np.random.default_rng(seed).permutation(pool.size)[:n]
