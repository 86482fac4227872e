"""A content-addressed cache of LLM calls that wraps any backend (lm-eval's ``CachingLM``, datatrove's ``RequestCache``).

Key: sha256 of the canonical JSON (sorted keys) of the backend's ``name``, ``model`` and ``revision``, a caller's
``namespace`` (stages pass the prompt template's hash), the rendered ``messages``, every
:class:`~instag.llm.base.GenerationParams` field and the request's ``repeat`` index (so the repeats of a sampled
call are distinct entries), and a pre-rendered ``prompt`` when the request has one. ``meta`` is never part of
the key. See :func:`request_key`.

Storage: a directory of append-only JSONL *segments*, one per writer (``seg-<host>-<pid>-<random>.jsonl``),
created on the first miss, so several processes (Snakemake jobs, also on different hosts of a cluster's shared
file system) never append to the same file. Each line is one record that starts with a fixed-width prefix
``{"key":"<64 hex>","ok":true|false,`` so opening a cache indexes it without parsing JSON; the index maps each
key to the segment, offset and length of its first successful record, and a hit reads and parses that one line.
A reader skips a truncated last line (a writer killed mid-write) and counts lines that are not records.
New segments and lines written by other processes are picked up at the start of each ``generate`` call.

Durability: every response is written (one ``write`` call per line) as soon as it arrives, so a process killed
mid-run loses only the calls in flight. Backends that stream (``Backend.streams``: their ``generate`` reports
each response through ``on_response(index, response)`` as it completes) get the whole batch of misses at once;
other backends get the misses in chunks of ``chunk_size`` (default 32) and each chunk is written when it
returns, so a crash loses at most the chunk in flight. The segment is fsync'ed at the end of
each ``generate`` call and on close.

Failures (``response.error`` set, or no text) are stored with their raw text, error and request, for
inspection (``instag cache failures``), but never served as hits: the next call with that key goes to the
backend again. "Retry the failed ones" is therefore: run the stage again.

Spend control: with ``guard=`` (a :class:`instag.llm.cost.SpendGuard`) the misses are sent in chunks, and
before each chunk the guard admits only as many requests as fit under the cap (estimated with ``max_tokens`` as
the completion length); when the cap would be exceeded, :class:`instag.llm.cost.SpendCapExceeded` is raised
after everything already answered is in the cache. Hits cost nothing. Stages use the cache through
:class:`instag.llm.job.LLMJob`, which sets the guard up. ``cache_dir=None`` stores nothing (every call is made)
but still counts and guards.

Maintenance: :func:`cache_stats`, :func:`failed_entries` and :func:`compact` (merge segments into one, keeping
one success per key, or the latest failure of a key that never succeeded). Compact only while no process
writes to the cache; it skips segments modified within ``min_age_s`` seconds.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from hashlib import sha256
from pathlib import Path
from typing import Any

from ..io import canonical_json, dumps
from .base import Backend, ChatRequest, ChatResponse, GenerationParams, OnResponse, ProgressFn

log = logging.getLogger(__name__)

#: Version of the key and record layout; part of every key, so a layout change never serves old entries.
KEY_VERSION = 1
_PREFIX = b'{"key":"'
_KEY_END = len(_PREFIX) + 64  # 72
_OK_FIELD = b'","ok":'
_OK_AT = _KEY_END + len(_OK_FIELD)  # 79: b"t" or b"f"
_MIN_LINE = _OK_AT + 6
_READ_BLOCK = 8 << 20
SEGMENT_SUFFIX = ".jsonl"


# ----------------------------------------------------------------------------------------------- keys


def _params_dict(params: GenerationParams) -> dict[str, Any]:
    # the fields as they are (what params.to_dict() gives, without its deep copy of the JSON schema: a copy per
    # request was most of the time a cached tagging run took); only serialised, never changed
    d = {f.name: getattr(params, f.name) for f in fields(params)}
    d["stop"] = list(params.stop)
    # 0 and 0.0 must give the same key
    d["temperature"] = float(d["temperature"])
    d["top_p"] = float(d["top_p"])
    d["max_tokens"] = int(d["max_tokens"])
    return d


def request_key(
    backend: str,
    model: str,
    revision: str,
    namespace: str,
    messages: list[dict],
    params: GenerationParams,
    repeat: int,
    prompt: str | None = None,
) -> str:
    """The cache key of one request: sha256 hex of the canonical JSON of everything that decides its answer.

    >>> k = request_key("openai", "m", "r", "", [{"role": "user", "content": "hi"}], GenerationParams(), 0)
    >>> len(k), k == request_key("openai", "m", "r", "", [{"role": "user", "content": "hi"}], GenerationParams(), 1)
    (64, False)
    """
    payload = {
        "backend": backend,
        "messages": messages,
        "model": model,
        "namespace": namespace,
        "params": _params_dict(params),
        "repeat": int(repeat),
        "revision": revision,
        "v": KEY_VERSION,
    }
    if prompt is not None:  # keys of chat requests stay as they were
        payload["prompt"] = prompt
    return sha256(canonical_json(payload).encode("utf-8")).hexdigest()


class _KeyMaker:
    """Computes :func:`request_key` fast for many requests: the identity and each params object are serialised once."""

    def __init__(self, backend: str, model: str, revision: str, namespace: str):
        self.head = '{"backend":' + canonical_json(backend) + ',"messages":'
        self.mid = ',"model":' + canonical_json(model) + ',"namespace":' + canonical_json(namespace) + ',"params":'
        self.tail = ',"revision":' + canonical_json(revision) + ',"v":' + str(KEY_VERSION) + "}"
        self.ident = (backend, model, revision, namespace)
        self._params: dict[int, tuple[GenerationParams, str]] = {}

    def __call__(self, req: ChatRequest) -> str:
        if req.prompt is not None:
            return request_key(*self.ident, req.messages, req.params, req.repeat, req.prompt)
        p = req.params
        got = self._params.get(id(p))
        if got is None or got[0] is not p:
            got = (p, canonical_json(_params_dict(p)))
            self._params[id(p)] = got
        text = "".join(
            (self.head, canonical_json(req.messages), self.mid, got[1], ',"repeat":', str(int(req.repeat)), self.tail)
        )
        return sha256(text.encode("utf-8")).hexdigest()


# -------------------------------------------------------------------------------------------- records


def _record_line(key: str, resp: ChatResponse, ident: dict[str, Any], req: ChatRequest | None) -> bytes:
    body: dict[str, Any] = {
        "text": resp.text,
        "error": resp.error,
        "finish_reason": resp.finish_reason,
        "prompt_tokens": resp.prompt_tokens,
        "completion_tokens": resp.completion_tokens,
        "seconds": round(resp.seconds, 6),
        "attempts": resp.attempts,
        **ident,
        "t": round(time.time(), 3),
    }
    if req is not None:  # failures keep their request for inspection
        body["request"] = {
            "messages": req.messages,
            "params": _params_dict(req.params),
            "repeat": req.repeat,
            "meta": req.meta,
        }
        if req.prompt is not None:
            body["request"]["prompt"] = req.prompt
    ok = "true" if resp.ok else "false"
    return ('{"key":"' + key + '","ok":' + ok + "," + dumps(body)[1:] + "\n").encode("utf-8")


def _response_from(rec: dict[str, Any]) -> ChatResponse:
    return ChatResponse(
        text=rec["text"],
        prompt_tokens=rec.get("prompt_tokens", 0),
        completion_tokens=rec.get("completion_tokens", 0),
        seconds=rec.get("seconds", 0.0),
        finish_reason=rec.get("finish_reason"),
        error=None,
        attempts=rec.get("attempts", 1),
        cached=True,
    )


def _scan_lines(path: Path, start: int = 0) -> Iterator[tuple[int, bytes | None, int]]:
    """Yield ``(offset, line, length)`` for each complete line from ``start``; a final ``(offset, None, 0)`` marks
    where the complete lines end (a truncated last line starts there)."""
    with open(path, "rb") as fh:
        fh.seek(start)
        pos = start
        rest = b""
        while True:
            block = fh.read(_READ_BLOCK)
            if not block:
                break
            data = rest + block if rest else block
            begin = 0
            while True:
                nl = data.find(b"\n", begin)
                if nl < 0:
                    break
                yield pos + begin, data[begin:nl], nl - begin + 1
                begin = nl + 1
            pos += begin
            rest = data[begin:]
        yield pos, None, 0


def _fast_entry(line: bytes) -> tuple[str, bool] | None:
    """(key, ok) from a record line's fixed-width prefix, or None when the line is not a record."""
    if len(line) < _MIN_LINE or not line.startswith(_PREFIX) or line[_KEY_END:_OK_AT] != _OK_FIELD:
        return None
    flag = line[_OK_AT : _OK_AT + 1]
    if flag not in (b"t", b"f") or not line.endswith(b"}"):
        return None
    try:
        return line[len(_PREFIX) : _KEY_END].decode("ascii"), flag == b"t"
    except UnicodeDecodeError:
        return None


