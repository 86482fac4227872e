"""Stage `tagging`: open-set tags for every query with an LLM (paper.md §1; ambiguities A1, A2).

Each user turn of a record is tagged on its own with the paper's prompt (``instag/prompts/tagging.txt``, the
query in its ``[begin]``/``[end]`` block) and answered as a JSON list of ``{"tag", "explanation"}`` objects.
Local backends decode under a grammar from ``instag/prompts/tag_schema.json``, whose length bounds make every
output end inside ``max_tokens``.

Per query: parse the first JSON list in the answer (:func:`parse_tags`), keep valid objects (string tag and
explanation, stripped, empty ones dropped, duplicates removed); when nothing valid comes back, ask again up to
``max_retries`` times (repeat index 1, 2, ... at ``retry_temperature``, so a retry is a new sample and its own
cache entry); what still fails is written as ``status: "failed"`` with the raw text and the error.

Output, ``results/tags/raw/<dataset>/shard-<k>.jsonl``, one line per query (user turn), in record order, then
``q``::

    {"id", "dataset", "q", "tags": [{"tag", "explanation"}] | null, "status": "ok" | "failed",
     "error": null | str, "raw": null | str, "backend", "model"}

Shard ``k`` holds records ``k*shard_size .. (k+1)*shard_size - 1`` of ``results/data/<dataset>.jsonl``.
Every call goes through the content-addressed cache (:mod:`instag.llm.cache`; namespace = hash of template and
schema), so a rerun makes no completed call twice and a killed job resumes. Failed calls are never served from
the cache; ``instag tagging retry-failed`` re-asks the failed queries of finished shards with new samples.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import ConfigError, InputError
from .io import atomic_write, dumps, iter_jsonl, read_json, write_json, write_tsv

log = logging.getLogger(__name__)

DEFAULT_SYSTEM = "You are a helpful assistant."  # A1: the paper's prompt goes in the user turn
PLACEHOLDER = "{instruction}"
QUERY_FIELDS = ("query", "instruction", "prompt", "question", "text")  # plain JSONL input, first present wins
CHARS_PER_TOKEN = 4  # truncation for backends without a local tokenizer (API models)
DEFAULT_MODELS = {"embedded": "SmolLM2-135M-Instruct"}  # for the cost table when a spec names no model


# ------------------------------------------------------------------------------------------ settings


@dataclass
class TaggingSettings:
    """Everything that changes a tagging result (config section ``tagging``, minus sharding)."""

    backend: dict = field(default_factory=lambda: {"backend": "embedded"})
    prompt: str = "tagging"  # template name in instag/prompts (without .txt) or a path to a .txt file
    system: str | None = DEFAULT_SYSTEM
    use_schema: bool = True  # send the tag JSON schema (grammar for local backends, structured output for APIs)
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 256
    seed: int | None = None
    max_retries: int = 2
    retry_temperature: float = 0.7
    max_query_tokens: int | None = 2048
    chunk_size: int = 64  # queries per backend call: results are written (and cached) chunk by chunk
    cache_dir: str | None = "cache/llm"
    spend_cap_usd: float | None = None
    prices: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict | None) -> TaggingSettings:
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        for drop in ("shard_size",):  # workflow-only keys
            d.pop(drop, None)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"tagging.{unknown[0]}", f"unknown setting (known: {', '.join(sorted(known))})")
        s = cls(**d)
        if not isinstance(s.backend, dict) or "backend" not in s.backend:
            raise ConfigError("tagging.backend", "a mapping with a 'backend' key, e.g. {backend: embedded}")
        if s.max_retries < 0:
            raise ConfigError("tagging.max_retries", "must be >= 0")
        if s.max_tokens < 1:
            raise ConfigError("tagging.max_tokens", "must be >= 1")
        if s.max_query_tokens is not None and s.max_query_tokens < 1:
            raise ConfigError("tagging.max_query_tokens", "must be >= 1 or null")
        if s.chunk_size < 1:
            raise ConfigError("tagging.chunk_size", "must be >= 1")
        return s


# ------------------------------------------------------------------------------------------ prompt


def load_template(name: str = "tagging") -> str:
    """The prompt template: a packaged one by name, or a file; it must hold ``{instruction}`` exactly once."""
    if name.endswith(".txt") or "/" in name or "\\" in name:
        path = Path(name)
        if not path.is_file():
            raise ConfigError("tagging.prompt", f"template file not found: {path}")
        text = path.read_text(encoding="utf-8")
    else:
        res = resources.files("instag.prompts").joinpath(f"{name}.txt")
        if not res.is_file():
            have = sorted(p.name[:-4] for p in resources.files("instag.prompts").iterdir() if p.name.endswith(".txt"))
            raise ConfigError("tagging.prompt", f"no packaged template {name!r} (have: {', '.join(have)})")
        text = res.read_text(encoding="utf-8")
    if text.count(PLACEHOLDER) != 1:
        raise ConfigError("tagging.prompt", f"the template must contain {PLACEHOLDER} exactly once")
    return text.rstrip("\n")


def load_schema() -> dict:
    """The tag JSON schema (``instag/prompts/tag_schema.json``), without its ``$comment``."""
    text = resources.files("instag.prompts").joinpath("tag_schema.json").read_text(encoding="utf-8")
    return {k: v for k, v in json.loads(text).items() if not k.startswith("$")}


def template_hash(template: str, schema: dict | None) -> str:
    """What the cache namespace is built from: the template text and the schema."""
    payload = json.dumps({"template": template, "schema": schema}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


_MARKER = re.compile(r"\[\s*(begin|end)\s*\]", re.IGNORECASE)


def fence_query(query: str) -> str:
    """The query with any ``[begin]``/``[end]`` marker of its own turned into ``(begin)``/``(end)``, so a query
    cannot close the data block early and pose as instructions; everything else is kept."""
    return _MARKER.sub(lambda m: f"({m.group(1)})", query)


def render_prompt(template: str, query: str) -> str:
    return template.replace(PLACEHOLDER, fence_query(query))


# ------------------------------------------------------------------------------------------ parsing


@dataclass
class Parsed:
    tags: list[dict] | None  # None: nothing usable
    error: str | None = None
    dropped: int = 0  # objects in the list that were not valid tags


def _clean(s: str) -> str:
    return " ".join(s.split())


def _first_list(text: str) -> tuple[Any, str | None]:
    """The first JSON value in ``text`` that is a list (or a tag object / ``{"tags": [...]}`` wrapper)."""
    decoder = json.JSONDecoder()
    first_error = first_list = None
    pos = 0
    while (m := re.compile(r"[\[{]").search(text, pos)) is not None:
        pos = m.start() + 1
        try:
            value, end = decoder.raw_decode(text, m.start())
        except json.JSONDecodeError as exc:
            if first_error is None:
                first_error = f"invalid JSON at character {m.start()}: {exc.msg}"
            continue
        if isinstance(value, dict):
            if "tag" in value:  # one tag object instead of a list of them
                value = [value]
            else:
                lists = [v for v in value.values() if isinstance(v, list)]
                if len(lists) != 1:  # not a wrapper such as {"tags": [...]} (JSON-object modes of APIs)
                    continue
                value = lists[0]
        if isinstance(value, list):
            if any(isinstance(v, dict) for v in value):
                return value, None
            if first_list is None:  # e.g. "[1]" in prose: used only when no list of objects follows
                first_list = value
            pos = end
    if first_list is not None:
        return first_list, None
    return None, first_error or "no JSON list in the answer"


def parse_tags(text: str | None) -> Parsed:
    """Parse a tagging answer: the first JSON list, its valid ``{"tag": str, "explanation": str}`` objects.

    Tags and explanations are stripped (inner whitespace collapsed); an object with a non-string or empty tag
    or a non-string explanation is dropped; a repeated tag (same text) keeps its first explanation. No valid
    object left is an error (the query is retried, then recorded as failed).

    >>> parse_tags('Sure! [{"tag": " Math ", "explanation": "arithmetic"}, {"tag": "Math", "explanation": "x"}]').tags
    [{'tag': 'Math', 'explanation': 'arithmetic'}]
    >>> parse_tags('[{"tag": "Math", "explanation": "cut').error
    'invalid JSON at character 0: Unterminated string starting at'
    """
    if text is None or not text.strip():
        return Parsed(None, "empty answer")
    value, error = _first_list(text)
    if value is None:
        return Parsed(None, error)
    tags, seen, dropped = [], set(), 0
    for item in value:
        if not isinstance(item, dict):
            dropped += 1
            continue
        tag, expl = item.get("tag"), item.get("explanation", "")
        if not isinstance(tag, str) or not isinstance(expl, str) or not _clean(tag):
            dropped += 1
            continue
        tag = _clean(tag)
        if tag in seen:
            continue
        seen.add(tag)
        tags.append({"tag": tag, "explanation": _clean(expl)})
    if not tags:
        why = "empty tag list" if not value else f"no valid tag object among {len(value)} list items"
        return Parsed(None, why, dropped)
    return Parsed(tags, None, dropped)


# ------------------------------------------------------------------------------------------ tagger


def stage_spend(cache_dir: str | Path, guard) -> float:
    """USD spent by every tagging call in the cache with the guard's backend and model (all jobs, all runs).

    Jobs running at the same time each see what was spent when they started, so together they can pass the cap
    by at most what each sends before it looks again (one chunk per job); jobs run one after another cannot.
    """
    from .llm.cache import iter_records

    if not Path(cache_dir).is_dir():
        return 0.0
    pt = ct = 0
    for _seg, _off, rec in iter_records(cache_dir):
        if (
            rec is not None
            and rec.get("backend") == guard.backend
            and rec.get("model") == guard.model
            and str(rec.get("namespace", "")).startswith("tagging:")
        ):
            pt += int(rec.get("prompt_tokens") or 0)
            ct += int(rec.get("completion_tokens") or 0)
    return guard.cost(pt, ct)


@dataclass
class Item:
    """One query to tag."""

    id: str
    dataset: str
    q: int
    text: str


@dataclass
class Counts:
    records: int = 0
    queries: int = 0
    ok: int = 0
    failed: int = 0
    retried: int = 0  # queries that needed more than one attempt
    truncated: int = 0  # queries cut to max_query_tokens
    requests: int = 0  # requests made incl. retries (hits and calls)
    dropped_objects: int = 0  # invalid objects inside otherwise usable answers

    def add(self, other: Counts) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


class Tagger:
    """Builds requests, calls the (cached) backend, parses and retries; see the module docstring."""

    def __init__(self, settings: TaggingSettings, *, backend=None, threads: int | None = None):
        from .llm import CachedBackend, get_backend
        from .llm.base import GenerationParams

        self.settings = s = settings
        self.template = load_template(s.prompt)
        self.schema = load_schema() if s.use_schema else None
        self.namespace = f"tagging:{template_hash(self.template, self.schema)}"
        spec = dict(s.backend)
        if threads and spec["backend"] in ("embedded", "transformers") and "threads" not in spec:
            spec["threads"] = int(threads)
        self.raw_backend = backend if backend is not None else get_backend(spec)
        self.lookup_hits = 0
        guard = None
        if s.spend_cap_usd is not None:
            from .cost import LOCAL_BACKENDS, SpendGuard

            if self.raw_backend.name not in LOCAL_BACKENDS:
                guard = SpendGuard(s.spend_cap_usd, s.prices, self.raw_backend.model, backend=self.raw_backend.name)
                if s.cache_dir:  # the cap is for the stage: count what earlier jobs and runs spent
                    guard.spent_usd = stage_spend(s.cache_dir, guard)
                    log.info("spend so far on %s: $%.4f of $%.4f", guard.model, guard.spent_usd, guard.cap_usd)
        self.guard = guard
        if s.cache_dir:
            self.backend = CachedBackend(self.raw_backend, s.cache_dir, namespace=self.namespace, guard=guard)
        else:
            self.backend = self.raw_backend
        self.params = GenerationParams(
            temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_tokens, seed=s.seed, json_schema=self.schema
        )
        retry_t = s.temperature if s.temperature > 0 else s.retry_temperature
        self.retry_params = replace(self.params, temperature=retry_t)
        self._truncate = getattr(self.raw_backend, "truncate_text", None)

    @property
    def stats(self) -> dict:
        st = getattr(self.backend, "stats", None)
        return st.as_dict() if hasattr(st, "as_dict") else dict(st or {})

    def request(self, text: str, attempt: int, meta: dict | None = None):
        from .llm.base import ChatRequest

        messages = [{"role": "system", "content": self.settings.system}] if self.settings.system else []
        messages.append({"role": "user", "content": render_prompt(self.template, text)})
        params = self.params if attempt == 0 else self.retry_params
        return ChatRequest(messages=messages, params=params, repeat=attempt, meta=meta or {})

    def truncate(self, text: str) -> tuple[str, bool]:
        limit = self.settings.max_query_tokens
        if limit is None:
            return text, False
        if self._truncate is not None:
            return self._truncate(text, limit)
        cut = limit * CHARS_PER_TOKEN
        return (text[:cut], True) if len(text) > cut else (text, False)

    def tag(
        self,
        items: list[Item],
        counts: Counts,
        progress: Callable[[int], None] | None = None,
        attempts: Iterable[int] | None = None,
    ) -> list[dict]:
        """Tag ``items`` (one chunk); return their output lines in order."""
        texts = []
        for it in items:
            text, cut = self.truncate(it.text)
            counts.truncated += cut
            texts.append(text)
        attempts = list(range(self.settings.max_retries + 1) if attempts is None else attempts)
        results: list[dict | None] = [None] * len(items)
        last: dict[int, tuple[str | None, str]] = {}
        pending = list(range(len(items)))
        # A query is done when any of its attempts has a cached answer that parses (e.g. attempt 0 failed at the
        # backend and attempt 1 succeeded): take the first such answer, with no call, before asking for the rest.
        for n, attempt in enumerate(attempts):
            if not pending:
                break
            found = self._lookup([self.request(texts[i], attempt) for i in pending])
            still = []
            for i, resp in zip(pending, found, strict=True):
                parsed = parse_tags(resp.text) if resp is not None else None
                if parsed is None or parsed.tags is None:
                    still.append(i)
                    continue
                self.lookup_hits += 1
                counts.requests += 1
                counts.dropped_objects += parsed.dropped
                counts.retried += n > 0
                results[i] = self._line(items[i], parsed.tags, None, None)
            if progress is not None and len(still) < len(pending):
                progress(len(pending) - len(still))
            pending = still
        for n, attempt in enumerate(attempts):
            if not pending:
                break
            reqs = [self.request(texts[i], attempt) for i in pending]
            counts.requests += len(reqs)
            responses = self.backend.generate(reqs, progress if n == 0 else None)
            still = []
            for i, resp in zip(pending, responses, strict=True):
                if resp.error is not None or resp.text is None:
                    last[i] = (resp.text, f"backend: {resp.error or 'no text'}")
                    still.append(i)
                    continue
                parsed = parse_tags(resp.text)
                if parsed.tags is None:
                    why = parsed.error
                    if resp.finish_reason == "length":
                        why += f" (hit max_tokens={reqs[0].params.max_tokens})"
                    last[i] = (resp.text, why)
                    still.append(i)
                    continue
                counts.dropped_objects += parsed.dropped
                counts.retried += n > 0
                results[i] = self._line(items[i], parsed.tags, None, None)
            pending = still
        for i in pending:
            raw, error = last.get(i, (None, "not attempted"))
            attempts_made = len(attempts)
            results[i] = self._line(items[i], None, f"{error} (after {attempts_made} attempts)", raw)
            counts.retried += attempts_made > 1
        for r in results:
            counts.queries += 1
            counts.ok += r["status"] == "ok"
            counts.failed += r["status"] == "failed"
        return results  # type: ignore[return-value]

    def _lookup(self, requests: list) -> list:
        """Cached successful answers of ``requests`` (None where there is none), without any call."""
        lookup = getattr(self.backend, "lookup", None)  # CachedBackend.lookup; a bare backend has no cache
        return lookup(requests) if lookup is not None else [None] * len(requests)

    def _line(self, item: Item, tags, error, raw) -> dict:
        return {
            "id": item.id,
            "dataset": item.dataset,
            "q": item.q,
            "tags": tags,
            "status": "ok" if tags is not None else "failed",
            "error": error,
            "raw": raw if tags is None else None,
            "backend": self.raw_backend.name,
            "model": self.raw_backend.model,
        }

    def close(self) -> None:
        self.backend.close()


# ------------------------------------------------------------------------------------------ inputs


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
        return [Item(str(rid), str(ds), q, str(t)) for q, t in enumerate(texts)]
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


# ------------------------------------------------------------------------------------------ running


def _progress_bar(total: int | None, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="q", file=sys.stderr, dynamic_ncols=True, mininterval=1.0, smoothing=0.1)


def run_items(
    tagger: Tagger, items: Iterable[Item], out, counts: Counts, *, total: int | None = None, desc: str = "tagging"
) -> None:
    """Tag a stream of items chunk by chunk, writing each chunk's lines (in order) to ``out`` as it finishes."""
    chunk: list[Item] = []
    bar = _progress_bar(total, desc)
    try:
        for item in items:
            chunk.append(item)
            if len(chunk) >= tagger.settings.chunk_size:
                _write_lines(out, tagger.tag(chunk, counts, bar.update))
                chunk = []
        if chunk:
            _write_lines(out, tagger.tag(chunk, counts, bar.update))
    finally:
        bar.close()


