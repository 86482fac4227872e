"""Complexity-first diverse sampling (paper Algorithm 1) and the decoupled ablations (paper.md §5, §8).

Inputs and outputs::

    results/normalize/normalized.jsonl            {"id", "dataset", "tags": [sorted canonical tags], "status"?}
    results/sampling/pool.jsonl               the pool: records of the configured datasets, untagged ones left out
    results/sampling/pool.stats.json          size, tag count, average tags, per-dataset counts
    results/tables/pool.tsv                  the same beside the paper's 306,044 / 6,398 / 4.48
    results/sampling/<ablation>/<variant>.jsonl        {"id", "dataset", "tags"} in selection order
    results/sampling/<ablation>/<variant>.stats.json   targets, achieved size/coverage/complexity, composition
    results/tables/samples.tsv               one row per variant
    results/figures/sampling_coverage_complexity.{png,pdf}

Definitions (paper §4.1, A14): a sample's *coverage* is the share of the pool's tag set that its queries carry;
its *complexity* is the mean number of tags per query (per session: a session's tags are the union of its
turns' tags, A2). Coverage is always measured against the pool's tag set.

Algorithm 1 (:func:`complexity_first`) is the paper's procedure; where the paper is silent we follow A8:

* ties: the pool is shuffled with the seed, then stably sorted by tag count, descending;
* the run stops the moment the sample holds N queries, also in the middle of a pass;
* a pass that adds nothing (every query left has no tag) is followed by filling the rest in sorted order.

The ablations' construction is not stated by the paper; ours (A11) is :func:`constrained` for both sweeps:
a greedy cover pass over queries ordered by closeness of their tag count to the target mean (A11's "band
around k") until the target share of the pool's tags is covered, then a fill from queries whose tags all lie
in the covered set that sets the mean tag count. For the diversity sweep A11 suggests drawing the tag subset
first and keeping the queries entirely inside it; we let the cover pass grow the subset instead, because a
uniformly drawn subset keeps few complex queries (on the 300K synthetic pool of benchmarks/sampling.py, a
random 45% of the tags holds ~35K queries averaging 1.5 tags, ~400 of them with 5+ tags: no 6K at 5.0),
while the pass keeps the frequent tags in, as a random sample would. A variant that cannot be built within the
configured tolerance raises :class:`UnreachableTarget` with what the pool can reach; nothing else is
returned instead. Random baselines are the first N of one seeded permutation (nested across sizes).

Speed: tags are integer ids in CSR arrays. A greedy pass of Algorithm 1 ("keep a query when it adds an
uncovered tag") keeps exactly the queries that are, for some tag, the first query in the pass's order that
carries that tag: a kept query's new tag cannot sit in any earlier query (a skipped query's tags were all
covered already, and coverage only grows), and the first carrier of a tag always adds it. So a whole pass is
one ``np.minimum.at`` over the (query, tag) entries instead of a Python loop over the pool.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError, InstagError
from .io import atomic_write, dumps, iter_jsonl, read_json, read_tsv, write_json, write_tsv

log = logging.getLogger(__name__)

#: The paper's selection pool (paper.md §5.1: [NF][CARD][CN][AIREV]).
PAPER_POOL = {"queries": 306044, "tags": 6398, "avg_tags_per_query": 4.48}
#: The paper's Algorithm 1 output at N = 6,000 (paper.md §5.2).
PAPER_SAMPLE = {"size": 6000, "avg_tags_per_query": 16.56, "coverage": 1.0}

ABLATIONS = ("complexity", "diversity", "size", "random")
#: Records with this status in normalized.jsonl failed tagging; they stay out of the pool (counted).
UNTAGGED = "untagged"


class UnreachableTarget(InstagError):
    """A variant that the pool cannot provide as asked; the message says what it can reach."""


# --------------------------------------------------------------------------------------------- the pool


@dataclass
class Pool:
    """Queries with integer tag ids in CSR form: query ``i`` has tags ``indices[indptr[i]:indptr[i + 1]]``."""

    ids: list[str]
    dataset_names: list[str]
    dataset_codes: np.ndarray  # int16, index into dataset_names
    tag_names: list[str]  # sorted; a tag's id is its index
    indptr: np.ndarray  # int64, len n + 1
    indices: np.ndarray  # int32 tag ids, sorted within a query
    counts: np.ndarray = field(init=False)  # int32 tags per query
    entry_query: np.ndarray = field(init=False)  # int32 query of each entry

    def __post_init__(self):
        self.counts = np.diff(self.indptr).astype(np.int32)
        self.entry_query = np.repeat(np.arange(len(self.ids), dtype=np.int32), self.counts)

    @property
    def size(self) -> int:
        return len(self.ids)

    @property
    def n_tags(self) -> int:
        return len(self.tag_names)

    def tags_of(self, i: int) -> np.ndarray:
        return self.indices[self.indptr[i] : self.indptr[i + 1]]

    @classmethod
    def from_records(cls, records: Iterable[tuple[str, str, Sequence[str]]], dataset_names: Sequence[str] = ()) -> Pool:
        """Build from ``(id, dataset, tags)`` triples; datasets keep the given order, then first-seen order."""
        ids, codes, tag_lists = [], [], []
        names = list(dataset_names)
        code_of = {n: i for i, n in enumerate(names)}
        for rid, ds, tags in records:
            if ds not in code_of:
                code_of[ds] = len(names)
                names.append(ds)
            ids.append(rid)
            codes.append(code_of[ds])
            tag_lists.append(tags)
        vocab = sorted({t for tags in tag_lists for t in tags})
        tid = {t: i for i, t in enumerate(vocab)}
        counts = np.fromiter((len(set(t)) for t in tag_lists), dtype=np.int64, count=len(tag_lists))
        indptr = np.zeros(len(tag_lists) + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        flat = np.fromiter(
            (tid[t] for tags in tag_lists for t in sorted(set(tags))), dtype=np.int32, count=int(indptr[-1])
        )
        return cls(ids, names, np.asarray(codes, dtype=np.int16), vocab, indptr, flat)

    def measure(self, selection: np.ndarray) -> dict:
        """Size, coverage of the pool's tag set, mean tags per query and per-dataset counts of a selection."""
        selection = np.asarray(selection, dtype=np.int64)
        chosen = np.zeros(self.size, dtype=bool)
        chosen[selection] = True
        covered = np.zeros(self.n_tags, dtype=bool)
        covered[self.indices[chosen[self.entry_query]]] = True
        n_cov = int(covered.sum())
        per_ds = np.bincount(self.dataset_codes[selection], minlength=len(self.dataset_names))
        return {
            "size": int(selection.size),
            "tags_covered": n_cov,
            "coverage": n_cov / self.n_tags if self.n_tags else 0.0,
            "avg_tags_per_query": float(self.counts[selection].sum() / selection.size) if selection.size else 0.0,
            "composition": {name: int(c) for name, c in zip(self.dataset_names, per_ds, strict=True)},
        }


