"""Tag normalization (paper.md §2): frequency filter, rule aggregation, semantic aggregation, association.

The stage runs as separate steps, each with its own cached output so that changing one step's parameters
reruns only that step and the ones after it::

    collect      tagging shards -> results/normalize/raw.jsonl (one line per record, raw tags per query)
    frequency    -> results/normalize/frequency.json    (alpha, kept/dropped tags)
    lexical      -> results/normalize/lexical.json      (stem-key groups, display names)
    semantic     -> results/normalize/semantic.json     (embedding clusters)
    association  -> results/normalize/association.json  (recursive FP-Growth rule merges)
    finalize     -> results/normalize/normalized.jsonl, results/tables/tag_mapping.tsv,
                    results/tables/normalization_steps.tsv

Each step file holds ``mapping`` (every tag the step saw -> its new name, or null when dropped) plus the
step's statistics. A step reads the raw pool and the earlier step files and replays their mappings, so the
steps stay independent files and the chain is traceable: ``tag_mapping.tsv`` lists every raw tag with its
count, its name after every step, its canonical tag (or none), and the step that merged or dropped it.

``results/normalize/normalized.jsonl`` has one line per record in the pool's order (config dataset order, then
record order)::

    {"id", "dataset", "tags": [sorted canonical tags], "queries": [[sorted tags] | null, ...], "status"}

``tags`` is the record's (session's) tag set, the union of its queries' tags (paper.md A2); ``status`` is
"untagged" when every query of the record failed tagging (then ``tags`` is empty), else "ok".
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io import atomic_write, dumps, read_json, write_json, write_tsv
from ..records import NORMALIZED
from .actions import STEPS, replay, run_step
from .pool import TagPool, collect, load_pool

log = logging.getLogger(__name__)

#: The paper's tag counts after each step (paper.md §2.2); the count after association is not reported.
PAPER_COUNTS = {
    "raw": ">12K (arXiv §3.1) / >100K unique (secondary sources)",
    "frequency": "8541",
    "lexical": "7157",
    "semantic": "6587",
    "association": "not reported (1,772 rules; final vocabulary 6.6K)",
}


def _compose(step_results: Sequence[dict], raw_names: Sequence[str]) -> list[dict]:
    """Per raw tag: its name after each step (None once dropped) and the step that merged or dropped it."""
    rows = []
    for name in raw_names:
        cur: str | None = name
        row = {"raw_tag": name}
        changed_by = ""
        for res in step_results:
            if cur is not None:
                nxt = res["mapping"].get(cur)
                if nxt is None and cur not in res["mapping"]:
                    raise KeyError(f"step '{res['step']}' has no mapping for tag '{cur}'")
                if nxt != cur and not changed_by:
                    changed_by = res["step"]
                cur = nxt
            row[f"after_{res['step']}"] = cur
        row["canonical"] = cur
        row["status"] = "dropped" if cur is None else ("merged" if changed_by else "kept")
        row["step"] = changed_by
        rows.append(row)
    return rows


def finalize(
    pool_path: str | Path,
    step_files: Sequence[str | Path],
    normalized_out: str | Path,
    mapping_out: str | Path,
    table_out: str | Path,
    *,
    summary_out: str | Path | None = None,
) -> dict:
    """Write the normalized records, the raw -> canonical mapping table and the per-step count table."""
    if len(step_files) != len(STEPS):
        raise InputError(normalized_out, f"finalize needs the files of {list(STEPS)}")
    results = [read_json(p) for p in step_files]
    for path, res, want in zip(step_files, results, STEPS, strict=False):
        if res.get("step") != want:
            raise InputError(path, f"expected the '{want}' step file, got '{res.get('step')}'")
    raw = load_pool(pool_path)
    final = raw
    for path, res in zip(step_files, results, strict=False):
        try:
            final = final.relabel(res["mapping"])
        except ValueError as exc:
            raise InputError(path, f"the mapping does not fit the pool ({exc})") from None

    # traceability: every raw tag, its count, its name after each step, its canonical tag
    rows = _compose(results, raw.names)
    counts = raw.counts().tolist()
    for row, c in zip(rows, counts, strict=False):
        row["count"] = c
    rows.sort(key=lambda r: (-r["count"], r["raw_tag"]))
    columns = ["raw_tag", "count", "canonical", "status", "step"] + [f"after_{s}" for s in STEPS]
    write_tsv(mapping_out, [{k: ("" if v is None else v) for k, v in r.items()} for r in rows], columns)

    # normalized records, one per record, in the pool's order
    n, untagged, empty = _write_normalized(final, normalized_out)

    # counts after every step, the paper's side by side
    table = [
        {
            "step": "raw",
            "tags": raw.n_tags,
            "paper_tags": PAPER_COUNTS["raw"],
            "parameters": f"{raw.n_tagged} tagged queries, {raw.n_queries - raw.n_tagged} failed",
        }
    ]
    for res in results:
        table.append(
            {
                "step": res["step"],
                "tags": res["tags_out"],
                "paper_tags": PAPER_COUNTS[res["step"]],
                "parameters": _describe(res),
            }
        )
    write_tsv(table_out, table, ["step", "tags", "paper_tags", "parameters"])
    summary = {
        "records": n,
        "records_untagged": untagged,
        "records_without_tags_after_normalization": empty,
        "queries": raw.n_queries,
        "queries_tagged": raw.n_tagged,
        "raw_tags": raw.n_tags,
        "tags_after": {res["step"]: res["tags_out"] for res in results},
        "dropped_raw_tags": sum(r["status"] == "dropped" for r in rows),
        "merged_raw_tags": sum(r["status"] == "merged" for r in rows),
    }
    if summary_out:
        write_json(summary_out, summary)
    log.info("normalized %d records; tags: %s", n, summary["tags_after"])
    return summary


_NEEDS_ESCAPE = re.compile(r'[\x00-\x1f"\\\ud800-\udfff]')


def _json_strings(values: list) -> list[str]:
    """``io.dumps`` of each value; plain strings (nothing to escape) are quoted without the encoder."""
    if all(type(v) is str for v in values) and not _NEEDS_ESCAPE.search("".join(values)):
        return [f'"{v}"' for v in values]
    memo: dict = {}
    return [memo[v] if v in memo else memo.setdefault(v, dumps(v)) for v in values]


def _write_normalized(pool: TagPool, path: str | Path) -> tuple[int, int, int]:
    """Write ``normalized.jsonl`` (the module docstring's format); return (records, untagged, empty).

    Vectorized: tags are ranked alphabetically once, every query's and record's tag list is sorted with one
    numpy sort over all entries, and each line is joined from pre-encoded JSON strings, so the text is what
    ``io.dumps`` writes for the record dict, at a million queries in seconds.
    """
    names = pool.names
    v = max(len(names), 1)
    order = sorted(range(len(names)), key=names.__getitem__)
    rank = np.empty(len(names), dtype=np.int64)
    rank[order] = np.arange(len(names), dtype=np.int64)
    encoded = np.asarray([dumps(names[i]) for i in order] or [""], dtype=object)
    q_rows = pool.query_rows()
    q_sorted = np.sort(q_rows * v + rank[pool.indices]) % v  # per query, its tags' ranks ascending
    flat = encoded[q_sorted].tolist()
    bounds = pool.indptr.tolist()
    ok = pool.query_ok.tolist()
    qtext = [
        "[" + ",".join(flat[a:b]) + "]" if good else "null"
        for a, b, good in zip(bounds[:-1], bounds[1:], ok, strict=True)
    ]
    # record tag sets: the union of the record's queries' tags, sorted (ranks are alphabetical)
    rec_of_query = np.repeat(np.arange(pool.n_records, dtype=np.int64), np.diff(pool.record_ptr))
    keys = np.unique(rec_of_query[q_rows] * v + rank[pool.indices])
    rec_ids, rec_ranks = np.divmod(keys, v)
    rec_ptr = np.zeros(pool.n_records + 1, dtype=np.int64)
    np.cumsum(np.bincount(rec_ids, minlength=pool.n_records), out=rec_ptr[1:])
    rflat = encoded[rec_ranks].tolist()
    rb = rec_ptr.tolist()
    qb = pool.record_ptr.tolist()
    ok_per_record = np.bincount(rec_of_query[pool.query_ok], minlength=pool.n_records).tolist()
    ids = _json_strings(pool.record_ids)
    datasets = _json_strings(pool.record_datasets)
    untagged = empty = 0
    with atomic_write(path) as fh:
        for r in range(pool.n_records):
            a, b = qb[r], qb[r + 1]
            has_ok = ok_per_record[r] > 0
            status = "ok" if has_ok else "untagged"
            n_tags = rb[r + 1] - rb[r]
            untagged += not has_ok
            empty += has_ok and n_tags == 0
            fh.write(
                f'{{"id":{ids[r]},"dataset":{datasets[r]},'
                f'"tags":[{",".join(rflat[rb[r] : rb[r + 1]])}],"queries":[{",".join(qtext[a:b])}],'
                f'"status":"{status}"}}\n'
            )
    return pool.n_records, untagged, empty


def _describe(res: dict) -> str:
    step = res["step"]
    if step == "frequency":
        p = res["params"]
        how = (
            f"scaled from {p['alpha']} by {res['tagged_queries']}/{p['reference_queries']}"
            if p["scale"]
            else "as given"
        )
        return f"alpha={res['alpha_used']} ({how}; paper: 20)"
    if step == "lexical":
        return f"lowercase, non-alphanumeric to space, {res['params']['stemmer']}"
    if step == "semantic":
        p = res["params"]
        return (
            f"model={p['model']}, DBSCAN eps={p['eps']} (cosine distance), min_samples={p['min_samples']}; "
            f"{res['clusters_merged']} clusters merged (paper: PhraseBERT, t=0.05)"
        )
    p = res["params"]
    return (
        f"min_support={res['min_support_used']} queries, min_confidence={p['min_confidence']}, "
        f"engine={p['engine']}; {res['rules_first_round']} rules in round 1 (paper: 1,772), "
        f"{res['rounds_with_merges']} rounds with merges, converged={res['converged']}"
    )


def read_normalized(path: str | Path):
    """Iterate the records of ``results/normalize/normalized.jsonl`` (checked: instag.records.NORMALIZED)."""
    return NORMALIZED.rows(path)


__all__ = ["STEPS", "TagPool", "collect", "finalize", "load_pool", "read_normalized", "replay", "run_step"]
