"""The formats that stages hand to each other, each with one reader and one writer.

A :class:`Format` names the fields of one JSON-lines hand-off and their types. Its reader yields checked rows
and raises :class:`InputError` naming file and line on a bad row; its writer checks every row before writing
(atomically) and names the file and the row's line number when one is bad, so a stage never writes what the
next one cannot read. Formats (files under ``results/``)::

    RECORD      data/<dataset>.jsonl               {"id", "dataset", "source_line", "source_id", "turns"}
    REJECTED    data/<dataset>.rejected.jsonl      {"dataset", "line", "reason", "detail", "raw"}
    TAG_LINE    tagging/<dataset>/shard-<k>.jsonl  {"id", "dataset", "turn", "tags", "status", ...}
    RAW_POOL    normalize/raw.jsonl                {"id", "dataset", "queries": [[raw tag, ...] | null, ...]}
    NORMALIZED  normalize/normalized.jsonl         {"id", "dataset", "tags", "queries", "status"}
    POOL_ITEM   sampling/pool.jsonl                {"id", "dataset", "tags"}
    SAMPLE      sampling/<ablation>/<variant>.jsonl  {"id", "dataset", "tags"} in selection order
    ANSWER      mtbench/answers/<model>.jsonl      header, then {"question_id", "model_id", "choices", "answer_id"?, ...}
    JUDGMENT    mtbench/judgments/<model>.jsonl    header, then {"question_id", "model", "score", "turn", ...}
    SPLIT_LINE  instagger/split/{train,test}.jsonl  {"id", "record_id", "dataset", "turn", "query", "tags", "gold", ...}
    PREDICTION  instagger/predict/<system>.jsonl   a tag line with the system's "backend" and "model"

ANSWER and JUDGMENT are FastChat's answer and judgment lines (its own files, which have no header, read as
well); instag's files open with a :data:`HEADER` line (``{"kind": "header", "model", ...}``: where the lines
came from), read by :meth:`Format.read_headed` and written by ``write(path, rows, header=...)``.
"""

from __future__ import annotations

import contextlib
import os
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .errors import InputError
from .io import atomic_write, dumps, iter_jsonl

#: Unicode categories that draw nothing: format (zero-width, bidi marks, BOM), control, separators,
#: unassigned and private-use code points.
INVISIBLE_CATEGORIES = frozenset({"Cf", "Cc", "Zs", "Zl", "Zp", "Cn", "Co", "Cs"})


def has_visible_text(text: str) -> bool:
    """True when ``text`` has a character that is drawn: not only whitespace, zero-width/format characters
    (U+200B, U+200D, U+2060, U+FEFF, ...), NUL and other control characters."""
    return any(unicodedata.category(ch) not in INVISIBLE_CATEGORIES for ch in text if not ch.isspace())


def _a(name: str) -> str:
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def _type_name(types: tuple[type, ...]) -> str:
    return " or ".join("null" if t is type(None) else t.__name__ for t in types)