def read_tag_records(path: str | Path, datasets: Sequence[str] = ()) -> tuple[list[tuple[str, str, list[str]]], dict]:
    """Read normalized.jsonl; keep the records of ``datasets`` (all when empty) that were tagged.

    Returns the kept ``(id, dataset, tags)`` triples in file order and counts of what was left out.
    A record without id/dataset/tags, with tags that are not a list of strings, or a repeated id is an
    :class:`InputError` naming the line: the pool must not lose or double a query silently.
    """
    wanted = set(datasets)
    kept: list[tuple[str, str, list[str]]] = []
    seen: dict[str, int] = {}
    per_ds: dict[str, dict[str, int]] = {}
    statuses: dict[str, int] = {}
    for line, rec in iter_jsonl(path):
        if not isinstance(rec, dict):
            raise InputError(path, f"expected a JSON object, got {type(rec).__name__}", line)
        for key in ("id", "dataset", "tags"):
            if key not in rec:
                raise InputError(path, f"record has no '{key}' (keys: {', '.join(rec)})", line)
        rid, ds, tags = rec["id"], rec["dataset"], rec["tags"]
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise InputError(path, f"'tags' of record {rid!r} is not a list of strings", line)
        if rid in seen:
            raise InputError(path, f"record id {rid!r} repeats the one on line {seen[rid]}", line)
        seen[rid] = line
        counts = per_ds.setdefault(ds, {"records": 0, "untagged": 0, "queries": 0, "no_tags": 0})
        counts["records"] += 1
        status = rec.get("status")
        if status is not None:
            statuses[str(status)] = statuses.get(str(status), 0) + 1
        if wanted and ds not in wanted:
            continue
        if status == UNTAGGED:
            counts["untagged"] += 1
            continue
        counts["queries"] += 1
        counts["no_tags"] += not tags
        kept.append((rid, ds, tags))
    missing = [d for d in datasets if d not in per_ds]
    if missing:
        raise InputError(
            path,
            f"no records of the pool dataset(s) {', '.join(missing)}; "
            f"datasets present: {', '.join(sorted(per_ds)) or 'none'}",
        )
    return kept, {"per_dataset": per_ds, "statuses": statuses}


