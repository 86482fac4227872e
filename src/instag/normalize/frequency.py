"""Step 1, frequency filtering: drop long-tail tags that occur fewer than alpha times (paper.md §2.2, A3).

Counts are numbers of tagged queries carrying the raw tag string (after ``strip()``), over the whole pool.
The paper's alpha = 20 was set on its full annotated set (nearly 500K instructions [MS]); for a smaller run
alpha is scaled in proportion to the number of tagged queries (ambiguity A3, our choice):
``alpha' = max(alpha_min, round(alpha * n / reference_queries))``. Set ``alpha`` with ``scale=False`` to use
it as given.
"""

from __future__ import annotations

import logging

from .pool import TagPool

log = logging.getLogger(__name__)

PAPER_ALPHA = 20
#: Tagged instructions behind the paper's alpha: "nearly 500K" (paper.md §1.4, [MS]).
PAPER_REFERENCE_QUERIES = 500_000


def scaled_alpha(
    n_queries: int, alpha: int = PAPER_ALPHA, reference_queries: int = PAPER_REFERENCE_QUERIES, alpha_min: int = 2
) -> int:
    """alpha' = max(alpha_min, round(alpha * n / N)) (paper.md A3)."""
    if reference_queries <= 0:
        raise ValueError("reference_queries must be positive")
    return max(alpha_min, int(round(alpha * n_queries / reference_queries)))


def filter_rare(
    pool: TagPool,
    alpha: int = PAPER_ALPHA,
    *,
    scale: bool = True,
    reference_queries: int = PAPER_REFERENCE_QUERIES,
    alpha_min: int = 2,
) -> dict:
    """Map every tag with count >= alpha' to itself and every rarer tag to None; return the step result."""
    used = scaled_alpha(pool.n_tagged, alpha, reference_queries, alpha_min) if scale else int(alpha)
    counts = pool.counts()
    mapping = {name: (name if c >= used else None) for name, c in zip(pool.names, counts.tolist(), strict=False)}
    kept = sum(v is not None for v in mapping.values())
    log.info("frequency: alpha=%d (%s), %d of %d tags kept", used, "scaled" if scale else "as given", kept, pool.n_tags)
    return {
        "step": "frequency",
        "params": {"alpha": alpha, "scale": scale, "reference_queries": reference_queries, "alpha_min": alpha_min},
        "alpha_used": used,
        "tagged_queries": pool.n_tagged,
        "tags_in": pool.n_tags,
        "tags_out": kept,
        "tag_occurrences_dropped": int(counts[counts < used].sum()),
        "mapping": mapping,
    }