def _segments(cache_dir: Path) -> list[Path]:
    try:
        with os.scandir(cache_dir) as it:
            names = sorted(e.name for e in it if e.name.endswith(SEGMENT_SUFFIX) and e.is_file())
    except FileNotFoundError:
        return []
    return [cache_dir / n for n in names]


def _new_segment_name(kind: str = "seg") -> str:
    host = "".join(c if c.isalnum() or c in "-_" else "_" for c in socket.gethostname())[:40] or "host"
    return f"{kind}-{host}-{os.getpid()}-{secrets.token_hex(4)}{SEGMENT_SUFFIX}"


# ---------------------------------------------------------------------------------------------- stats


@dataclass
class CacheStats:
    """What one :class:`CachedBackend` did: hits, misses, backend calls and their outcome and tokens."""

    requests: int = 0
    hits: int = 0  # served from the cache
    misses: int = 0  # not in the cache (failed earlier, or never asked)
    duplicates: int = 0  # repeated keys within a batch, answered by the one call made for the first
    calls: int = 0  # requests sent to the backend
    failures: int = 0  # of those, failed after the backend's retries
    attempts: int = 0  # HTTP/model attempts the backend reported (>= calls)
    prompt_tokens: int = 0  # of the calls made (hits cost nothing)
    completion_tokens: int = 0
    call_seconds: float = 0.0  # sum of the calls' own durations
    corrupt: int = 0  # unreadable lines met in the cache

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# -------------------------------------------------------------------------------------------- backend