def build_pool(
    tags: str | Path, out: str | Path, stats: str | Path, table: str | Path, datasets: Sequence[str] = ()
) -> dict:
    """Write the pool (records of ``datasets``, all when empty), its statistics and pool.tsv."""
    kept, info = read_tag_records(tags, datasets)
    if not kept:
        raise InputError(tags, "the pool is empty: no tagged record of the pool datasets")
    order = list(datasets) or sorted(info["per_dataset"])
    pool = Pool.from_records(kept, order)
    with atomic_write(out) as fh:
        for rid, ds, t in kept:
            fh.write(dumps({"id": rid, "dataset": ds, "tags": sorted(set(t))}) + "\n")
    m = pool.measure(np.arange(pool.size))
    per_ds = {}
    for code, name in enumerate(pool.dataset_names):
        sel = pool.dataset_codes == code
        c = info["per_dataset"].get(name, {})
        per_ds[name] = {
            "queries": int(sel.sum()),
            "untagged_left_out": c.get("untagged", 0),
            "no_tags": c.get("no_tags", 0),
            "avg_tags_per_query": float(pool.counts[sel].mean()) if sel.any() else 0.0,
        }
    left_out = sorted(d for d in info["per_dataset"] if d not in per_ds)
    summary = {
        "queries": pool.size,
        "tags": pool.n_tags,
        "avg_tags_per_query": m["avg_tags_per_query"],
        "max_tags_per_query": int(pool.counts.max()),
        "datasets": pool.dataset_names,
        "per_dataset": per_ds,
        "datasets_not_pooled": left_out,
        "untagged_left_out": sum(v["untagged_left_out"] for v in per_ds.values()),
        "statuses": info["statuses"],
    }
    write_json(stats, summary)
    rows = [
        {"measure": "queries", "this_run": pool.size, "paper": PAPER_POOL["queries"]},
        {"measure": "tags", "this_run": pool.n_tags, "paper": PAPER_POOL["tags"]},
        {
            "measure": "avg_tags_per_query",
            "this_run": round(m["avg_tags_per_query"], 4),
            "paper": PAPER_POOL["avg_tags_per_query"],
        },
        {"measure": "untagged_left_out", "this_run": summary["untagged_left_out"], "paper": ""},
    ]
    for name, v in per_ds.items():
        rows.append({"measure": f"queries_{name}", "this_run": v["queries"], "paper": ""})
        rows.append(
            {"measure": f"avg_tags_per_query_{name}", "this_run": round(v["avg_tags_per_query"], 4), "paper": ""}
        )
    write_tsv(table, rows, ["measure", "this_run", "paper"])
    log.info("pool: %d queries, %d tags, %.3f tags per query", pool.size, pool.n_tags, m["avg_tags_per_query"])
    return summary


def load_pool(path: str | Path) -> Pool:
    """Read a pool.jsonl written by :func:`build_pool`."""
    records = []
    for line, rec in iter_jsonl(path):
        try:
            records.append((rec["id"], rec["dataset"], rec["tags"]))
        except (KeyError, TypeError):
            raise InputError(path, "not a pool record (id, dataset, tags)", line) from None
    if not records:
        raise InputError(path, "the pool is empty")
    return Pool.from_records(records)


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


# --------------------------------------------------------------------------------------------- stage actions


def select(
    pool_path: str | Path,
    ablation: str,
    variant: str,
    size: int,
    out: str | Path,
    stats: str | Path,
    coverage: float | None = None,
    complexity: float | None = None,
    seed: int = 0,
    tol_coverage: float = 0.01,
    tol_complexity: float = 0.05,
) -> dict:
    """Build one variant of one ablation; write its records and statistics; return the statistics.

    complexity, diversity: :func:`constrained` with both targets; size: :func:`complexity_first`;
    random: :func:`uniform_random`.
    """
    if ablation not in ABLATIONS:
        raise InstagError(f"unknown ablation '{ablation}' (known: {', '.join(ABLATIONS)})")
    pool = load_pool(pool_path)
    targets: dict = {"size": size}
    info: dict = {}
    if ablation in ("complexity", "diversity"):
        if coverage is None or complexity is None:
            raise InstagError(f"ablation '{ablation}' needs both a coverage and a complexity target")
        targets.update(coverage=coverage, avg_tags_per_query=complexity)
        selection, info = constrained(pool, size, coverage, complexity, seed, tol_coverage, tol_complexity)
        method = "constrained"
    elif ablation == "size":
        selection, info = complexity_first(pool, size, seed)
        method = "complexity_first"
    else:
        selection = uniform_random(pool, size, seed)
        method = "uniform_random"
    m = pool.measure(selection)
    result = {
        "ablation": ablation,
        "variant": variant,
        "method": method,
        "seed": seed,
        "target": targets,
        "tolerance": {"coverage": tol_coverage, "avg_tags_per_query": tol_complexity}
        if ablation in ("complexity", "diversity")
        else None,
        **{k: m[k] for k in ("size", "tags_covered", "coverage", "avg_tags_per_query", "composition")},
        "pool": {"queries": pool.size, "tags": pool.n_tags},
        "facts": info,
    }
    with atomic_write(out) as fh:
        for i in selection:
            fh.write(
                dumps(
                    {
                        "id": pool.ids[i],
                        "dataset": pool.dataset_names[pool.dataset_codes[i]],
                        "tags": [pool.tag_names[t] for t in pool.tags_of(i)],
                    }
                )
                + "\n"
            )
    write_json(stats, result)
    log.info(
        "%s/%s: %d queries, coverage %.4f, %.3f tags per query",
        ablation,
        variant,
        m["size"],
        m["coverage"],
        m["avg_tags_per_query"],
    )
    return result


