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

from .actions import plot, select, summarize
from .algorithms import complexity_first, complexity_reach, constrained, ranked_order, uniform_random
from .plan import Variant, plan_variants
from .pool import (
    ABLATIONS,
    PAPER_POOL,
    PAPER_SAMPLE,
    UNTAGGED,
    Pool,
    UnreachableTarget,
    build_pool,
    load_pool,
    read_tag_records,
)

__all__ = [
    "ABLATIONS",
    "PAPER_POOL",
    "PAPER_SAMPLE",
    "UNTAGGED",
    "Pool",
    "UnreachableTarget",
    "Variant",
    "build_pool",
    "complexity_first",
    "complexity_reach",
    "constrained",
    "load_pool",
    "plan_variants",
    "plot",
    "ranked_order",
    "read_tag_records",
    "select",
    "summarize",
    "uniform_random",
]
