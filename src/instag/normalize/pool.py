"""The tagged pool in memory (CSR arrays over a tag vocabulary) and its collection from the tagging shards.

Every normalization step sees the pool as queries x tags: ``indices[indptr[i]:indptr[i+1]]`` are the tag ids
of query ``i`` (sorted, no repeats), ``names[id]`` the tag strings. A step returns a mapping from the names it
saw to new names (or ``None`` for dropped), and :meth:`TagPool.relabel` applies it; the per-query structure
and the record (session) structure stay as they are. Tag counts are numbers of queries carrying the tag.

On disk the collected pool is ``results/normalize/raw.jsonl``, one line per record in a stable order
(config dataset order, then record order)::

    {"id": str, "dataset": str, "queries": [[raw tag, ...] | null, ...]}

``null`` marks a query whose tagging failed; raw tags are the tagger's strings after ``strip()`` (paper.md
A3), repeats within a query removed.
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError
from ..io import gc_paused, iter_jsonl_batches, write_json, write_jsonl
from ..records import RECORD, TAG_LINE

log = logging.getLogger(__name__)


@dataclass
class TagPool:
    """Queries x tags, plus which queries belong to which record (session)."""

    names: list[str]
    indptr: np.ndarray  # int64, n_queries + 1
    indices: np.ndarray  # int32 tag ids, sorted and unique within each query
    query_ok: np.ndarray  # bool per query: False where tagging failed (the query has no tags)
    record_ptr: np.ndarray  # int64, n_records + 1: queries of record r are record_ptr[r]:record_ptr[r+1]
    record_ids: list[str] = field(default_factory=list)
    record_datasets: list[str] = field(default_factory=list)

    @property
    def n_queries(self) -> int:
        return len(self.indptr) - 1

    @property
    def n_records(self) -> int:
        return len(self.record_ptr) - 1

    @property
    def n_tags(self) -> int:
        return len(self.names)

    @property
    def n_tagged(self) -> int:
        """Queries whose tagging succeeded (the ``n`` of the scaled frequency threshold)."""
        return int(self.query_ok.sum())

    def counts(self) -> np.ndarray:
        """Per tag id, the number of queries that carry it."""
        return np.bincount(self.indices, minlength=self.n_tags)

    def count_map(self) -> dict[str, int]:
        return dict(zip(self.names, self.counts().tolist(), strict=False))

    def query_rows(self) -> np.ndarray:
        """The query index of every entry of ``indices``."""
        return np.repeat(np.arange(self.n_queries, dtype=np.int64), np.diff(self.indptr))

    def csr(self):
        """The pool as a scipy CSR boolean matrix (queries x tags)."""
        import scipy.sparse as sp

        data = np.ones(self.indices.size, dtype=bool)
        return sp.csr_matrix((data, self.indices, self.indptr), shape=(self.n_queries, self.n_tags))

    def relabel(self, mapping: dict[str, str | None]) -> TagPool:
        """Apply a step's mapping (every current name -> new name or None); merge repeats within queries.

        New ids follow the order of first appearance of the new names in the current vocabulary order.
        """
        missing = [n for n in self.names if n not in mapping]
        if missing:
            raise ValueError(f"mapping lacks {len(missing)} tags, e.g. {missing[:3]}")
        new_names: list[str] = []
        new_id: dict[str, int] = {}
        table = np.full(self.n_tags, -1, dtype=np.int64)
        for i, name in enumerate(self.names):
            target = mapping[name]
            if target is None:
                continue
            j = new_id.get(target)
            if j is None:
                j = new_id[target] = len(new_names)
                new_names.append(target)
            table[i] = j
        rows = self.query_rows()
        mapped = table[self.indices]
        keep = mapped >= 0
        indptr, indices = _csr_from_pairs(rows[keep], mapped[keep], self.n_queries, max(len(new_names), 1))
        return TagPool(
            new_names, indptr, indices, self.query_ok, self.record_ptr, self.record_ids, self.record_datasets
        )

    def query_tags(self, q: int) -> list[str]:
        return [self.names[i] for i in self.indices[self.indptr[q] : self.indptr[q + 1]]]

    def record_tags(self, r: int) -> list[str]:
        """The record's (session's) tag set: the union of its queries' tags (paper.md A2), sorted."""
        a, b = self.record_ptr[r], self.record_ptr[r + 1]
        ids = np.unique(self.indices[self.indptr[a] : self.indptr[b]])
        return sorted(self.names[i] for i in ids)

    @classmethod
    def from_queries(
        cls,
        queries: Sequence[Sequence[str] | None],
        record_ptr: Sequence[int] | None = None,
        record_ids: Sequence[str] | None = None,
        record_datasets: Sequence[str] | None = None,
    ) -> TagPool:
        """Build from per-query tag lists (``None`` for a failed query); one record per query by default."""
        n = len(queries)
        ok = np.fromiter((q is not None for q in queries), dtype=bool, count=n)
        lengths = np.fromiter((len(q) if q is not None else 0 for q in queries), dtype=np.int64, count=n)
        flat = np.empty(int(lengths.sum()), dtype=object)
        flat[:] = list(itertools.chain.from_iterable(q for q in queries if q))
        codes, vocab = pd.factorize(flat)  # ids in order of first appearance
        rows = np.repeat(np.arange(n, dtype=np.int64), lengths)
        indptr, indices = _csr_from_pairs(rows, codes.astype(np.int64), n, max(len(vocab), 1))
        if record_ptr is None:
            record_ptr = np.arange(n + 1, dtype=np.int64)
            record_ids = record_ids or [str(i) for i in range(n)]
        record_ptr = np.asarray(record_ptr, dtype=np.int64)
        n_rec = len(record_ptr) - 1
        return cls(
            vocab.tolist(),
            indptr,
            indices,
            ok,
            record_ptr,
            list(record_ids or [str(i) for i in range(n_rec)]),
            list(record_datasets or [""] * n_rec),
        )