def _target_text(s: dict) -> str:
    t = s["target"]
    if s["ablation"] == "complexity":
        return f"tags={t['avg_tags_per_query']:g} cov={t['coverage']:g}"
    if s["ablation"] == "diversity":
        return f"cov={t['coverage']:g} tags={t['avg_tags_per_query']:g}"
    return f"n={t['size']}"


def summarize(stats_files: Sequence[str | Path], out: str | Path) -> list[dict]:
    """Gather per-variant statistics into samples.tsv: one row per variant, ablations in a fixed order."""
    stats = [read_json(p) for p in stats_files]
    stats.sort(
        key=lambda s: (
            ABLATIONS.index(s["ablation"]),
            s["target"].get("avg_tags_per_query", 0),
            s["target"].get("coverage", 0),
            s["target"]["size"],
            s["variant"],
        )
    )
    datasets: list[str] = []
    for s in stats:
        datasets.extend(d for d in s["composition"] if d not in datasets)
    rows = []
    for s in stats:
        t, tol = s["target"], s["tolerance"] or {}
        row = {
            "ablation": s["ablation"],
            "variant": s["variant"],
            "method": s["method"],
            "target": _target_text(s),
            "target_size": t["size"],
            "target_coverage": t.get("coverage", ""),
            "target_avg_tags": t.get("avg_tags_per_query", ""),
            "tol_coverage": tol.get("coverage", ""),
            "tol_avg_tags": tol.get("avg_tags_per_query", ""),
            "size": s["size"],
            "tags_covered": s["tags_covered"],
            "pool_tags": s["pool"]["tags"],
            "coverage": round(s["coverage"], 6),
            "avg_tags_per_query": round(s["avg_tags_per_query"], 6),
            "seed": s["seed"],
        }
        for d in datasets:
            row[f"n_{d}"] = s["composition"].get(d, 0)
        rows.append(row)
    base = ["ablation", "variant", "method", "target", "target_size", "target_coverage", "target_avg_tags"]
    base += ["tol_coverage", "tol_avg_tags", "size", "tags_covered", "pool_tags", "coverage", "avg_tags_per_query"]
    write_tsv(out, rows, base + ["seed"] + [f"n_{d}" for d in datasets])
    return rows


#: Marker and colour per ablation in the figure.
_STYLE = {
    "complexity": ("o", "tab:blue"),
    "diversity": ("s", "tab:orange"),
    "size": ("^", "tab:green"),
    "random": ("x", "tab:gray"),
}