@dataclass(frozen=True)
class Format:
    """One JSON-lines format: required and optional keys with their accepted types, plus an extra check."""

    name: str
    required: dict[str, tuple[type, ...]]
    optional: dict[str, tuple[type, ...]] = field(default_factory=dict)
    check: Callable[[dict], str | None] | None = None
    upgrade: Callable[[dict], dict] | None = None  # reads an older spelling of the format
    #: the format of the file's first line when it is a header (``{"kind": "header", ...}``); None: no header
    header: Format | None = None

    def problem(self, row: Any) -> str | None:
        """Why ``row`` is not of this format, or None."""
        if not isinstance(row, dict):
            return f"expected a JSON object, got {type(row).__name__}"
        for key, types in self.required.items():
            if key not in row:
                return f"has no '{key}' (keys: {', '.join(row) or 'none'})"
            if not isinstance(row[key], types) or (isinstance(row[key], bool) and bool not in types):
                return f"'{key}' is {type(row[key]).__name__}, expected {_type_name(types)}"
        for key, types in self.optional.items():
            if key in row and not isinstance(row[key], types):
                return f"'{key}' is {type(row[key]).__name__}, expected {_type_name(types)}"
        return self.check(row) if self.check is not None else None

    def checked(self, path: str | os.PathLike, line: int, row: Any) -> dict:
        """``row`` (upgraded from an older spelling) when it is of this format, else an :class:`InputError`
        naming file and line; for readers that decode lines themselves (e.g. in batches)."""
        if self.upgrade is not None and isinstance(row, dict):
            row = self.upgrade(row)
        why = self.problem(row)
        if why is not None:
            raise InputError(path, f"not {_a(self.name)} line: {why}", line)
        return row

    def read(self, path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
        """``(line, row)`` for every row; a bad row raises :class:`InputError` naming file and line."""
        for line, row in iter_jsonl(path):
            yield line, self.checked(path, line, row)

    def read_headed(self, path: str | os.PathLike, *, need_header: bool = False) -> tuple[dict | None, list[dict]]:
        """(the header line or None, the rows) of a format whose files may open with a header line; with
        ``need_header`` a file without one is an :class:`InputError`."""
        header, rows = None, []
        for line, row in iter_jsonl(path):
            if not rows and header is None and isinstance(row, dict) and row.get("kind") == "header":
                if self.header is None:
                    raise InputError(path, f"a header line, which {_a(self.name)} file does not have", line)
                header = self.header.checked(path, line, row)
                continue
            rows.append(self.checked(path, line, row))
        if need_header and header is None:
            raise InputError(path, f"no header line (kind: header): not an instag {self.name}s file")
        return header, rows

    def rows(self, path: str | os.PathLike) -> Iterator[dict]:
        """The rows alone (checked as by :meth:`read`)."""
        for _, row in self.read(path):
            yield row

    def write(self, path: str | os.PathLike, rows: Iterable[dict], *, header: dict | None = None) -> int:
        """Write rows atomically (after ``header``, for a format that has one), each checked first; return how
        many rows were written."""
        with self.writer(path, header=header) as write:
            for row in rows:
                write(row)
        return write.count  # type: ignore[attr-defined]

    @contextlib.contextmanager
    def writer(self, path: str | os.PathLike, *, header: dict | None = None) -> Iterator[Callable[[dict], None]]:
        """A ``write(row)`` function for streaming rows into ``path`` (atomic: complete or absent), after
        ``header`` for a format that has one."""
        first = 1 if header is not None else 0
        if header is not None:
            why = "this format has no header" if self.header is None else self.header.problem(header)
            if why is not None:
                raise InputError(path, f"refusing to write a bad {self.name} header: {why}", 1)
        with atomic_write(path) as fh:
            if header is not None:
                fh.write(dumps(header) + "\n")

            def write(row: dict) -> None:
                why = self.problem(row)
                if why is not None:
                    raise InputError(path, f"refusing to write a bad {self.name} line: {why}", first + write.count + 1)
                fh.write(dumps(row) + "\n")
                write.count += 1

            write.count = 0
            yield write


STR, INT, LIST, DICT, BOOL = (str,), (int,), (list,), (dict,), (bool,)
NULLABLE_LIST, NULLABLE_STR = (list, type(None)), (str, type(None))
NUMBER, NULLABLE_NUMBER = (int, float), (int, float, type(None))


def _turns(row: dict) -> str | None:
    for i, turn in enumerate(row["turns"]):
        if not (isinstance(turn, dict) and isinstance(turn.get("role"), str) and isinstance(turn.get("content"), str)):
            return f"turn {i} is not {{'role': str, 'content': str}}"
    return None


def _str_list(key: str) -> Callable[[dict], str | None]:
    def check(row: dict) -> str | None:
        if not all(isinstance(t, str) for t in row[key]):
            return f"'{key}' is not a list of strings"
        return None

    return check


def _tag_line(row: dict) -> str | None:
    if row["turn"] < 0:
        return f"'turn' must be a query index >= 0, got {row['turn']}"
    if row["status"] == "ok" and not isinstance(row["tags"], list):
        return "status 'ok' with no 'tags' list"
    return None


def _raw_pool(row: dict) -> str | None:
    for i, q in enumerate(row["queries"]):
        if q is not None and not (isinstance(q, list) and all(isinstance(t, str) for t in q)):
            return f"query {i} is neither null nor a list of tag strings"
    return None


RECORD = Format(
    "record",
    {"id": STR, "dataset": STR, "turns": LIST},
    {"source_line": INT, "source_id": NULLABLE_STR},
    _turns,
)
REJECTED = Format("rejected row", {"dataset": STR, "line": INT, "reason": STR, "detail": STR, "raw": STR})


def _tag_line_q(row: dict) -> dict:
    """Tag lines written before the field ``q`` was renamed ``turn`` (shards of an earlier run)."""
    if "turn" not in row and "q" in row:
        row = dict(row)
        row["turn"] = row.pop("q")
    return row


TAG_LINE = Format(
    "tag line",
    {"id": STR, "dataset": STR, "turn": INT, "tags": NULLABLE_LIST, "status": STR},
    {"error": NULLABLE_STR, "raw": NULLABLE_STR},
    _tag_line,
    _tag_line_q,
)
RAW_POOL = Format("collected pool", {"id": STR, "dataset": STR, "queries": LIST}, check=_raw_pool)
NORMALIZED = Format(
    "normalized record", {"id": STR, "dataset": STR, "tags": LIST}, {"queries": LIST, "status": STR}, _str_list("tags")
)
POOL_ITEM = Format("pool item", {"id": STR, "dataset": STR, "tags": LIST}, check=_str_list("tags"))
SAMPLE = Format("sample", {"id": STR, "dataset": STR, "tags": LIST}, check=_str_list("tags"))


def _header(row: dict) -> str | None:
    return None if row["kind"] == "header" else f"'kind' is {row['kind']!r}, not 'header'"


def _answer(row: dict) -> str | None:
    first = row["choices"][0] if row["choices"] else None
    if not (isinstance(first, dict) and isinstance(first.get("turns"), list)):
        return "'choices' is not a list of {'turns': [...]} (FastChat's answer)"
    if not all(isinstance(t, str) for t in first["turns"]):
        return "choices[0].turns is not a list of strings"
    return None


def _judgment(row: dict) -> str | None:
    if row["turn"] < 1:
        return f"'turn' must be 1 or more (FastChat counts turns from 1), got {row['turn']}"
    return None


#: the first line of an answers or judgments file: which model, and how its lines were made
HEADER = Format("header", {"kind": STR, "model": STR}, check=_header)
ANSWER = Format(
    "answer",
    {"question_id": INT, "model_id": STR, "choices": LIST},
    {"answer_id": STR, "category": STR, "temperature": NUMBER, "tokens": LIST, "finish": LIST, "errors": LIST},
    _answer,
    header=HEADER,
)
JUDGMENT = Format(
    "judgment",
    {"question_id": INT, "model": STR, "score": NULLABLE_NUMBER, "turn": INT},
    {
        "judge": LIST,
        "user_prompt": STR,
        "judgment": NULLABLE_STR,
        "category": NULLABLE_STR,
        "repeat": INT,
        "answer_hash": STR,
        "status": STR,
        "error": NULLABLE_STR,
        "raw": NULLABLE_STR,
        "attempts": INT,
        "judge_backend": NULLABLE_STR,
        "judge_reported": NULLABLE_STR,
        "prompt_version": STR,
        "demo_judge": BOOL,
    },
    _judgment,
    header=HEADER,
)
#: one query of the InsTagger's train or test split, with the teacher's tags (``gold``: their names)
SPLIT_LINE = Format(
    "InsTagger split",
    {"id": STR, "query": STR, "tags": LIST, "gold": LIST},
    {"record_id": STR, "dataset": STR, "turn": INT, "gold_normalized": NULLABLE_LIST},
    _str_list("gold"),
)
#: a system's answer for one test query of the split (written by the tagging stage's ``tag_file``)
PREDICTION = Format(
    "prediction",
    TAG_LINE.required,
    {**TAG_LINE.optional, "backend": NULLABLE_STR, "model": NULLABLE_STR},
    _tag_line,
)


def queries(record: dict) -> list[str]:
    """The texts of a record that get tagged: its user turns, in order (index = a tag line's ``turn``)."""
    return [t["content"] for t in record["turns"] if t["role"] == "user"]