def _write_lines(out, lines: list[dict]) -> None:
    for line in lines:
        out.write(dumps(line))
        out.write("\n")
    out.flush()


def _summary(tagger: Tagger, counts: Counts, seconds: float, **extra) -> dict:
    st = tagger.stats
    raw = tagger.raw_backend
    summary = {
        **extra,
        **asdict(counts),
        "cache_hits": st.get("hits", 0) + tagger.lookup_hits,
        "calls": st.get("calls", counts.requests if not st else 0),
        "call_failures": st.get("failures", 0),
        "prompt_tokens": st.get("prompt_tokens", 0),
        "completion_tokens": st.get("completion_tokens", 0),
        "call_seconds": round(float(st.get("call_seconds", 0.0)), 3),
        "seconds": round(seconds, 3),
        "queries_per_s": round(counts.queries / seconds, 3) if seconds > 0 else None,
        "backend": raw.name,
        "model": raw.model,
        "revision": raw.revision,
        "engine": getattr(raw, "engine", raw.name),
        "namespace": tagger.namespace,
        "settings": asdict(tagger.settings),  # what `retry-failed` reuses for this file
    }
    if tagger.guard is not None:
        summary["spent_usd"] = round(tagger.guard.spent_usd, 6)
    if counts.failed:
        log.warning("%d of %d queries failed (kept with their raw text)", counts.failed, counts.queries)
    if counts.truncated:
        log.warning("%d queries were cut to %s tokens", counts.truncated, tagger.settings.max_query_tokens)
    return summary


