"""Tagging's inputs and outputs: the queries of a record, shards of a records file, and tag lines.

A tag line, one per query (user turn), in record order, then ``turn``::

    {"id", "dataset", "turn", "tags": [{"tag", "explanation"}] | null, "status": "ok" | "failed" | "rejected",
     "error": null | str, "raw": null | str, "backend", "model"}

``rejected``: the query is empty, whitespace or invisible characters only (:func:`blank_reason`); no model
is asked and ``error`` says why. ``failed``: no answer parsed after the retries; ``raw`` keeps the last
answer's text. Tag files are read and written with :data:`instag.records.TAG_LINE` (checked rows, errors
naming file and line).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..io import iter_jsonl
from ..records import has_visible_text

QUERY_FIELDS = ("query", "instruction", "prompt", "question", "text")  # plain JSONL input, first present wins
LINE_KEYS = ("id", "dataset", "turn", "tags", "status", "error", "raw", "backend", "model")
STATUSES = ("ok", "failed", "rejected")


@dataclass
class Item:
    """One query to tag: user turn ``turn`` (0-based) of record ``id``."""

    id: str
    dataset: str
    turn: int
    text: str


def blank_reason(text: str) -> str | None:
    """Why ``text`` is no query at all (kept as a ``rejected`` line), or None when it has something visible.

    >>> blank_reason(""), blank_reason(" \\n"), blank_reason("\\u200b\\u200d"), blank_reason("\\x00"), blank_reason("hi")
    ('empty query', 'whitespace-only query', 'invisible-only query', 'invisible-only query', None)
    """
    if text == "":
        return "empty query"
    if not text.strip():
        return "whitespace-only query"
    if not has_visible_text(text):
        return "invisible-only query"
    return None


def record_items(rec: dict, path: str | Path = "?", line: int | None = None) -> list[Item]:
    """The queries (user turns) of one ingested record, or of a plain ``{query|instruction|...}`` row."""
    if not isinstance(rec, dict):
        raise InputError(path, "a line must be a JSON object", line)
    if "turns" in rec:
        try:
            texts = [t["content"] for t in rec["turns"] if t["role"] == "user"]
            rid, ds = rec["id"], rec.get("dataset", "")
        except (KeyError, TypeError):
            raise InputError(path, "a record needs 'id' and 'turns' of {role, content}", line) from None
        return [Item(str(rid), str(ds), k, str(t)) for k, t in enumerate(texts)]
    for key in QUERY_FIELDS:
        if isinstance(rec.get(key), str):
            rid = rec.get("id", f"line-{line}")
            return [Item(str(rid), str(rec.get("dataset", "")), 0, rec[key])]
    raise InputError(path, f"no 'turns' and no query field (one of {', '.join(QUERY_FIELDS)})", line)


def shard_records(path: str | Path, shard: int, shard_size: int) -> Iterator[dict]:
    """Records ``shard*shard_size .. (shard+1)*shard_size - 1`` of a records file, streamed."""
    lo, hi = shard * shard_size, (shard + 1) * shard_size
    for k, (_, rec) in enumerate(iter_jsonl(path)):
        if k >= hi:
            break
        if k >= lo:
            yield rec


def count_records(path: str | Path) -> int:
    return sum(1 for _ in iter_jsonl(path))


def n_shards(n_records: int, shard_size: int) -> int:
    """Shards of a dataset: at least one (an empty dataset still gets its empty shard)."""
    return max(1, math.ceil(n_records / shard_size))


def tag_line(item: Item, status: str, ident: dict, tags=None, error=None, raw=None) -> dict:
    """One tag line (keys in :data:`LINE_KEYS` order)."""
    return {
        "id": item.id,
        "dataset": item.dataset,
        "turn": item.turn,
        "tags": tags,
        "status": status,
        "error": error,
        "raw": raw,
        "backend": ident["backend"],
        "model": ident["model"],
    }
