"""The sampling pool: tagged queries as integer tag ids in CSR arrays (read, build, load)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError, InstagError
from ..io import write_json, write_tsv
from ..records import NORMALIZED, POOL_ITEM

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
    for line, rec in NORMALIZED.read(path):
        rid, ds, tags = rec["id"], rec["dataset"], rec["tags"]
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
    """Keep the tagged records of the pool datasets; write the pool, its statistics and pool.tsv (beside the
    paper's 306,044 / 6,398 / 4.48).

    Args:
        tags: normalized records (results/normalize/normalized.jsonl)
        out: pool JSONL to write
        stats: pool statistics JSON to write
        table: pool.tsv to write
        datasets: pool datasets (default: every dataset in the normalized records)
    """
    kept, info = read_tag_records(tags, datasets)
    if not kept:
        raise InputError(tags, "the pool is empty: no tagged record of the pool datasets")
    order = list(datasets) or sorted(info["per_dataset"])
    pool = Pool.from_records(kept, order)
    POOL_ITEM.write(out, ({"id": rid, "dataset": ds, "tags": sorted(set(t))} for rid, ds, t in kept))
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
    records = [(rec["id"], rec["dataset"], rec["tags"]) for rec in POOL_ITEM.rows(path)]
    if not records:
        raise InputError(path, "the pool is empty")
    return Pool.from_records(records)