def tag_shard(
    records_path: str | Path,
    out: str | Path,
    summary: str | Path | None,
    shard: int,
    shard_size: int,
    settings: TaggingSettings | dict | None = None,
    *,
    dataset: str | None = None,
    threads: int | None = None,
    backend=None,
) -> dict:
    """Tag shard ``shard`` (records ``shard*shard_size`` onwards) of one records file; write lines and summary."""
    settings = settings if isinstance(settings, TaggingSettings) else TaggingSettings.from_dict(settings)
    if shard < 0 or shard_size < 1:
        raise ConfigError("tagging.shard_size", f"shard {shard} of size {shard_size} is not a valid shard")
    t0 = time.perf_counter()
    records = list(shard_records(records_path, shard, shard_size))  # one shard is held, never the dataset
    if not records and shard > 0:
        raise InputError(records_path, f"shard {shard} of size {shard_size} is past the end of the records")
    items = [it for k, rec in enumerate(records) for it in record_items(rec, records_path, shard * shard_size + k + 1)]
    name = dataset or (records[0].get("dataset") if records else None) or Path(records_path).stem
    counts = Counts(records=len(records))
    tagger = Tagger(settings, backend=backend, threads=threads)
    try:
        with atomic_write(out) as fh:
            run_items(tagger, items, fh, counts, total=len(items), desc=f"{name} shard {shard}")
    finally:
        tagger.close()
    result = _summary(
        tagger,
        counts,
        time.perf_counter() - t0,
        dataset=name,
        shard=shard,
        shard_size=shard_size,
        first_record=shard * shard_size,
    )
    if summary is not None:
        write_json(summary, result)
    log.info(
        "shard %s/%d: %d queries, %d ok, %d failed, %d calls, %d cache hits, %.1f s",
        name,
        shard,
        counts.queries,
        counts.ok,
        counts.failed,
        result["calls"],
        result["cache_hits"],
        result["seconds"],
    )
    return result


