"""InsTagger data: the tagging stage's answers as (query -> teacher tags) pairs, split into train and test.

Input: the tag lines of every tagging shard (``{"id", "dataset", "turn" (or the older "q"), "tags", "status"}``),
the ingested records they came from (for the query texts) and, optionally, the normalize stage's
``tag_mapping.tsv`` (raw tag -> canonical tag, empty when the tag was dropped).

- A query whose teacher answer failed (``status != "ok"``) is excluded and counted (``failed_excluded``).
- Split by a seeded hash of the record id (paper.md §9.1: 1,000 held out at random): records are ordered by
  ``sha256(seed, dataset, record id)``, and their queries (user turns, in turn order) fill the test set until
  it holds ``test_size`` queries; all turns of one session stay on one side. Turns of the one record that
  straddles the boundary and does not fit are left out of both sides (``held_back``), so the test set holds
  exactly ``test_size`` queries (fewer only when there are not enough). ``train_size`` (null = all) keeps the
  first training queries in the same hash order.
- Gold tags: the teacher's tags as written (``gold``) and mapped through the tag mapping (``gold_normalized``;
  :func:`normalize_tags`, paper.md A13 leaves raw vs normalized open, so both are kept and scored).
- Queries longer than ``max_query_chars`` are cut (``truncated``) so a training sample keeps its answer
  inside the trainer's maximum length.

Outputs (``results/instagger/split/``): ``train.jsonl`` and ``test.jsonl``, one line per query::

    {"id": "<record id>#<turn>", "record_id", "dataset", "turn", "query", "tags": [{"tag", "explanation"}],
     "gold": [raw tags], "gold_normalized": [canonical tags]}

and ``stats.json`` with every count. The same inputs and seed give byte-identical files.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..errors import ConfigError, InputError
from ..io import read_tsv, write_json
from ..records import RECORD, SPLIT_LINE, TAG_LINE, queries
from .metrics import norm_tag

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ tag mapping


class TagMapping:
    """raw tag -> canonical tag (None: dropped by normalization) from ``tag_mapping.tsv``.

    A tag not in the table is looked up by its lowercased, stripped form (the most frequent raw variant with
    that form decides); a tag unknown either way is kept as it is, so a model's new tag stays a prediction.
    """

    def __init__(self, rows: Iterable[dict[str, str]] = ()):
        self.exact: dict[str, str | None] = {}
        self.folded: dict[str, str | None] = {}
        for row in rows:  # the table is sorted by count, most frequent first
            raw, canon = row["raw_tag"], row.get("canonical") or None
            self.exact.setdefault(raw, canon)
            self.folded.setdefault(norm_tag(raw), canon)

    @classmethod
    def read(cls, path: str | Path | None) -> TagMapping:
        if path is None:
            return cls()
        rows = read_tsv(path)
        if rows and ("raw_tag" not in rows[0] or "canonical" not in rows[0]):
            raise InputError(path, "a tag mapping needs the columns raw_tag and canonical", 1)
        return cls(rows)

    def __len__(self) -> int:
        return len(self.exact)

    def lookup(self, tag: str) -> tuple[bool, str | None]:
        """(known, canonical): canonical is None for a dropped tag."""
        if tag in self.exact:
            return True, self.exact[tag]
        key = norm_tag(tag)
        if key in self.folded:
            return True, self.folded[key]
        return False, None


def normalize_tags(tags: Sequence[str], mapping: TagMapping) -> list[str]:
    """Tags mapped to canonical tags: dropped tags removed, unknown tags kept; sorted, repeats removed."""
    out = set()
    for t in tags:
        known, canon = mapping.lookup(t)
        if not known:
            out.add(t)
        elif canon is not None:
            out.add(canon)
    return sorted(out)


# ------------------------------------------------------------------------------------------ split


def record_key(seed: int, dataset: str, record_id: str) -> str:
    """The sort key that decides the split: sha256 over the seed, the dataset and the record id."""
    return hashlib.sha256(f"{seed}\0{dataset}\0{record_id}".encode()).hexdigest()


def split(
    tag_files: Sequence[str | Path],
    records_files: Sequence[str | Path],
    train_out: str | Path,
    test_out: str | Path,
    stats_out: str | Path | None = None,
    *,
    mapping: str | Path | None = None,
    test_size: int = 1000,
    train_size: int | None = None,
    seed: int = 0,
    max_query_chars: int | None = None,
) -> dict:
    """Build the train and test files; see the module docstring. Returns the statistics."""
    if test_size < 1:
        raise ConfigError("instagger.test_size", "must be >= 1")
    if train_size is not None and train_size < 1:
        raise ConfigError("instagger.train_size", "must be >= 1 or null")
    stats: Counter = Counter()
    failed_by_dataset: Counter = Counter()
    answers: dict[tuple[str, str], dict[int, list[dict]]] = {}
    for path in tag_files:
        for row in TAG_LINE.rows(path):
            stats["tag_lines"] += 1
            if row["status"] != "ok" or not row["tags"]:
                stats["failed_excluded"] += 1
                failed_by_dataset[row["dataset"]] += 1
                continue
            key = (row["dataset"], row["id"])
            turns = answers.setdefault(key, {})
            if row["turn"] in turns:
                stats["duplicate_lines"] += 1
                continue
            turns[row["turn"]] = [t for t in row["tags"] if isinstance(t, dict) and isinstance(t.get("tag"), str)]
    texts: dict[tuple[str, str], list[str]] = {}
    for path in records_files:
        for rec in RECORD.rows(path):
            key = (rec["dataset"], rec["id"])
            if key in answers and key not in texts:
                texts[key] = queries(rec)
    tag_map = TagMapping.read(mapping)

    items: list[tuple[str, str, str, int, dict]] = []  # (hash, dataset, record id, turn, line)
    for (dataset, rid), turns in answers.items():
        user = texts.get((dataset, rid))
        if user is None:
            stats["missing_record"] += len(turns)
            continue
        h = record_key(seed, dataset, rid)
        for turn in sorted(turns):
            if turn >= len(user):
                stats["missing_turn"] += 1
                continue
            query = user[turn]
            if max_query_chars is not None and len(query) > max_query_chars:
                query = query[:max_query_chars]
                stats["truncated"] += 1
            tags = turns[turn]
            gold = [t["tag"] for t in tags]
            norm = normalize_tags(gold, tag_map) if mapping is not None else None
            if norm is not None and not norm:
                stats["normalized_gold_empty"] += 1
            line = {
                "id": f"{rid}#{turn}",
                "record_id": rid,
                "dataset": dataset,
                "turn": turn,
                "query": query,
                "tags": [{"tag": t["tag"], "explanation": str(t.get("explanation", ""))} for t in tags],
                "gold": gold,
                "gold_normalized": norm,
            }
            items.append((h, dataset, rid, turn, line))
    items.sort(key=lambda x: x[:4])

    test, train = [], []
    boundary: tuple[str, str] | None = None
    for _h, dataset, rid, _turn, line in items:
        if len(test) < test_size:
            test.append(line)
            boundary = (dataset, rid)
        elif boundary == (dataset, rid):  # the rest of the session that filled the test set
            stats["held_back"] += 1
        else:
            boundary = None
            train.append(line)
    if train_size is not None and len(train) > train_size:
        stats["train_not_used"] = len(train) - train_size
        train = train[:train_size]
    if len(test) < test_size:
        log.warning("only %d usable queries for a test set of %d", len(test), test_size)
    SPLIT_LINE.write(train_out, train)
    SPLIT_LINE.write(test_out, test)
    result = {
        "seed": seed,
        "test_size": test_size,
        "train_size": train_size,
        "max_query_chars": max_query_chars,
        "mapping": None if mapping is None else str(mapping),
        "mapping_tags": len(tag_map),
        "queries_usable": len(items),
        "train": len(train),
        "test": len(test),
        "train_records": len({(x["dataset"], x["record_id"]) for x in train}),
        "test_records": len({(x["dataset"], x["record_id"]) for x in test}),
        "failed_by_dataset": dict(sorted(failed_by_dataset.items())),
        "test_gold_tags": sum(len(x["gold"]) for x in test),
        "test_gold_tags_normalized": None if mapping is None else sum(len(x["gold_normalized"]) for x in test),
    }
    for k in (
        "tag_lines",
        "failed_excluded",
        "duplicate_lines",
        "missing_record",
        "missing_turn",
        "truncated",
        "held_back",
        "train_not_used",
        "normalized_gold_empty",
    ):
        result[k] = int(stats.get(k, 0))
    if stats_out is not None:
        write_json(stats_out, result)
    log.info(
        "instagger split: %d train, %d test queries; %d failed teacher answers excluded",
        len(train),
        len(test),
        result["failed_excluded"],
    )
    return result


def read_split(path: str | Path) -> list[dict]:
    """The lines of a train or test file (each checked for the fields later steps use)."""
    return list(SPLIT_LINE.rows(path))
