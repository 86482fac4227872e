"""Synthetic tagged pools at paper scale, for benchmarks and tests (no LLM, no data files).

The paper's pool has ~300K queries, >12K raw tag strings, 6.4K-6.6K normalized tags and ~4.5 tags per
query, with a long tail of queries carrying 20+ tags (paper.md §1.5, §2.2, §5.1). Real tagged data at that
scale does not exist here, so the normalization and sampling benchmarks draw pools from this module:

- :func:`canonical_pool` gives already-normalized tag sets (what ``results/normalize/normalized.jsonl`` holds),
  for the sampling stage: Zipf-distributed tag frequencies, a skewed number of tags per query, and tag
  pairs that co-occur.
- :func:`synthetic_pool` gives raw tag strings (what the tagging stage produces): the same structure, plus
  the noise the normalization steps target (paper.md §2.1): spelling, case and punctuation variants
  (lexical noise), re-ordered phrasings (near-synonyms for the semantic step), and tags that almost always
  co-occur with a partner (spurious correlations for the association step).

Everything is drawn with numpy from one seed; 300K queries take about a second. Both functions return
``list[list[str]]`` (one tag list per query, no duplicates within a query); :func:`pool_arrays` gives the
underlying CSR arrays for callers that want to stay in numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Words that tag names are built from: "<modifier> <head>" and "<modifier> <modifier> <head>". Chosen to
# look like the tags ChatGPT emits (paper Figure 1) and to stay distinct after Porter stemming.
MODIFIERS = (
    "python java javascript sql html css rust golang kotlin swift haskell matlab excel linux docker cloud "
    "network database web mobile game data statistical financial legal medical historical scientific "
    "creative technical academic business marketing travel cooking fitness music movie poetry story "
    "language grammar translation math algebra geometry calculus probability physics chemistry biology "
    "economic political social cultural environmental ethical philosophical psychological educational "
    "career personal health nutrition sports fashion art design product customer email resume interview "
    "religious military agricultural industrial urban space ocean weather energy security privacy crypto "
    "blockchain neural robotic quantum genetic literary visual audio video image text code api frontend "
    "backend server client file memory string array graph tree"
).split()
HEADS = (
    "analysis writing generation explanation comparison summary recommendation question request advice "
    "planning optimization debugging implementation conversion calculation classification extraction "
    "formatting editing review evaluation prediction simulation visualization modeling design tutorial "
    "instruction definition description example inquiry discussion argument critique opinion research "
    "report proposal strategy management development testing deployment configuration installation "
    "troubleshooting migration integration validation verification encryption compression parsing "
    "sorting searching scheduling budgeting negotiation persuasion storytelling brainstorming "
    "outline essay poem letter dialogue script lyrics slogan headline caption title abstract "
    "problem solving reasoning proof derivation estimation measurement interpretation identification "
    "correction improvement refactoring documentation specification translation"
).split()
HEADS = list(dict.fromkeys(HEADS))  # "translation" is in both lists on purpose; keep heads unique


@dataclass
class PoolArrays:
    """A pool as CSR arrays: the tags of query ``i`` are ``indices[indptr[i]:indptr[i + 1]]`` (sorted)."""

    indptr: np.ndarray  # int64, n_queries + 1
    indices: np.ndarray  # int32 tag ids
    names: list[str]  # tag id -> name

    @property
    def n_queries(self) -> int:
        return len(self.indptr) - 1

    def to_lists(self) -> list[list[str]]:
        names = np.asarray(self.names, dtype=object)
        flat = names[self.indices].tolist()
        bounds = self.indptr.tolist()
        return [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=False)]


def tag_names(n_tags: int, seed: int = 0) -> list[str]:
    """``n_tags`` distinct tag names, most frequent first (two-word names first, then three-word ones)."""
    rng = np.random.default_rng(seed + 7919)
    n_mod, n_head = len(MODIFIERS), len(HEADS)
    two = [f"{m} {h}" for m in MODIFIERS for h in HEADS]
    rng.shuffle(two)
    if n_tags <= len(two):
        return two[:n_tags]
    # three-word names, drawn without repeats from the (modifier, modifier, head) grid
    need = n_tags - len(two)
    total = n_mod * n_mod * n_head
    if need > total - n_mod * n_head:
        raise ValueError(f"n_tags={n_tags} exceeds the {len(two) + total - n_mod * n_head} names available")
    picked: list[str] = []
    seen: set[int] = set()
    while len(picked) < need:
        for code in rng.integers(0, total, size=2 * (need - len(picked)) + 16).tolist():
            a, rest = divmod(code, n_mod * n_head)
            b, h = divmod(rest, n_head)
            if a == b or code in seen:
                continue
            seen.add(code)
            picked.append(f"{MODIFIERS[a]} {MODIFIERS[b]} {HEADS[h]}")
            if len(picked) == need:
                break
    return two + picked


def _zipf_probs(n: int, a: float) -> np.ndarray:
    p = np.arange(1, n + 1, dtype=np.float64) ** -a
    return p / p.sum()


def pool_arrays(
    n_queries: int,
    n_tags: int = 6400,
    seed: int = 0,
    *,
    zipf_a: float = 1.0,
    mean_tags: float = 4.5,
    max_tags: int = 40,
    dispersion: float = 2.0,
    pair_correlation: float = 0.1,
    pair_strength: float = 1.0,
    names: list[str] | None = None,
) -> PoolArrays:
    """Draw tag sets over ``n_tags`` tags (ids in Zipf order: id 0 is the most frequent).

    Tags per query: 1 + a negative binomial with mean ``mean_tags - 1`` and shape ``dispersion`` (a long right
    tail), capped at ``max_tags``. Tags are drawn from a Zipf law with exponent ``zipf_a``; repeats within a
    query are removed. A share ``pair_correlation`` of the tags (outside the 50 most frequent) each get a
    partner among the more frequent tags, added with probability ``pair_strength`` whenever the tag is drawn:
    with 1.0 these pairs are exactly the rules A -> B that the association step finds (confidence 1).
    """
    if n_queries < 0 or n_tags < 1:
        raise ValueError("n_queries must be >= 0 and n_tags >= 1")
    rng = np.random.default_rng(seed)
    extra = max(mean_tags - 1.0, 0.0)
    if extra > 0:
        k = 1 + rng.negative_binomial(dispersion, dispersion / (dispersion + extra), size=n_queries)
    else:
        k = np.ones(n_queries, dtype=np.int64)
    k = np.minimum(k, min(max_tags, n_tags)).astype(np.int64)
    rows = np.repeat(np.arange(n_queries, dtype=np.int64), k)
    cdf = np.cumsum(_zipf_probs(n_tags, zipf_a))
    tags = np.searchsorted(cdf, rng.random(rows.size) * cdf[-1]).astype(np.int64)
    np.minimum(tags, n_tags - 1, out=tags)

    # correlated pairs: tag A (less frequent) implies partner B (more frequent)
    partner = np.full(n_tags, -1, dtype=np.int64)
    lo = min(50, n_tags - 1)
    candidates = np.arange(lo, n_tags)
    n_pairs = int(round(pair_correlation * candidates.size))
    if n_pairs and lo > 0:
        a_ids = rng.choice(candidates, size=n_pairs, replace=False)
        # partner: a more frequent tag, log-uniform in rank below A; partners themselves imply nothing
        b_ids = np.floor(np.exp(rng.random(n_pairs) * np.log(a_ids + 1)) - 1).astype(np.int64)
        b_ids = np.minimum(b_ids, a_ids - 1)
        partner[a_ids] = b_ids
        partner[b_ids] = -1
        has = partner[tags] >= 0
        if pair_strength < 1.0:
            has &= rng.random(tags.size) < pair_strength
        rows = np.concatenate([rows, rows[has]])
        tags = np.concatenate([tags, partner[tags[has]]])

    keys = np.sort(rows * n_tags + tags)  # sorted by row, then tag
    keys = keys[np.concatenate(([True], keys[1:] != keys[:-1]))]  # drop repeats within a query
    rows, tags = np.divmod(keys, n_tags)
    indptr = np.zeros(n_queries + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_queries), out=indptr[1:])
    if names is None:
        names = tag_names(n_tags, seed)
    return PoolArrays(indptr=indptr, indices=tags.astype(np.int32), names=list(names))


def canonical_pool(
    n_queries: int,
    n_tags: int = 6400,
    seed: int = 0,
    *,
    zipf_a: float = 1.0,
    mean_tags: float = 4.5,
    max_tags: int = 40,
    pair_correlation: float = 0.1,
) -> list[list[str]]:
    """Already-normalized tag sets at paper scale (defaults: 6.4K tags, ~4.5 tags per query, up to 40).

    Each inner list is sorted and free of repeats, like the ``tags`` of ``results/normalize/normalized.jsonl``.
    Deterministic for a given seed.
    """
    arrays = pool_arrays(
        n_queries,
        n_tags,
        seed,
        zipf_a=zipf_a,
        mean_tags=mean_tags,
        max_tags=max_tags,
        pair_correlation=pair_correlation,
    )
    return [sorted(q) for q in arrays.to_lists()]


def variants_of(name: str) -> list[str]:
    """Raw spellings of one tag: case, punctuation, inflection (rule step) and word order (semantic step)."""
    words = name.split()
    title = " ".join(w.capitalize() for w in words)
    out = [
        title,  # "Python Debugging"
        "-".join(words),  # "python-debugging"
        name[:-1] if name.endswith("s") else name + "s",  # plural/singular: stems to the same key
        "_".join(words).upper(),  # "PYTHON_DEBUGGING"
        f"{title}.",  # trailing punctuation
        " ".join(words[-1:] + ["for"] + words[:-1]),  # "debugging for python": a near-synonym, not a stem match
    ]
    return out


def synthetic_pool(
    n_queries: int,
    n_tags: int = 12000,
    seed: int = 0,
    *,
    zipf_a: float = 1.0,
    mean_tags: float = 4.5,
    max_tags: int = 40,
    pair_correlation: float = 0.1,
    variant_rate: float = 0.15,
    variants_per_tag: int = 2,
) -> list[list[str]]:
    """Raw tag strings per query, as a tagger would emit them (defaults: ~12K base tags, paper scale).

    The structure is :func:`pool_arrays`'s; then each tag occurrence is, with probability ``variant_rate``,
    written in one of ``variants_per_tag`` alternative spellings of its tag (drawn per tag from
    :func:`variants_of`: Title Case, hyphens, plural, UPPER_SNAKE, trailing period, re-ordered words).
    So the number of distinct raw strings exceeds ``n_tags``; rule aggregation folds most variants back.
    Repeats within a query (after variant choice) are removed; order within a query is the tag-id order.
    """
    if not 0 <= variant_rate <= 1:
        raise ValueError("variant_rate must be in [0, 1]")
    arrays = pool_arrays(
        n_queries,
        n_tags,
        seed,
        zipf_a=zipf_a,
        mean_tags=mean_tags,
        max_tags=max_tags,
        pair_correlation=pair_correlation,
    )
    rng = np.random.default_rng(seed + 1)
    n_var = len(variants_of("a b"))
    variants_per_tag = max(0, min(variants_per_tag, n_var))
    # per tag: which variant forms it uses (a random subset of the forms)
    forms = np.argsort(rng.random((n_tags, n_var)), axis=1)[:, :variants_per_tag]
    # string table: id * (1 + variants_per_tag) + slot, slot 0 = the base name
    width = 1 + variants_per_tag
    table: list[str] = []
    for t, name in enumerate(arrays.names):
        vs = variants_of(name)
        table.append(name)
        table.extend(vs[j] for j in forms[t])
    slot = np.zeros(arrays.indices.size, dtype=np.int64)
    if variants_per_tag and variant_rate > 0:
        use = rng.random(slot.size) < variant_rate
        slot[use] = 1 + rng.integers(0, variants_per_tag, size=int(use.sum()))
    codes = arrays.indices.astype(np.int64) * width + slot
    table_arr = np.asarray(table, dtype=object)
    flat = table_arr[codes].tolist()
    bounds = arrays.indptr.tolist()
    out = []
    for a, b in zip(bounds[:-1], bounds[1:], strict=False):
        q = flat[a:b]
        out.append(list(dict.fromkeys(q)) if len(set(q)) != len(q) else q)
    return out


def as_tag_lines(pool: list[list[str]], dataset: str = "synthetic", queries_per_record: int = 1) -> list[dict]:
    """Tagging-stage lines (``results/tagging/<dataset>/shard-<k>.jsonl``) for a raw pool.

    With ``queries_per_record`` > 1, consecutive queries form one multi-turn record (ids ``<dataset>-<n>``).
    """
    lines = []
    for i, tags in enumerate(pool):
        rec, q = divmod(i, max(1, queries_per_record))
        lines.append(
            {
                "id": f"{dataset}-{rec:08d}",
                "dataset": dataset,
                "turn": q,
                "tags": [{"tag": t, "explanation": ""} for t in tags],
                "status": "ok",
                "error": None,
                "raw": None,
                "backend": "synthetic",
                "model": "synthetic",
            }
        )
    return lines