def tag_file(
    input_path: str | Path,
    out: str | Path,
    settings: TaggingSettings | dict | None = None,
    *,
    summary: str | Path | None = None,
    dataset: str | None = None,
    threads: int | None = None,
    backend=None,
) -> dict:
    """Standalone tagging of a JSONL file (ingested records, or rows with a query field), streamed."""
    settings = settings if isinstance(settings, TaggingSettings) else TaggingSettings.from_dict(settings)
    t0 = time.perf_counter()
    name = dataset or Path(input_path).name.split(".")[0]
    counts = Counts()

    def items() -> Iterator[Item]:
        for line, rec in iter_jsonl(input_path):
            counts.records += 1
            for it in record_items(rec, input_path, line):
                it.dataset = it.dataset or name
                yield it

    tagger = Tagger(settings, backend=backend, threads=threads)
    try:
        with atomic_write(out) as fh:
            run_items(tagger, items(), fh, counts, total=None, desc=name)
    finally:
        tagger.close()
    result = _summary(tagger, counts, time.perf_counter() - t0, input=str(input_path), out=str(out))
    if summary is not None:
        write_json(summary, result)
    return result


def retry_failed(
    tag_files: list[str | Path],
    records: list[str | Path],
    settings: TaggingSettings | dict | None = None,
    *,
    extra_attempts: int = 2,
    threads: int | None = None,
    backend=None,
) -> dict:
    """Ask again for every failed line of finished tag files and rewrite them in place.

    The usual attempts (0..max_retries) are replayed first (answers already cached cost nothing; calls that
    failed are made again), then ``extra_attempts`` new samples (repeat max_retries+1, ...). Lines that stay
    failed keep their newest raw text and error. Query texts come from ``records`` (the ingested files).

    Without ``settings``, those recorded in the files' summaries (``<file stem>.summary.json``, written by
    ``tag-shard``) are used, so the retry asks the same model with the same prompt; a summary's ok/failed
    counts are updated with the file.
    """
    summaries = {Path(p): Path(p).with_name(Path(p).stem + ".summary.json") for p in tag_files}
    if settings is None:
        recorded = {
            json.dumps(read_json(sp).get("settings"), sort_keys=True) for sp in summaries.values() if sp.is_file()
        }
        recorded.discard("null")
        if len(recorded) > 1:
            raise ConfigError("tagging", "the tag files were made with different settings: retry them separately")
        settings = json.loads(recorded.pop()) if recorded else None
        if settings is not None:
            log.info("retrying with the settings recorded in the summaries")
    settings = settings if isinstance(settings, TaggingSettings) else TaggingSettings.from_dict(settings)
    failed: dict[str, list[tuple[Path, int, dict]]] = {}
    contents: dict[Path, list[dict]] = {}
    for p in map(Path, tag_files):
        lines = [rec for _, rec in iter_jsonl(p)]
        contents[p] = lines
        for k, rec in enumerate(lines):
            if rec.get("status") != "ok":
                failed.setdefault(rec["id"], []).append((p, k, rec))
    n_failed = sum(len(v) for v in failed.values())
    result = {"files": len(contents), "failed_before": n_failed, "recovered": 0, "failed_after": n_failed}
    if not failed:
        return result
    texts: dict[tuple[str, int], str] = {}
    for rp in records:
        for line, rec in iter_jsonl(rp):
            if rec.get("id") in failed:
                for it in record_items(rec, rp, line):
                    texts[(it.id, it.q)] = it.text
    items, where = [], []
    for rid, entries in failed.items():
        for p, k, rec in entries:
            key = (rid, int(rec["q"]))
            if key not in texts:
                raise InputError(p, f"failed line for {rid} query {rec['q']} has no record in the records files", k + 1)
            items.append(Item(rid, rec["dataset"], int(rec["q"]), texts[key]))
            where.append((p, k))
    counts = Counts()
    tagger = Tagger(settings, backend=backend, threads=threads)
    attempts = range(settings.max_retries + 1 + max(0, extra_attempts))
    try:
        bar = _progress_bar(len(items), "retry")
        new_lines = []
        for i in range(0, len(items), settings.chunk_size):
            new_lines += tagger.tag(items[i : i + settings.chunk_size], counts, bar.update, attempts=attempts)
        bar.close()
    finally:
        tagger.close()
    for (p, k), line in zip(where, new_lines, strict=True):
        contents[p][k] = line
    for p, lines in contents.items():
        with atomic_write(p) as fh:
            _write_lines(fh, lines)
        sp = summaries[p]
        if sp.is_file():
            summ = read_json(sp)
            summ["ok"] = sum(x["status"] == "ok" for x in lines)
            summ["failed"] = len(lines) - summ["ok"]
            summ["retry_failed_runs"] = summ.get("retry_failed_runs", 0) + 1
            write_json(sp, summ)
    result.update(
        recovered=counts.ok,
        failed_after=counts.failed,
        calls=tagger.stats.get("calls"),
        cache_hits=tagger.stats.get("hits", 0) + tagger.lookup_hits,
    )
    return result


