"""Running the tagger: a shard of a records file, a standalone file, a retry of failed lines; the shard
summaries gathered into ``tagging.tsv``; the cost estimate before any call.

Summaries and tables hold counts, never timings (timings go to the log), so the same config and seed give
byte-identical files.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict
from pathlib import Path

from ..errors import ConfigError, InputError
from ..io import iter_jsonl, read_json, write_json, write_tsv
from ..llm.base import CHARS_PER_TOKEN
from ..llm.job import LLMJob
from ..records import TAG_LINE
from .items import Item, blank_reason, record_items, shard_records
from .prompt import build_request, load_schema, load_template
from .settings import TaggingSettings
from .tagger import Counts, Tagger

log = logging.getLogger(__name__)


def _progress_bar(total: int | None, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="q", file=sys.stderr, dynamic_ncols=True, mininterval=1.0, smoothing=0.1)


def run_items(
    tagger: Tagger,
    items: Iterable[Item],
    write: Callable[[dict], None],
    counts: Counts,
    *,
    total: int | None = None,
    desc: str = "tagging",
) -> None:
    """Tag a stream of items chunk by chunk, passing each chunk's lines (in order) to ``write`` as it finishes."""
    chunk: list[Item] = []
    bar = _progress_bar(total, desc)
    try:
        for item in items:
            chunk.append(item)
            if len(chunk) >= tagger.settings.chunk_size:
                for line in tagger.tag(chunk, counts, bar.update):
                    write(line)
                chunk = []
        if chunk:
            for line in tagger.tag(chunk, counts, bar.update):
                write(line)
    finally:
        bar.close()


def _summary(tagger: Tagger, counts: Counts, seconds: float, **extra) -> dict:
    st = tagger.stats
    info = tagger.job.backend_info
    summary = {
        **extra,
        **asdict(counts),
        "requests": st.get("requests", 0),
        "cache_hits": st.get("hits", 0),
        "calls": st.get("calls", 0),
        "call_failures": st.get("failures", 0),
        "prompt_tokens": st.get("prompt_tokens", 0),
        "completion_tokens": st.get("completion_tokens", 0),
        "usd": tagger.job.usd(),
        "backend": info["backend"],
        "model": info["model"],
        "revision": info["revision"],
        "engine": info["engine"],
        "prompt": tagger.prompt,
        "namespace": tagger.namespace,
        "settings": asdict(tagger.settings),  # what `retry-failed` reuses for this file
    }
    qps = counts.queries / seconds if seconds > 0 else 0.0
    log.info(
        "%d queries (%d ok, %d failed, %d rejected), %d calls, %d cache hits in %.1f s (%.2f queries/s, "
        "%.1f s in calls)",
        counts.queries,
        counts.ok,
        counts.failed,
        counts.rejected,
        summary["calls"],
        summary["cache_hits"],
        seconds,
        qps,
        st.get("call_seconds", 0.0),
    )
    if counts.failed:
        log.warning("%d of %d queries failed (kept with their raw text)", counts.failed, counts.queries)
    if counts.rejected:
        log.warning("%d queries rejected as empty or invisible (kept with the reason)", counts.rejected)
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
    settings = TaggingSettings.coerce(settings)
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
        with TAG_LINE.writer(out) as write:
            run_items(tagger, items, write, counts, total=len(items), desc=f"{name} shard {shard}")
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
    """Standalone tagging of a JSONL file (ingested records, or rows with a query field), streamed.

    Without a configured prompt, the backend's model picks it (``TaggingSettings.prompt_for``): the paper's
    for API models, the zero-shot one for the small embedded model. Empty, whitespace-only and invisible-only
    queries are written as ``rejected`` lines with the reason, and counted."""
    settings = TaggingSettings.coerce(settings)
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
        with TAG_LINE.writer(out) as write:
            run_items(tagger, items(), write, counts, total=None, desc=name)
    finally:
        tagger.close()
    result = _summary(tagger, counts, time.perf_counter() - t0, input=str(input_path), out=str(out))
    if summary is not None:
        write_json(summary, result)
    return result