class CachedBackend(Backend):
    """Wrap ``backend`` with the on-disk cache in ``cache_dir`` (None: nothing stored); itself a
    :class:`~instag.llm.base.Backend` that delegates every capability to the wrapped one.

    ``namespace``: part of every key (stages pass their prompt template's hash). ``guard``: an optional
    :class:`instag.llm.cost.SpendGuard`. ``chunk_size``: misses per backend call when the backend cannot report
    responses one by one (or when a guard is set); ``None`` = the largest of 32, twice the backend's
    ``concurrency`` and its ``batch_size``, or all at once for a backend that streams and no guard. ``fsync``:
    sync the segment at the end of each ``generate`` call.
    """

    streams = True  # generate() takes on_response

    def __init__(
        self,
        backend: Backend,
        cache_dir: str | os.PathLike | None,
        *,
        namespace: str = "",
        guard: Any = None,
        chunk_size: int | None = None,
        fsync: bool = True,
    ):
        self.backend = backend
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.namespace = namespace
        self.guard = guard
        self.fsync = fsync
        self._streams = backend.streams
        if chunk_size is None:
            concurrency = int(backend.concurrency or 0)
            batch = int(backend.batch_size or 0)
            chunk_size = max(32, 2 * concurrency, batch) if (guard is not None or not self._streams) else 0
        self.chunk_size = int(chunk_size)
        self.stats = CacheStats()
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._own: str | None = None  # our segment's file name
        self._reset_index()

    # identity delegates to the wrapped backend
    @property
    def name(self) -> str:
        return self.backend.name

    @property
    def model(self) -> str:
        return self.backend.model

    @property
    def revision(self) -> str:
        return self.backend.revision

    @property
    def engine(self) -> str:
        return self.backend.engine

    @property
    def reported_model(self) -> str | None:
        return self.backend.reported_model

    @property
    def paid(self) -> bool:  # type: ignore[override]
        return self.backend.paid

    @property
    def raw_prompts(self) -> bool:  # type: ignore[override]
        return self.backend.raw_prompts

    @property
    def small_model(self) -> bool:  # type: ignore[override]
        return self.backend.small_model

    def info(self) -> dict[str, Any]:
        return self.backend.info()

    def count_tokens(self, text: str) -> int:
        return self.backend.count_tokens(text)

    def truncate_text(self, text: str, max_tokens: int) -> tuple[str, bool]:
        return self.backend.truncate_text(text, max_tokens)

    def render(self, messages: list[dict[str, str]]) -> str:
        return self.backend.render(messages)

    def call_stats(self) -> dict[str, Any]:
        return self.stats.as_dict()

    def _ident(self) -> dict[str, Any]:
        ident = {"backend": self.name, "model": self.model, "revision": self.revision, "namespace": self.namespace}
        served = self.backend.reported_model
        if served:
            ident["served_model"] = served
        return ident

    # ------------------------------------------------------------------ index
    def _reset_index(self) -> None:
        self._seg_names: list[str] = []
        self._seg_pos: dict[str, tuple[int, int]] = {}  # name -> (segment index, bytes indexed)
        self._ok: dict[str, tuple[int, int, int]] = {}  # key -> (segment index, offset, length)

    def refresh(self) -> None:
        """Index segments and lines that other writers added since the last look."""
        if self.cache_dir is None:
            return
        for path in _segments(self.cache_dir):
            name = path.name
            seg = self._seg_pos.get(name)
            if seg is None:
                seg = (len(self._seg_names), 0)
                self._seg_names.append(name)
            idx, start = seg
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            if size <= start:
                self._seg_pos[name] = seg
                continue
            end = start
            ok_index = self._ok
            for offset, line, length in _scan_lines(path, start):
                if line is None:
                    end = offset
                    break
                entry = _fast_entry(line)
                if entry is None:
                    self.stats.corrupt += 1
                    continue
                if entry[1] and entry[0] not in ok_index:
                    ok_index[entry[0]] = (idx, offset, length)
            self._seg_pos[name] = (idx, end)

    def __len__(self) -> int:
        return len(self._ok)

    def key(self, request: ChatRequest) -> str:
        """The cache key of ``request`` under this backend and namespace."""
        return _KeyMaker(self.name, self.model, self.revision, self.namespace)(request)

    def lookup(self, requests: Sequence[ChatRequest]) -> list[ChatResponse | None]:
        """The cached successful response of each request (``cached=True``), or None: no backend call."""
        self.refresh()
        out: list[ChatResponse | None] = [None] * len(requests)
        keymaker = _KeyMaker(self.name, self.model, self.revision, self.namespace)  # one for all: params once
        wanted = {i: key for i, key in ((i, keymaker(r)) for i, r in enumerate(requests)) if key in self._ok}
        if wanted:
            self._read_hits(wanted, out)
        return out

    def _read_hits(self, wanted: dict[int, str], out: list[ChatResponse | None]) -> list[int]:
        """Fill ``out`` for indices whose key has a success; return the indices that could not be read."""
        by_seg: dict[int, list[tuple[int, str, int, int]]] = {}
        for i, key in wanted.items():
            seg, off, length = self._ok[key]
            by_seg.setdefault(seg, []).append((i, key, off, length))
        bad: list[int] = []
        for seg, items in by_seg.items():
            name = self._seg_names[seg]
            try:
                fd = os.open(self.cache_dir / name, os.O_RDONLY)
            except FileNotFoundError:  # compacted away meanwhile
                bad.extend(i for i, *_ in items)
                continue
            try:
                items.sort(key=lambda t: t[2])
                for i, key, off, length in items:
                    try:
                        rec = json.loads(os.pread(fd, length, off))
                        if rec.get("key") != key or rec.get("ok") is not True or not isinstance(rec.get("text"), str):
                            raise ValueError("record does not match its index entry")
                        out[i] = _response_from(rec)
                    except ValueError:
                        self.stats.corrupt += 1
                        log.warning("cache %s: unreadable record at %s:%d; asking again", self.cache_dir, name, off)
                        del self._ok[key]
                        bad.append(i)
            finally:
                os.close(fd)
        return bad

    # ------------------------------------------------------------------ writing
    def _write(self, key: str, resp: ChatResponse, req: ChatRequest) -> None:
        if self.cache_dir is None:
            return
        line = _record_line(key, resp, self._ident(), None if resp.ok else req)
        with self._lock:
            if self._fd is not None and os.fstat(self._fd).st_nlink == 0:  # our segment was compacted away
                os.close(self._fd)
                self._fd = None
            if self._fd is None:
                name = _new_segment_name()
                self._fd = os.open(self.cache_dir / name, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_EXCL, 0o644)
                self._own = name
                self._seg_pos[name] = (len(self._seg_names), 0)
                self._seg_names.append(name)
            idx, offset = self._seg_pos[self._own]
            view = memoryview(line)
            while view:
                view = view[os.write(self._fd, view) :]
            # our own lines are indexed as written; refresh() then finds nothing new in our segment
            self._seg_pos[self._own] = (idx, offset + len(line))
            if resp.ok and key not in self._ok:
                self._ok[key] = (idx, offset, len(line))

    def _sync(self) -> None:
        with self._lock:
            if self._fd is not None and self.fsync:
                os.fsync(self._fd)

    # ------------------------------------------------------------------ generate
    def generate(
        self,
        requests: Sequence[ChatRequest],
        progress: ProgressFn | None = None,
        on_response: OnResponse | None = None,
    ) -> list[ChatResponse]:
        """Answer every request, from the cache where it holds a success, else from the backend (written as
        each response arrives). ``on_response(index, response)`` is called for every request, hits first."""
        self.refresh()
        n = len(requests)
        st = self.stats
        st.requests += n
        keymaker = _KeyMaker(self.name, self.model, self.revision, self.namespace)
        keys = [keymaker(r) for r in requests]
        out: list[ChatResponse | None] = [None] * n
        hits: dict[int, str] = {}
        first: dict[str, int] = {}  # key -> first index of a miss
        dups: list[tuple[int, int]] = []
        for i, key in enumerate(keys):
            if key in self._ok:
                hits[i] = key
            elif key in first:
                dups.append((i, first[key]))
            else:
                first[key] = i
        bad = self._read_hits(hits, out) if hits else []
        if bad:  # a segment vanished (compaction) or a record was unreadable: re-index, look again
            self._reset_index()
            self.refresh()
            retry = {i: keys[i] for i in bad if keys[i] in self._ok}
            still = self._read_hits(retry, out) if retry else []
            for i in [*still, *(i for i in bad if i not in retry)]:
                if keys[i] in first:
                    dups.append((i, first[keys[i]]))
                else:
                    first[keys[i]] = i
            dups.sort()
        n_hits = sum(1 for i in hits if out[i] is not None)
        st.hits += n_hits
        if on_response is not None:
            for i in hits:
                if out[i] is not None:
                    on_response(i, out[i])
        if progress is not None and n_hits:
            progress(n_hits)
        misses = sorted(first.values())
        st.misses += len(misses) + len(dups)
        st.duplicates += len(dups)
        try:
            if misses:
                self._call(requests, keys, misses, out, progress, on_response)
        finally:
            self._sync()
        for i, j in dups:
            src = out[j]
            out[i] = ChatResponse(**{**asdict(src), "cached": True}) if src is not None else None
            if on_response is not None and out[i] is not None:
                on_response(i, out[i])
        if progress is not None and dups:
            progress(len(dups))
        return out  # type: ignore[return-value]

    def _call(self, requests, keys, misses, out, progress, on_response) -> None:
        st = self.stats
        guard = self.guard
        size = self.chunk_size or len(misses)
        start = 0
        while start < len(misses):
            chunk = misses[start : start + size]
            if guard is not None:
                fit = guard.admit([requests[i] for i in chunk])
                if fit <= 0:
                    guard.exceeded(len(misses) - start)
                chunk = chunk[:fit]
            done: set[int] = set()

            def record(j: int, resp: ChatResponse, chunk=chunk, done=done) -> None:
                if j in done:
                    return
                done.add(j)
                i = chunk[j]
                resp.cached = False
                self._write(keys[i], resp, requests[i])
                out[i] = resp
                st.calls += 1
                st.attempts += resp.attempts
                st.prompt_tokens += resp.prompt_tokens
                st.completion_tokens += resp.completion_tokens
                st.call_seconds += resp.seconds
                if not resp.ok:
                    st.failures += 1
                if guard is not None:
                    guard.charge(resp.prompt_tokens, resp.completion_tokens)
                if on_response is not None:
                    on_response(i, resp)

            sub = [requests[i] for i in chunk]
            if self._streams:

                def one(j: int, resp: ChatResponse, record=record) -> None:
                    record(j, resp)
                    if progress is not None:
                        progress(1)

                responses = self.backend.generate(sub, None, on_response=one)
            else:
                responses = self.backend.generate(sub, progress)
            if len(responses) != len(sub):
                raise RuntimeError(f"backend {self.name} returned {len(responses)} responses for {len(sub)} requests")
            for j, resp in enumerate(responses):
                if j not in done:
                    record(j, resp)
            start += len(chunk)  # with a guard, a cut chunk is followed by a new admit at the real spend

    def close(self) -> None:
        """Sync and close our segment, then close the wrapped backend."""
        with self._lock:
            if self._fd is not None:
                if self.fsync:
                    os.fsync(self._fd)
                os.close(self._fd)
                self._fd = None
        self.backend.close()

    def __enter__(self) -> CachedBackend:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ------------------------------------------------------------------------------------ maintenance