def _csr_from_pairs(rows: np.ndarray, cols: np.ndarray, n_rows: int, n_cols: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted, de-duplicated CSR (indptr, indices) from (row, col) pairs."""
    keys = np.sort(rows.astype(np.int64) * n_cols + cols.astype(np.int64))
    if keys.size:
        keys = keys[np.concatenate(([True], keys[1:] != keys[:-1]))]
    r, c = np.divmod(keys, n_cols)
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(r, minlength=n_rows), out=indptr[1:])
    return indptr, c.astype(np.int32)


# --------------------------------------------------------------------------------------------- collection


def _clean_tags(value, path, line, stats: Counter) -> list[str] | None:
    """The tag strings of one shard line: stripped, non-empty, de-duplicated; None if the line failed."""
    if value is None:
        return None
    if not isinstance(value, list):
        raise InputError(path, f"'tags' is {type(value).__name__}, expected a list or null", line)
    out: list[str] = []
    for item in value:
        tag = item.get("tag") if isinstance(item, dict) else item
        if not isinstance(tag, str):
            stats["tags_not_a_string"] += 1
            continue
        tag = " ".join(tag.split())  # strip, and fold inner runs of whitespace and newlines
        if not tag:
            stats["tags_empty"] += 1
            continue
        out.append(tag)
    n = len(out)
    out = list(dict.fromkeys(out))
    stats["tags_repeated_in_query"] += n - len(out)
    return out


def read_shards(shards: Iterable[str | Path]) -> tuple[dict[str, dict[int, list[str] | None]], dict, Counter]:
    """Read tagging shard lines into ``{record id: {query index: tags or None}}``, plus record datasets."""
    by_id: dict[str, dict[int, list[str] | None]] = {}
    datasets: dict[str, str] = {}
    stats: Counter = Counter()
    for path in shards:
        for line, obj in TAG_LINE.read(path):
            rid, q = obj["id"], obj["turn"]
            ok = obj.get("status", "ok") == "ok" and obj.get("tags") is not None
            tags = _clean_tags(obj.get("tags"), path, line, stats) if ok else None
            stats["lines"] += 1
            stats["queries_ok" if ok else "queries_failed"] += 1
            slot = by_id.setdefault(rid, {})
            if q in slot:
                stats["duplicate_lines"] += 1  # a re-run shard line: the first one read is kept
                continue
            slot[q] = tags
            datasets.setdefault(rid, str(obj.get("dataset", "")))
    return by_id, datasets, stats


def collect(
    shards: Sequence[str | Path],
    out: str | Path,
    *,
    records: Sequence[str | Path] = (),
    stats_out: str | Path | None = None,
) -> dict:
    """Gather the tagging shards into one pool file, one line per record in a stable order.

    With ``records`` (the ingested ``results/data/<dataset>.jsonl`` files, in config order) the output follows
    their order, and every record must have one tagging line per user turn: a missing line or a line for an
    unknown record raises :class:`InputError`. Without it, records follow their first appearance in the shards.
    Records whose queries all failed are kept (written with only ``null`` queries) and counted.
    """
    from ..records import queries as record_queries

    by_id, datasets, stats = read_shards(shards)
    lines: list[dict] = []
    if records:
        seen: set[str] = set()
        for path in records:
            for line, rec in RECORD.read(path):
                rid = rec["id"]
                seen.add(rid)
                n_q = len(record_queries(rec))
                got = by_id.get(rid, {})
                missing = [q for q in range(n_q) if q not in got]
                if missing:
                    raise InputError(
                        path,
                        f"record {rid} has {n_q} queries but no tagging line for query {missing[0]} "
                        f"({len(missing)} missing); the tagging shards are incomplete",
                        line,
                    )
                extra = [q for q in got if q >= n_q]
                if extra:
                    raise InputError(
                        path, f"record {rid} has {n_q} queries but a tagging line for query {extra[0]}", line
                    )
                lines.append({"id": rid, "dataset": rec["dataset"], "queries": [got[q] for q in range(n_q)]})
        unknown = [rid for rid in by_id if rid not in seen]
        if unknown:
            raise InputError(
                shards[0] if shards else out,
                f"{len(unknown)} tagged record ids are in no records file, e.g. {unknown[0]} (stale shards?)",
            )
    else:
        for rid, got in by_id.items():
            n_q = max(got) + 1
            lines.append({"id": rid, "dataset": datasets[rid], "queries": [got.get(q) for q in range(n_q)]})
            stats["queries_missing"] += n_q - len(got)
    untagged = sum(all(q is None for q in rec["queries"]) for rec in lines)
    write_jsonl(out, lines)
    summary = {
        "records": len(lines),
        "records_untagged": untagged,
        "queries": sum(len(rec["queries"]) for rec in lines),
        "distinct_raw_tags": len({t for rec in lines for q in rec["queries"] if q for t in q}),
        **{k: stats[k] for k in sorted(stats)},
    }
    if stats_out:
        write_json(stats_out, summary)
    log.info("collected %d records (%d untagged), %d queries", len(lines), untagged, summary["queries"])
    return summary


def load_pool(path: str | Path) -> TagPool:
    """Read a collected pool file (``raw.jsonl``) into a :class:`TagPool` (same pool as ``from_queries``).

    Streams: each batch of lines is turned into tag ids against one growing vocabulary (first-seen order)
    before the next is decoded, so a million-query pool never holds its tag strings as per-query lists.
    """
    with gc_paused():
        return _load_pool(path)


def _load_pool(path: str | Path) -> TagPool:
    vocab: dict[str, int] = {}
    setdefault = vocab.setdefault
    chunks: list[np.ndarray] = []
    lengths: list[int] = []
    ok: list[bool] = []
    ptr = [0]
    ids: list[str] = []
    datasets: list[str] = []
    for batch in iter_jsonl_batches(path):
        flat: list[str] = []
        for line, rec in batch:
            if not isinstance(rec, dict) or not isinstance(rec.get("queries"), list):
                raise InputError(path, "a pool line needs a 'queries' list", line)
            for q in rec["queries"]:
                if q is None:
                    ok.append(False)
                    lengths.append(0)
                else:
                    ok.append(True)
                    lengths.append(len(q))
                    flat.extend(q)
            ptr.append(len(ok))
            ids.append(rec["id"])
            datasets.append(rec.get("dataset", ""))
        chunks.append(np.fromiter((setdefault(t, len(vocab)) for t in flat), dtype=np.int64, count=len(flat)))
    n = len(ok)
    cols = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)
    rows = np.repeat(np.arange(n, dtype=np.int64), np.asarray(lengths, dtype=np.int64))
    indptr, indices = _csr_from_pairs(rows, cols, n, max(len(vocab), 1))
    return TagPool(
        list(vocab), indptr, indices, np.asarray(ok, dtype=bool), np.asarray(ptr, dtype=np.int64), ids, datasets
    )


def pool_from_lists(queries: Sequence[Sequence[str]], dataset: str = "synthetic") -> TagPool:
    """A pool with one record per query (synthetic pools, tests)."""
    n = len(queries)
    return TagPool.from_queries(queries, None, [f"{dataset}-{i}" for i in range(n)], [dataset] * n)
