"""Ingestion: read each configured SFT dataset into one uniform JSONL record format.

Record (one per line of ``results/data/<dataset>.jsonl``)::

    {"id": "<dataset>-<16 hex>", "dataset": str, "source_line": int, "source_id": str | null,
     "turns": [{"role": "user" | "assistant" | "system", "content": str}, ...]}

``id`` is a hash of the dataset name and the turns, so it is stable across runs and machines.
``source_line`` is the 1-based line where the record starts in the source file (JSON arrays included).

Which text is "the query": every user turn. The paper tags each query of a chat session on its own
(paper.md §1.3, ambiguity A2); :func:`queries` returns them in order.

Adding a format is one function decorated with ``@reader("name")`` that yields, per source row,
``(line, turns_or_rejection)``; validation, de-duplication, sampling and statistics are shared.
Rows that cannot be used go to ``<dataset>.rejected.jsonl`` with line, reason and the raw text's start.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import logging
import shutil
import statistics
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from ..errors import InputError
from ..io import read_json, write_json, write_tsv
from ..records import RECORD, REJECTED, has_visible_text, queries
from .readers import RAW_KEEP_CHARS, READERS, ROLE_MAP, Reject, Turns, iter_json_records, reader

log = logging.getLogger(__name__)

__all__ = [
    "READERS",
    "Reject",
    "ingest",
    "iter_json_records",
    "queries",
    "read_records",
    "reader",
    "record_id",
    "summarize",
    "validate_turns",
]

# --------------------------------------------------------------------------------------------- ingest


def record_id(dataset: str, turns: Turns) -> str:
    digest = hashlib.sha256(f"{dataset}\n{json.dumps(turns, ensure_ascii=False, sort_keys=True)}".encode())
    return f"{dataset}-{digest.hexdigest()[:16]}"


def validate_turns(turns: Turns, max_query_chars: int) -> tuple[Turns, Reject | None]:
    """Map roles to user/assistant/system and check the conversation; return it or why it was set aside."""
    if not turns:
        return turns, Reject("empty_conversation", "no turns")
    out = []
    for i, turn in enumerate(turns):
        role = ROLE_MAP.get(str(turn["role"]).strip().lower())
        if role is None:
            return turns, Reject("unknown_role", f"turn {i} has role '{turn['role']}'")
        if not turn["content"].strip():
            return turns, Reject("empty_turn", f"turn {i} ({role}) is empty or whitespace")
        if not has_visible_text(turn["content"]):
            return turns, Reject(
                "no_visible_text", f"turn {i} ({role}) holds only invisible format or control characters"
            )
        try:
            turn["content"].encode("utf-8")
        except UnicodeEncodeError as exc:
            return turns, Reject("encoding", f"turn {i} ({role}) holds text that is not valid Unicode ({exc.reason})")
        if role == "user" and len(turn["content"]) > max_query_chars:
            return turns, Reject(
                "query_too_long", f"turn {i} has {len(turn['content'])} characters (limit {max_query_chars})"
            )
        out.append({"role": role, "content": turn["content"]})
    if not any(t["role"] == "user" for t in out):
        return out, Reject("no_query", "no user turn")
    return out, None


def ingest(
    dataset: str,
    path: str | Path,
    fmt: str,
    out: str | Path,
    rejected: str | Path,
    stats: str | Path | None = None,
    *,
    limit: int | None = None,
    seed: int = 0,
    fields: dict | None = None,
    max_query_chars: int = 32768,
    max_reject_fraction: float = 0.5,
    rejected_on_failure: str | Path | None = None,
) -> dict:
    """Read one dataset file; write kept records, set-aside rows and statistics; return the statistics.

    ``limit`` keeps a seeded, content-keyed random subset of the valid records (the same records for the
    same seed whatever the file order), written in source order. Raises :class:`InputError` when the file
    has no records or when more than ``max_reject_fraction`` of its rows are rejected.

    Args:
        dataset: dataset name (prefix of every record id)
        path: source file (plain or gzipped)
        fmt: source format
        out: records JSONL to write
        rejected: quarantine JSONL to write (line, reason, detail, start of the raw text)
        stats: statistics JSON to write
        limit: keep a seeded random subset of this many records (none: all)
        seed: seed of the subset
        fields: JSON map of field names, e.g. '{"query": "problem"}'
        max_query_chars: reject queries longer than this
        max_reject_fraction: fail when more than this share of rows is rejected
        rejected_on_failure: where the rejected rows are copied when the dataset fails (a path that outlives
            the failed job, e.g. beside its log); the error names it
    """
    path = Path(path)
    if fmt not in READERS:
        raise InputError(path, f"unknown format '{fmt}' (known: {', '.join(sorted(READERS))})")
    if not path.exists():
        raise InputError(path, "no such file")
    seen: dict[str, int] = {}
    reasons: Counter[str] = Counter()
    rows_read = 0
    heap: list[tuple[str, int, dict]] = []  # max-heap by negated key, of the ``limit`` smallest keys
    kept_all: list[dict] = []
    with REJECTED.writer(rejected) as reject_row:
        for line, turns, source_id in READERS[fmt](path, {"fields": fields or {}}):
            rows_read += 1
            reject = turns if isinstance(turns, Reject) else None
            if reject is None:
                turns, reject = validate_turns(turns, max_query_chars)
            if reject is None:
                rid = record_id(dataset, turns)
                if rid in seen:
                    reject = Reject("duplicate", f"same content as line {seen[rid]}")
                else:
                    seen[rid] = line
            if reject is not None:
                reasons[reject.reason] += 1
                raw = reject.raw or (json.dumps(turns, ensure_ascii=False)[:RAW_KEEP_CHARS] if turns else "")
                raw = raw.encode("utf-8", "backslashreplace").decode("utf-8")  # lone surrogates stay visible
                reject_row(
                    {"dataset": dataset, "line": line, "reason": reject.reason, "detail": reject.detail, "raw": raw}
                )
                continue
            rec = {"id": rid, "dataset": dataset, "source_line": line, "source_id": source_id, "turns": turns}
            if limit is None:
                kept_all.append(rec)
            else:
                key = hashlib.sha256(f"{seed}:{rid}".encode()).hexdigest()
                item = (_Neg(key), line, rec)
                if len(heap) < limit:
                    heapq.heappush(heap, item)
                elif key < heap[0][0].key:
                    heapq.heapreplace(heap, item)
    n_rejected = sum(reasons.values())
    if rows_read == 0:
        raise InputError(path, f"dataset '{dataset}': no records found")
    if n_rejected / rows_read > max_reject_fraction:
        top = ", ".join(f"{r}: {c}" for r, c in reasons.most_common(5))
        if rejected_on_failure is not None:  # a failed job's outputs are deleted; this copy is not an output
            Path(rejected_on_failure).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(rejected, rejected_on_failure)
            rejected = rejected_on_failure
        raise InputError(
            path,
            f"dataset '{dataset}': {n_rejected} of {rows_read} rows rejected "
            f"(more than {max_reject_fraction:.0%}; {top}); see {rejected}",
        )
    kept = len(seen)
    selected = kept_all if limit is None else [rec for _, _, rec in sorted(heap, key=lambda x: x[1])]
    RECORD.write(out, selected)
    summary = _stats(dataset, fmt, path, rows_read, kept, selected, reasons, limit, seed)
    log.info(
        "%s: read %d rows, kept %d, selected %d, rejected %d %s",
        dataset,
        rows_read,
        kept,
        len(selected),
        n_rejected,
        dict(reasons),
    )
    if stats is not None:
        write_json(stats, summary)
    return summary


class _Neg:
    """Inverts string order so ``heapq`` (a min-heap) keeps the smallest keys at the bottom."""

    __slots__ = ("key",)

    def __init__(self, key: str):
        self.key = key

    def __lt__(self, other: _Neg) -> bool:
        return self.key > other.key


def _stats(dataset, fmt, path, rows_read, kept, selected, reasons, limit, seed) -> dict:
    n_turns = [len(r["turns"]) for r in selected]
    qlens = [len(q) for r in selected for q in queries(r)]
    n_queries = [len(queries(r)) for r in selected]

    def q(values, p):
        return statistics.quantiles(values, n=100, method="inclusive")[p - 1] if len(values) > 1 else (values or [0])[0]

    return {
        "dataset": dataset,
        "format": fmt,
        "path": str(path),
        "rows_read": rows_read,
        "kept": kept,
        "limit": limit,
        "seed": seed,
        "selected": len(selected),
        "rejected": sum(reasons.values()),
        "rejected_by_reason": dict(sorted(reasons.items())),
        "queries": sum(n_queries),
        "multi_turn_records": sum(1 for n in n_queries if n > 1),
        "turns_mean": statistics.fmean(n_turns) if n_turns else 0.0,
        "turns_max": max(n_turns, default=0),
        "query_chars_mean": statistics.fmean(qlens) if qlens else 0.0,
        "query_chars_median": statistics.median(qlens) if qlens else 0,
        "query_chars_p95": q(qlens, 95),
        "query_chars_max": max(qlens, default=0),
    }


def summarize(stats_files: list[str | Path], out: str | Path) -> list[dict]:
    """Gather per-dataset statistics into one TSV, one row per dataset, one column per rejection reason.

    Args:
        stats_files: statistics JSON files from 'instag data ingest'
        out: TSV to write
    """
    stats = [read_json(p) for p in stats_files]
    reasons = sorted({r for s in stats for r in s["rejected_by_reason"]})
    rows = []
    for s in stats:
        row = {k: v for k, v in s.items() if k != "rejected_by_reason"}
        row["limit"] = "" if s["limit"] is None else s["limit"]
        for r in reasons:
            row[f"rejected_{r}"] = s["rejected_by_reason"].get(r, 0)
        rows.append(row)
    write_tsv(out, rows, SUMMARY_COLUMNS + [f"rejected_{r}" for r in reasons])
    return rows


#: Column order of results/tables/datasets.tsv (one ``rejected_<reason>`` column per reason follows).
SUMMARY_COLUMNS = [
    "dataset",
    "format",
    "rows_read",
    "kept",
    "rejected",
    "limit",
    "seed",
    "selected",
    "queries",
    "multi_turn_records",
    "turns_mean",
    "turns_max",
    "query_chars_mean",
    "query_chars_median",
    "query_chars_p95",
    "query_chars_max",
    "path",
]


def read_records(path: str | Path) -> Iterator[dict]:
    """Iterate the records of an ingested ``results/data/<dataset>.jsonl`` (checked: see instag.records)."""
    return RECORD.rows(path)