def iter_records(cache_dir: str | os.PathLike) -> Iterator[tuple[str, int, dict | None]]:
    """Yield ``(segment name, offset, record)`` for every line of every segment; ``record`` is None for a line
    that is not a record (and for a truncated last line, reported with offset -1 - its offset)."""
    for path in _segments(Path(cache_dir)):
        for offset, line, _length in _scan_lines(path):
            if line is None:
                if offset < path.stat().st_size:
                    yield path.name, -1 - offset, None
                break
            try:
                rec = json.loads(line) if _fast_entry(line) is not None else None
            except ValueError:
                rec = None
            yield path.name, offset, rec


def cache_stats(cache_dir: str | os.PathLike) -> dict[str, Any]:
    """Counts over a cache directory: segments, records, distinct keys, keys that only failed, corrupt lines,
    truncated tails, and the tokens of every recorded call, per model."""
    cache_dir = Path(cache_dir)
    segs = _segments(cache_dir)
    out: dict[str, Any] = {
        "cache_dir": str(cache_dir),
        "segments": len(segs),
        "bytes": sum(p.stat().st_size for p in segs if p.exists()),
        "records": 0,
        "ok_records": 0,
        "failed_records": 0,
        "corrupt_lines": 0,
        "truncated_tails": 0,
        "keys": 0,
        "ok_keys": 0,
        "failed_keys": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "by_model": {},
    }
    ok_keys: set[str] = set()
    failed: set[str] = set()
    for _name, offset, rec in iter_records(cache_dir):
        if rec is None:
            out["truncated_tails" if offset < 0 else "corrupt_lines"] += 1
            continue
        out["records"] += 1
        if rec["ok"]:
            out["ok_records"] += 1
            ok_keys.add(rec["key"])
        else:
            out["failed_records"] += 1
            failed.add(rec["key"])
        pt, ct = int(rec.get("prompt_tokens") or 0), int(rec.get("completion_tokens") or 0)
        out["prompt_tokens"] += pt
        out["completion_tokens"] += ct
        m = out["by_model"].setdefault(
            f"{rec.get('backend')}:{rec.get('model')}", {"records": 0, "prompt_tokens": 0, "completion_tokens": 0}
        )
        m["records"] += 1
        m["prompt_tokens"] += pt
        m["completion_tokens"] += ct
    out["ok_keys"] = len(ok_keys)
    out["failed_keys"] = len(failed - ok_keys)
    out["keys"] = len(ok_keys | failed)
    return out


