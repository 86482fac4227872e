"""Source readers: one function per published format, registered with ``@reader("name")``.

Each yields, per source row, ``(line, turns_or_rejection, source_id)``; validation, de-duplication, sampling
and statistics are shared (instag.data.ingest).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..io import JsonlBadLine, iter_jsonl, read_bytes

#: Source role names and the role they mean. Anything else is rejected as ``unknown_role``.
ROLE_MAP = {
    "human": "user",
    "user": "user",
    "prompter": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bing": "assistant",
    "bard": "assistant",
    "model": "assistant",
    "system": "system",
}

RAW_KEEP_CHARS = 2000  # how much of a rejected row's text is kept in the quarantine file


@dataclass
class Reject:
    """A row set aside, with why."""

    reason: str
    detail: str = ""
    raw: str = ""


Turns = list[dict[str, str]]
Row = tuple[int, "Turns | Reject", "str | None"]  # (line, turns or rejection, source id)
READERS: dict[str, Callable[[Path, dict], Iterator[Row]]] = {}


def reader(name: str):
    """Register a reader for a source format under ``name`` (the value of ``format:`` in the config)."""

    def deco(fn):
        READERS[name] = fn
        return fn

    return deco


# --------------------------------------------------------------------------------------------- sources


def iter_json_records(path: Path) -> Iterator[tuple[int, Any]]:
    """Yield ``(line, element)`` from a JSON array or a JSONL file, plain or gzipped.

    A JSON array is decoded one element at a time, so a file cut off mid-way (as ``sharegpt.json.gz``
    is) yields every complete element and then one :class:`JsonlBadLine` for the broken tail. A JSONL
    file is read line by line, so a bad line (invalid JSON, not UTF-8) is set aside alone.
    """
    head = read_bytes(path, 4096).removeprefix(b"\xef\xbb\xbf")
    if not head.lstrip().startswith(b"["):
        if head.lstrip().startswith(b"{"):
            _refuse_top_level_object(path)
        yield from iter_jsonl(path, strict=False)
        return
    data = read_bytes(path)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(
            path, f"not UTF-8 ({exc.reason} at byte {exc.start})", data[: exc.start].count(b"\n") + 1
        ) from None
    del data
    decoder = json.JSONDecoder()
    pos = text.index("[") + 1
    line = 1 + text.count("\n", 0, pos)
    n = len(text)
    while True:
        start = pos
        while pos < n and text[pos] in " \t\r\n,":
            pos += 1
        line += text.count("\n", start, pos)
        if pos >= n:
            yield line, JsonlBadLine("truncated_json", "the JSON array has no closing ']'", "")
            return
        if text[pos] == "]":
            return
        try:
            obj, end = decoder.raw_decode(text, pos)
        except (json.JSONDecodeError, RecursionError) as exc:
            msg = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply to decode"
            rest = n - pos
            # An array that never closes was cut off (a partial download); otherwise the JSON is broken.
            yield (
                line,
                JsonlBadLine(
                    "invalid_json" if text.rstrip().endswith("]") else "truncated_json",
                    f"{msg}; the remaining {rest} characters from here could not be decoded",
                    text[pos : pos + RAW_KEEP_CHARS],
                ),
            )
            return
        yield line, obj
        line += text.count("\n", pos, end)
        pos = end


def _refuse_top_level_object(path: Path) -> None:
    """A file whose top level is one JSON object is not a list of records: say a list was expected.

    JSON lines also start with ``{``, so a first line that is JSON on its own is JSON lines unless it is the
    whole of a ``.json`` file (a one-line ``{"data": [...]}``); a ``.jsonl`` file of one line is one record.
    """
    head = read_bytes(path, 1 << 20).removeprefix(b"\xef\xbb\xbf")
    first, _, rest = head.partition(b"\n")
    one_line = False
    try:
        json.loads(first)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        pass
    else:
        if rest.strip() or not Path(path).name.lower().removesuffix(".gz").endswith(".json"):
            return
        one_line = True
    try:
        whole = json.loads(read_bytes(path).decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return  # broken JSON lines: each bad line is set aside with its reason
    if isinstance(whole, dict):
        keys = ", ".join(list(whole)[:8]) or "none"
        hint = "; if this object is one record, name the file .jsonl" if one_line else ""
        raise InputError(
            path,
            f"the top level is a JSON object (keys: {keys}); expected a list of records "
            f"(a JSON array of objects, or one JSON object per line){hint}",
        )


def _field(row: Any, key: str) -> Any:
    if not isinstance(row, dict):
        raise _RowError("not_an_object", f"expected a JSON object, got {type(row).__name__}")
    if key not in row:
        raise _RowError("missing_field", f"no field '{key}' (fields: {', '.join(map(str, row))})")
    return row[key]


def _text(row: Any, key: str, *, optional: bool = False) -> str:
    if optional and isinstance(row, dict) and row.get(key) is None:
        return ""
    value = _field(row, key)
    if not isinstance(value, str):
        raise _RowError("bad_field", f"field '{key}' is {type(value).__name__}, not a string")
    return value


class _RowError(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def _rows(path: Path, convert: Callable[[Any], tuple[Turns, str | None]]) -> Iterator[Row]:
    for line, obj in iter_json_records(path):
        if isinstance(obj, JsonlBadLine):
            yield line, Reject(obj.reason, obj.detail, obj.raw), None
            continue
        try:
            turns, source_id = convert(obj)
        except _RowError as exc:
            yield line, Reject(exc.reason, exc.detail, _raw(obj)), None
            continue
        yield line, turns, source_id


def _raw(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False)[:RAW_KEEP_CHARS]


# --------------------------------------------------------------------------------------------- readers


@reader("sharegpt")
def read_sharegpt(path: Path, opts: dict) -> Iterator[Row]:
    """ShareGPT/Vicuna conversations: ``{id, conversations: [{from, value}]}`` (or ``{role, content}``)."""
    conv_key = opts.get("conversations", "conversations")

    def convert(row):
        conv = _field(row, conv_key)
        if not isinstance(conv, list):
            raise _RowError("bad_field", f"'{conv_key}' is {type(conv).__name__}, not a list")
        turns = []
        for i, turn in enumerate(conv):
            if not isinstance(turn, dict):
                raise _RowError("bad_field", f"turn {i} is {type(turn).__name__}, not an object")
            role = turn.get("from", turn.get("role"))
            content = turn.get("value", turn.get("content"))
            if role is None or content is None:
                raise _RowError("missing_field", f"turn {i} lacks 'from'/'value' (keys: {', '.join(turn)})")
            if not isinstance(content, str) or not isinstance(role, str):
                raise _RowError("bad_field", f"turn {i}: role and text must be strings")
            turns.append({"role": role, "content": content})
        source_id = row.get("id")
        return turns, None if source_id is None else str(source_id)

    yield from _rows(path, convert)


@reader("alpaca")
def read_alpaca(path: Path, opts: dict) -> Iterator[Row]:
    """Alpaca: ``{instruction, input, output}``, optional ``history: [[user, assistant], ...]`` (LIMA, OASST-zh).

    The query is the instruction, followed by a blank line and the input when there is one.
    """

    def convert(row):
        instruction = _text(row, "instruction")
        extra = _text(row, "input", optional=True)
        output = _text(row, "output")
        turns = []
        history = row.get("history") or []
        if not isinstance(history, list):
            raise _RowError("bad_field", "'history' is not a list")
        for i, pair in enumerate(history):
            if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
                raise _RowError("bad_field", f"history item {i} is not a [user, assistant] pair of strings")
            turns += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
        query = f"{instruction}\n\n{extra}" if extra.strip() else instruction
        turns += [{"role": "user", "content": query}, {"role": "assistant", "content": output}]
        return turns, None

    yield from _rows(path, convert)


@reader("dolly")
def read_dolly(path: Path, opts: dict) -> Iterator[Row]:
    """databricks-dolly-15k: ``{instruction, context, response, category}``; context follows the instruction."""

    def convert(row):
        instruction = _text(row, "instruction")
        context = _text(row, "context", optional=True)
        query = f"{instruction}\n\n{context}" if context.strip() else instruction
        return [{"role": "user", "content": query}, {"role": "assistant", "content": _text(row, "response")}], None

    yield from _rows(path, convert)


@reader("qa")
def read_qa(path: Path, opts: dict) -> Iterator[Row]:
    """Question/answer rows (GSM8K ``question/answer``; MATH with ``fields: {query: problem, response: solution}``)."""
    fields = opts.get("fields") or {}
    qkey, rkey, idkey = fields.get("query", "question"), fields.get("response", "answer"), fields.get("id")

    def convert(row):
        turns = [{"role": "user", "content": _text(row, qkey)}, {"role": "assistant", "content": _text(row, rkey)}]
        return turns, (str(row[idkey]) if idkey and isinstance(row, dict) and idkey in row else None)

    yield from _rows(path, convert)


@reader("query")
def read_query(path: Path, opts: dict) -> Iterator[Row]:
    """Query-only rows (WizardLM test set ``Instruction``, UltraChat eval ``data``): ``fields: {query: KEY}``."""
    fields = opts.get("fields") or {}
    qkey, idkey = fields.get("query", "instruction"), fields.get("id")

    def convert(row):
        source_id = str(row[idkey]) if idkey and isinstance(row, dict) and idkey in row else None
        return [{"role": "user", "content": _text(row, qkey)}], source_id

    yield from _rows(path, convert)


@reader("flan_tsv")
def read_flan_tsv(path: Path, opts: dict) -> Iterator[Row]:
    """FLAN v2 CoT TSV: ``question<TAB>answer<TAB>rationale``, no header, no quoting, literal ``\\n`` in text.

    The response is the rationale followed by "So the answer is <answer>.", the shape of FLAN's CoT targets.
    """
    with open(path, "rb") as fh:
        for line, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as exc:
                yield line, Reject("encoding", str(exc), raw[:RAW_KEEP_CHARS].decode("utf-8", "replace")), None
                continue
            parts = text.split("\t")
            if len(parts) != 3:
                yield (
                    line,
                    Reject("bad_columns", f"{len(parts)} tab-separated fields, expected 3", text[:RAW_KEEP_CHARS]),
                    None,
                )
                continue
            question, answer, rationale = (p.replace("\\n", "\n") for p in parts)
            response = f"{rationale.strip()} So the answer is {answer.strip()}." if rationale.strip() else answer
            yield line, [{"role": "user", "content": question}, {"role": "assistant", "content": response}], None


@reader("oasst_tree")
def read_oasst_tree(path: Path, opts: dict) -> Iterator[Row]:
    """OpenAssistant export trees (``{message_tree_id, prompt: {text, role, replies, ...}}``), one per line.

    Each tree becomes one conversation: from the root prompt, follow the best-ranked reply that is not
    deleted (lowest ``rank``; the first when unranked) down to a leaf. A tree whose root was deleted is
    rejected; a lone prompt becomes a query-only record.
    """

    def convert(row):
        node = _field(row, "prompt")
        if not isinstance(node, dict):
            raise _RowError("bad_field", "'prompt' is not an object")
        if node.get("deleted"):
            raise _RowError("deleted", "the root message is marked deleted")
        turns = []
        while node is not None:
            turns.append({"role": _text(node, "role"), "content": _text(node, "text")})
            replies = [r for r in node.get("replies") or [] if isinstance(r, dict) and not r.get("deleted")]
            ranked = sorted(
                enumerate(replies), key=lambda ir: (ir[1].get("rank") is None, ir[1].get("rank") or 0, ir[0])
            )
            node = ranked[0][1] if ranked else None
        return turns, str(row.get("message_tree_id")) if isinstance(row, dict) else None

    yield from _rows(path, convert)