def _recorded_settings(summaries: dict[Path, Path]) -> dict | None:
    recorded = {json.dumps(read_json(sp).get("settings"), sort_keys=True) for sp in summaries.values() if sp.is_file()}
    recorded.discard("null")
    if len(recorded) > 1:
        raise ConfigError("tagging", "the tag files were made with different settings: retry them separately")
    return json.loads(recorded.pop()) if recorded else None


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
    failed keep their newest raw text and error; rejected lines stay as they are. Query texts come from
    ``records`` (the ingested files).

    Without ``settings``, those recorded in the files' summaries (``<file stem>.summary.json``, written by
    ``tag-shard``) are used, so the retry asks the same model with the same prompt; a summary's ok/failed
    counts are updated with the file.
    """
    summaries = {Path(p): Path(p).with_name(Path(p).stem + ".summary.json") for p in tag_files}
    if settings is None:
        settings = _recorded_settings(summaries)
        if settings is not None:
            log.info("retrying with the settings recorded in the summaries")
    settings = TaggingSettings.coerce(settings)
    failed: dict[str, list[tuple[Path, int, dict]]] = {}
    contents: dict[Path, list[dict]] = {}
    for p in map(Path, tag_files):
        lines = list(TAG_LINE.rows(p))
        contents[p] = lines
        for k, rec in enumerate(lines):
            if rec["status"] == "failed":
                failed.setdefault(rec["id"], []).append((p, k, rec))
    n_failed = sum(len(v) for v in failed.values())
    result = {"files": len(contents), "failed_before": n_failed, "recovered": 0, "failed_after": n_failed}
    if not failed:
        return result
    texts: dict[tuple[str, int], str] = {}
    for rp in records:
        for line, rec in iter_jsonl(rp):
            if isinstance(rec, dict) and rec.get("id") in failed:
                for it in record_items(rec, rp, line):
                    texts[(it.id, it.turn)] = it.text
    items, where = [], []
    for rid, entries in failed.items():
        for p, k, rec in entries:
            key = (rid, int(rec["turn"]))
            if key not in texts:
                raise InputError(
                    p, f"failed line for {rid} turn {rec['turn']} has no record in the records files", k + 1
                )
            items.append(Item(rid, rec.get("dataset", ""), int(rec["turn"]), texts[key]))
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
        TAG_LINE.write(p, lines)
        sp = summaries[p]
        if sp.is_file():
            summ = read_json(sp)
            summ["ok"] = sum(x["status"] == "ok" for x in lines)
            summ["failed"] = sum(x["status"] == "failed" for x in lines)
            summ["retry_failed_runs"] = summ.get("retry_failed_runs", 0) + 1
            write_json(sp, summ)
    st = tagger.stats
    result.update(recovered=counts.ok, failed_after=counts.failed, calls=st.get("calls"), cache_hits=st.get("hits"))
    return result


# ------------------------------------------------------------------------------------------ tables

SUM_FIELDS = (
    "records",
    "queries",
    "ok",
    "failed",
    "rejected",
    "retried",
    "truncated",
    "requests",
    "dropped_objects",
    "cache_hits",
    "calls",
    "call_failures",
    "prompt_tokens",
    "completion_tokens",
)
IDENT_FIELDS = ("backend", "model", "revision", "engine")
TABLE_COLUMNS = [
    "dataset",
    "shards",
    "records",
    "queries",
    "ok",
    "failed",
    "rejected",
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
    *IDENT_FIELDS,
]


def summarize(summary_files: list[str | Path], out: str | Path) -> list[dict]:
    """Gather shard summaries into one TSV: a row per dataset (shards summed) and a final ``all`` row."""
    per: dict[str, dict] = {}
    for path in summary_files:
        s = read_json(path)
        row = per.setdefault(s["dataset"], {"dataset": s["dataset"], "shards": 0, **{f: 0 for f in SUM_FIELDS}})
        row["shards"] += 1
        for f in SUM_FIELDS:
            row[f] += s.get(f) or 0
        for f in IDENT_FIELDS:
            row.setdefault(f, s.get(f))
    rows = list(per.values())
    total = {
        "dataset": "all",
        "shards": sum(r["shards"] for r in rows),
        **{f: sum(r[f] for r in rows) for f in SUM_FIELDS},
    }
    if rows:
        for f in IDENT_FIELDS:
            total[f] = rows[0][f] if len({r[f] for r in rows}) == 1 else "mixed"
    rows.append(total)
    for r in rows:
        r["ok_share"] = round(r["ok"] / r["queries"], 4) if r["queries"] else None
    write_tsv(out, rows, TABLE_COLUMNS)
    return rows


ESTIMATE_COLUMNS = [
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


def estimate(
    records_files: list[str | Path], out: str | Path, settings: TaggingSettings | dict | None = None
) -> list[dict]:
    """Before any call: requests, estimated tokens and cost per dataset, at the configured prices.

    The requests are the ones tagging sends (rejected queries are not sent; queries cut at
    ``max_query_tokens`` x 4 characters, as no tokenizer is loaded here), estimated by the LLM-job layer
    (:meth:`instag.llm.job.LLMJob.estimate`, as for every stage): completion tokens as ``max_tokens`` per
    request (an upper bound), ``max_requests`` counting every retry, USD blank for a model without a price.
    A spend cap on a paid backend whose model has no price fails here, before anything is sent.
    """
    s = TaggingSettings.coerce(settings)
    job = LLMJob(s.job_settings(), stage="tagging", namespace="estimate")  # builds no backend
    template = load_template(s.prompt_for(job.small_model))
    schema = load_schema() if s.use_schema else None
    tagger_params = Tagger.params_of(s, schema)
    cut = None if s.max_query_tokens is None else s.max_query_tokens * CHARS_PER_TOKEN
    rows = []
    for path in records_files:
        requests = []
        for line, rec in iter_jsonl(path):
            for it in record_items(rec, path, line):
                if blank_reason(it.text) is None:
                    requests.append(build_request(template, it.text[:cut], s.system, tagger_params))
        rows.append({"dataset": Path(path).name.split(".")[0], **job.estimate(requests)})
    total = {"dataset": "all", "backend": job.backend_name, "model": job.model_name}
    for f in ("requests", "max_requests", "prompt_tokens", "completion_tokens"):
        total[f] = sum(r[f] for r in rows)
    usd = [r["usd"] for r in rows]
    total["usd"] = round(sum(usd), 6) if usd and None not in usd else None
    if rows:
        total["usd_per_1m_prompt"], total["usd_per_1m_completion"] = (
            rows[0]["usd_per_1m_prompt"],
            rows[0]["usd_per_1m_completion"],
        )
    total["spend_cap_usd"] = s.spend_cap_usd
    rows.append(total)
    write_tsv(out, rows, ESTIMATE_COLUMNS)
    return rows