# ------------------------------------------------------------------------------------------ tables


SUM_FIELDS = (
    "records",
    "queries",
    "ok",
    "failed",
    "retried",
    "truncated",
    "requests",
    "dropped_objects",
    "cache_hits",
    "calls",
    "call_failures",
    "prompt_tokens",
    "completion_tokens",
    "call_seconds",
    "seconds",
)


def summarize(summary_files: list[str | Path], out: str | Path) -> list[dict]:
    """Gather shard summaries into one TSV: a row per dataset (shards summed) and a final ``all`` row."""
    per: dict[str, dict] = {}
    for path in summary_files:
        s = read_json(path)
        row = per.setdefault(s["dataset"], {"dataset": s["dataset"], "shards": 0, **{f: 0 for f in SUM_FIELDS}})
        row["shards"] += 1
        for f in SUM_FIELDS:
            row[f] += s.get(f) or 0
        for f in ("backend", "model", "revision", "engine"):
            row.setdefault(f, s.get(f))
    rows = list(per.values())
    total = {
        "dataset": "all",
        "shards": sum(r["shards"] for r in rows),
        **{f: sum(r[f] for r in rows) for f in SUM_FIELDS},
    }
    if rows:
        for f in ("backend", "model", "revision", "engine"):
            total[f] = rows[0][f] if len({r[f] for r in rows}) == 1 else "mixed"
    rows.append(total)
    for r in rows:
        r["ok_share"] = round(r["ok"] / r["queries"], 4) if r["queries"] else None
        r["queries_per_s"] = round(r["queries"] / r["seconds"], 3) if r["seconds"] else None
    cols = [
        "dataset",
        "shards",
        "records",
        "queries",
        "ok",
        "failed",
        "ok_share",
        "retried",
        "truncated",
        "requests",
        "cache_hits",
        "calls",
        "call_failures",
        "dropped_objects",
        "prompt_tokens",
        "completion_tokens",
        "call_seconds",
        "seconds",
        "queries_per_s",
        "backend",
        "model",
        "revision",
        "engine",
    ]
    write_tsv(out, rows, cols)
    return rows