def failed_entries(cache_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The latest failure record of every key that has no success, oldest first (key, error, raw text, request)."""
    latest: dict[str, dict] = {}
    ok: set[str] = set()
    for _name, _offset, rec in iter_records(cache_dir):
        if rec is None:
            continue
        if rec["ok"]:
            ok.add(rec["key"])
        elif rec["key"] not in latest or rec.get("t", 0) >= latest[rec["key"]].get("t", 0):
            latest[rec["key"]] = rec
    return sorted((r for k, r in latest.items() if k not in ok), key=lambda r: r.get("t", 0))


def compact(cache_dir: str | os.PathLike, *, min_age_s: float = 60.0) -> dict[str, Any]:
    """Merge the segments not modified for ``min_age_s`` seconds into one: the first success of each key, or the
    latest failure of a key without one. Run it while no process writes to the cache."""
    cache_dir = Path(cache_dir)
    now = time.time()
    segs = [p for p in _segments(cache_dir) if now - p.stat().st_mtime >= min_age_s]
    result = {
        "segments_in": len(segs),
        "records_in": 0,
        "records_out": 0,
        "corrupt_dropped": 0,
        "bytes_in": sum(p.stat().st_size for p in segs),
        "bytes_out": 0,
        "segment_out": None,
    }
    if len(segs) < 1:
        return result
    chosen: dict[str, bytes] = {}
    ok: set[str] = set()
    for path in segs:
        for _off, line, _len in _scan_lines(path):
            if line is None:
                break
            entry = _fast_entry(line)
            if entry is None:
                result["corrupt_dropped"] += 1
                continue
            result["records_in"] += 1
            key, is_ok = entry
            if is_ok:
                if key not in ok:
                    ok.add(key)
                    chosen[key] = line
            elif key not in ok:
                chosen[key] = line  # later failures replace earlier ones
    name = _new_segment_name("compact")
    tmp = cache_dir / (name + ".tmp")
    with open(tmp, "wb") as fh:
        for line in chosen.values():
            fh.write(line + b"\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, cache_dir / name)
    for path in segs:
        path.unlink(missing_ok=True)
    result.update(records_out=len(chosen), bytes_out=(cache_dir / name).stat().st_size, segment_out=name)
    return result