def plot(table: str | Path, png: str | Path, pdf: str | Path) -> dict:
    """Every variant of samples.tsv in the coverage x complexity plane (PNG and PDF, byte-stable)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_tsv(table)
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    for ablation in ABLATIONS:
        sub = [r for r in rows if r["ablation"] == ablation]
        if not sub:
            continue
        x = [100 * float(r["coverage"]) for r in sub]
        y = [float(r["avg_tags_per_query"]) for r in sub]
        marker, colour = _STYLE[ablation]
        ax.scatter(x, y, marker=marker, color=colour, label=f"{ablation} ({len(sub)})", zorder=3)
        for r, xi, yi in zip(sub, x, y, strict=True):
            ax.annotate(r["variant"], (xi, yi), textcoords="offset points", xytext=(3, 3), fontsize=6, color=colour)
    targets = [r for r in rows if r["target_coverage"] and r["target_avg_tags"]]
    if targets:
        ax.scatter(
            [100 * float(r["target_coverage"]) for r in targets],
            [float(r["target_avg_tags"]) for r in targets],
            marker="+",
            s=60,
            color="black",
            linewidths=0.8,
            label="sweep targets",
            zorder=4,
        )
    ax.set_xlabel("tag coverage of the pool's tag set (%)")
    ax.set_ylabel("average tags per query")
    ax.set_title("Sampled sets: diversity (coverage) vs complexity (tags per query)")
    ax.grid(True, alpha=0.3)
    if rows:
        ax.legend(fontsize=8)
    fig.tight_layout()
    for path, meta in ((png, {"Software": None}), (pdf, {"CreationDate": None, "Producer": None})):
        with atomic_write(path, "wb") as fh:
            fig.savefig(fh, format=Path(path).suffix.lstrip("."), dpi=150, metadata=meta)
    plt.close(fig)
    return {"variants": len(rows), "png": str(png), "pdf": str(pdf)}


# --------------------------------------------------------------------------------------------- CLI


def add_cli(sub) -> None:
    p = sub.add_parser(
        "sampling",
        help="complexity-first diverse sampling and the decoupled ablations",
        description="Build the pool from normalized tags, select samples (Algorithm 1, the "
        "complexity/diversity sweeps, sizes, random baselines), tabulate and plot.",
    )
    acts = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    a = acts.add_parser(
        "pool",
        help="gather the pool from normalized tags",
        description="Keep the tagged records of the pool datasets; write pool.jsonl, its "
        "statistics and pool.tsv (beside the paper's 306,044 / 6,398 / 4.48).",
    )
    a.add_argument("--tags", required=True, help="normalized.jsonl (id, dataset, tags[, status])")
    a.add_argument("--datasets", nargs="*", default=[], help="pool datasets (default: every dataset in --tags)")
    a.add_argument("--out", required=True, help="pool JSONL to write")
    a.add_argument("--stats", required=True, help="pool statistics JSON to write")
    a.add_argument("--table", required=True, help="pool.tsv to write")
    a.set_defaults(func=lambda args: build_pool(args.tags, args.out, args.stats, args.table, args.datasets))

    s = acts.add_parser(
        "select",
        help="build one variant of one ablation",
        description="complexity/diversity: cover + fill to the coverage and tags-per-query "
        "targets (fails, naming what is reachable, when off by more than the "
        "tolerance); size: Algorithm 1; random: uniform baseline.",
    )
    s.add_argument("--pool", required=True, help="pool.jsonl from 'instag sampling pool'")
    s.add_argument("--ablation", required=True, choices=ABLATIONS)
    s.add_argument("--variant", required=True, help="variant name (recorded in the statistics)")
    s.add_argument("--size", type=int, required=True, help="number of queries")
    s.add_argument("--coverage", type=float, help="target coverage of the pool's tags (complexity, diversity)")
    s.add_argument("--complexity", type=float, help="target mean tags per query (complexity, diversity)")
    s.add_argument("--seed", type=int, default=0, help="seed of tie-breaking and random draws (default 0)")
    s.add_argument("--tol-coverage", type=float, default=0.01, help="allowed |coverage - target| (default 0.01)")
    s.add_argument(
        "--tol-complexity", type=float, default=0.05, help="allowed |tags per query - target| (default 0.05)"
    )
    s.add_argument("--out", required=True, help="sample JSONL to write")
    s.add_argument("--stats", required=True, help="statistics JSON to write")
    s.set_defaults(
        func=lambda args: select(
            args.pool,
            args.ablation,
            args.variant,
            args.size,
            args.out,
            args.stats,
            coverage=args.coverage,
            complexity=args.complexity,
            seed=args.seed,
            tol_coverage=args.tol_coverage,
            tol_complexity=args.tol_complexity,
        )
    )

    m = acts.add_parser("summarize", help="gather variant statistics into samples.tsv")
    m.add_argument("stats", nargs="*", help="statistics JSON files from 'instag sampling select'")
    m.add_argument("--out", required=True, help="samples.tsv to write")
    m.set_defaults(func=lambda args: {"variants": len(summarize(args.stats, args.out))})

    f = acts.add_parser("plot", help="coverage x complexity figure from samples.tsv")
    f.add_argument("--table", required=True, help="samples.tsv")
    f.add_argument("--png", required=True, help="PNG to write")
    f.add_argument("--pdf", required=True, help="PDF to write")
    f.set_defaults(func=lambda args: plot(args.table, args.png, args.pdf))