def estimate(
    records_files: list[str | Path], out: str | Path, settings: TaggingSettings | dict | None = None
) -> list[dict]:
    """Before any call: requests, estimated tokens and cost per dataset, at the configured prices.

    Prompt tokens are estimated from the rendered messages (queries cut at ``max_query_tokens`` x 4 chars);
    completion tokens as ``max_tokens`` per request (an upper bound); ``max_requests`` counts every retry.
    Local backends cost 0. A paid backend whose model has no price fails here, before anything is sent.
    """
    from .cost import estimate_cost, estimate_prompt_tokens

    s = settings if isinstance(settings, TaggingSettings) else TaggingSettings.from_dict(settings)
    template = load_template(s.prompt)
    backend = s.backend["backend"]
    model = str(s.backend.get("model") or DEFAULT_MODELS.get(backend, backend))
    cap = None if s.max_query_tokens is None else s.max_query_tokens * CHARS_PER_TOKEN
    rows = []
    for path in records_files:
        n = pt = 0
        ds = Path(path).name.split(".")[0]
        for line, rec in iter_jsonl(path):
            for it in record_items(rec, path, line):
                text = it.text if cap is None else it.text[:cap]
                msgs = ([{"role": "system", "content": s.system}] if s.system else []) + [
                    {"role": "user", "content": render_prompt(template, text)}
                ]
                n += 1
                pt += estimate_prompt_tokens(msgs)
        row = {"dataset": ds, **estimate_cost(n, pt, n * s.max_tokens, model, s.prices, backend)}
        row["max_requests"] = n * (s.max_retries + 1)
        rows.append(row)
    total = {"dataset": "all", "backend": backend, "model": model}
    for f in ("requests", "prompt_tokens", "completion_tokens", "usd", "max_requests"):
        total[f] = sum(r[f] for r in rows)
    if rows:
        total["usd_per_1m_prompt"], total["usd_per_1m_completion"] = (
            rows[0]["usd_per_1m_prompt"],
            rows[0]["usd_per_1m_completion"],
        )
    total["usd"] = round(total["usd"], 6)
    total["spend_cap_usd"] = s.spend_cap_usd
    rows.append(total)
    cols = [
        "dataset",
        "backend",
        "model",
        "requests",
        "max_requests",
        "prompt_tokens",
        "completion_tokens",
        "usd_per_1m_prompt",
        "usd_per_1m_completion",
        "usd",
        "spend_cap_usd",
    ]
    write_tsv(out, rows, cols)
    return rows


# ------------------------------------------------------------------------------------------ CLI


def _settings_from_args(args, recorded_ok: bool = False) -> TaggingSettings | None:
    """Settings from --settings-json, --backend-json and single flags; with ``recorded_ok`` and none of them
    given, None (the caller then uses the settings recorded with the files)."""
    keys = ("prompt", "max_retries", "max_tokens", "temperature", "cache_dir", "max_query_tokens", "chunk_size")
    given = args.settings_json or args.backend_json or getattr(args, "no_cache", False)
    if recorded_ok and not given and all(getattr(args, k, None) is None for k in keys):
        return None
    d = json.loads(args.settings_json) if args.settings_json else {}
    if not isinstance(d, dict):
        raise ConfigError("tagging", "--settings-json must be a JSON object")
    if args.backend_json:
        d["backend"] = json.loads(args.backend_json)
    for key in keys:
        value = getattr(args, key, None)
        if value is not None:
            d[key] = value
    if getattr(args, "no_cache", False):
        d["cache_dir"] = None
    return TaggingSettings.from_dict(d)


def _common(p) -> None:
    p.add_argument(
        "--settings-json",
        default=None,
        help="the config's tagging section as JSON (backend, prompt, decoding, retries, cache_dir, ...)",
    )
    p.add_argument(
        "--backend-json",
        default=None,
        help='backend spec, e.g. \'{"backend": "openai", "model": "gpt-3.5-turbo"}\' (default: embedded)',
    )
    p.add_argument("--prompt", default=None, help="template name in instag/prompts or a .txt file (default tagging)")
    p.add_argument("--max-retries", type=int, default=None, help="extra attempts for unparseable answers (default 2)")
    p.add_argument("--max-tokens", type=int, default=None, help="generated tokens per answer (default 256)")
    p.add_argument("--temperature", type=float, default=None, help="first attempt's temperature (default 0)")
    p.add_argument("--max-query-tokens", type=int, default=None, help="cut longer queries (default 2048)")
    p.add_argument("--chunk-size", type=int, default=None, help="queries per backend call (default 64)")
    p.add_argument("--cache-dir", default=None, help="LLM call cache (default cache/llm)")
    p.add_argument("--no-cache", action="store_true", help="call the model for every query")
    p.add_argument("--threads", type=int, default=None, help="CPU threads of a local backend")


def add_cli(sub) -> None:
    p = sub.add_parser(
        "tagging",
        help="tag every query with an LLM (open-set tags)",
        description="Tag queries with the InsTag prompt; every call is cached.",
    )
    acts = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    _add_tag_parser(sub, "tag", "tag queries of a JSONL file with an LLM (= instag tagging tag)")

    a = acts.add_parser(
        "tag-shard",
        help="tag one shard of an ingested dataset",
        description="Tag records shard*shard_size.. of a records file; write lines and a summary.",
    )
    a.add_argument("--records", required=True, help="results/data/<dataset>.jsonl")
    a.add_argument("--out", required=True, help="tag lines JSONL to write")
    a.add_argument("--summary", default=None, help="summary JSON to write")
    a.add_argument("--shard", type=int, required=True, help="shard index (0-based)")
    a.add_argument("--shard-size", type=int, required=True, help="records per shard")
    a.add_argument("--dataset", default=None, help="dataset name (default: from the records)")
    _common(a)
    a.set_defaults(
        func=lambda args: tag_shard(
            args.records,
            args.out,
            args.summary,
            args.shard,
            args.shard_size,
            _settings_from_args(args),
            dataset=args.dataset,
            threads=args.threads,
        )
    )

    _add_tag_parser(acts, "tag", "tag a JSONL file on its own (no workflow)")

    r = acts.add_parser(
        "retry-failed",
        help="ask again for the failed queries of finished tag files",
        description="Rewrite tag files in place, re-asking every failed line (new samples). Without settings "
        "options, the settings recorded in each file's .summary.json (written by tag-shard) are used.",
    )
    r.add_argument("tags", nargs="+", help="tag line files (e.g. results/tags/raw/*/shard-*.jsonl)")
    r.add_argument("--records", nargs="+", required=True, help="the records files the queries come from")
    r.add_argument("--extra-attempts", type=int, default=2, help="new samples beyond max_retries (default 2)")
    _common(r)
    r.set_defaults(
        func=lambda args: retry_failed(
            args.tags,
            args.records,
            _settings_from_args(args, recorded_ok=True),
            extra_attempts=args.extra_attempts,
            threads=args.threads,
        )
    )

    s = acts.add_parser(
        "summarize",
        help="gather shard summaries into tagging.tsv",
        description="One row per dataset (shards summed) and an 'all' row.",
    )
    s.add_argument("summaries", nargs="+", help="summary JSON files from tag-shard")
    s.add_argument("--out", required=True, help="TSV to write")
    s.set_defaults(func=lambda args: summarize(args.summaries, args.out))

    e = acts.add_parser(
        "estimate-cost",
        help="requests, tokens and cost before tagging",
        description="Write the cost estimate TSV and print it (local backends cost 0).",
    )
    e.add_argument("records", nargs="+", help="records files to be tagged")
    e.add_argument("--out", required=True, help="TSV to write")
    e.add_argument("--settings-json", default=None, help="the config's tagging section as JSON")
    e.add_argument("--backend-json", default=None, help="backend spec JSON")
    e.set_defaults(func=_estimate_cli)


def _add_tag_parser(parent, name: str, help_text: str) -> None:
    t = parent.add_parser(
        name,
        help=help_text,
        description="Tag every query of a JSONL file: ingested records ({id, turns}) or rows with "
        f"one of the fields {', '.join(QUERY_FIELDS)}. Writes one line per query. Rerunning "
        "answers from the cache and asks again only for what failed.",
    )
    t.add_argument("input", help="input JSONL")
    t.add_argument("--out", required=True, help="tag lines JSONL to write")
    t.add_argument("--summary", default=None, help="summary JSON to write")
    t.add_argument("--dataset", default=None, help="dataset name for rows without one (default: file name)")
    _common(t)
    t.set_defaults(
        func=lambda args: tag_file(
            args.input,
            args.out,
            _settings_from_args(args),
            summary=args.summary,
            dataset=args.dataset,
            threads=args.threads,
        )
    )


def _estimate_cli(args) -> None:
    d = json.loads(args.settings_json) if args.settings_json else {}
    if args.backend_json:
        d["backend"] = json.loads(args.backend_json)
    rows = estimate(args.records, args.out, d)
    cols = ["dataset", "requests", "max_requests", "prompt_tokens", "completion_tokens", "usd"]
    widths = [max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols]
    total = rows[-1]
    print(f"tagging cost estimate ({total['backend']} {total['model']}; completion = max_tokens, an upper bound):")
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    for r in rows:
        print("  ".join(str(r.get(c, "")).ljust(w) for c, w in zip(cols, widths, strict=True)))
    if total.get("spend_cap_usd") is not None:
        print(f"spend cap for the tagging stage: ${total['spend_cap_usd']}")
    return None
