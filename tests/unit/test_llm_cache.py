"""The content-addressed LLM call cache (instag.llm.cache): keys, hits, failures, durability, concurrent writers."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
from pathlib import Path

import pytest

from instag import cli
from instag.llm.base import Backend, ChatRequest, ChatResponse, GenerationParams
from instag.llm.cache import (
    CachedBackend,
    _KeyMaker,
    cache_stats,
    compact,
    failed_entries,
    iter_records,
    request_key,
)
from instag.llm.cost import SpendCapExceeded, SpendGuard, estimate_prompt_tokens, price_of
from instag.llm.scripted import ScriptedBackend, ScriptedCrash


def req(text: str, params: GenerationParams | None = None, repeat: int = 0, **meta) -> ChatRequest:
    return ChatRequest(
        [{"role": "system", "content": "Tag it."}, {"role": "user", "content": text}],
        params or GenerationParams(),
        repeat=repeat,
        meta=meta,
    )


def reqs(n: int, prefix: str = "q") -> list[ChatRequest]:
    return [req(f"{prefix} {i}") for i in range(n)]


def key_of(request: ChatRequest, backend="scripted", model="m", revision="r", namespace="") -> str:
    return request_key(backend, model, revision, namespace, request.messages, request.params, request.repeat)


# ------------------------------------------------------------------------------------------------ keys

#: another value for every GenerationParams field; the test below fails when a field is added without one
OTHER_VALUES = {
    "temperature": 0.7,
    "top_p": 0.9,
    "max_tokens": 512,
    "seed": 1234,
    "stop": ("\n\n",),
    "json_schema": {"type": "array", "items": {"type": "object"}},
}


def test_every_generation_param_has_another_value():
    assert set(OTHER_VALUES) == {f.name for f in dataclasses.fields(GenerationParams)}


@pytest.mark.parametrize("field", sorted(OTHER_VALUES))
def test_key_changes_with_each_decoding_parameter(field):
    base = req("hello")
    changed = req("hello", GenerationParams(**{field: OTHER_VALUES[field]}))
    assert key_of(base) != key_of(changed)


@pytest.mark.parametrize("what", ["backend", "model", "revision", "namespace"])
def test_key_changes_with_identity(what):
    r = req("hello")
    assert key_of(r) != key_of(r, **{what: "other"})


def test_key_changes_with_messages_and_repeat_not_meta():
    assert key_of(req("hello")) != key_of(req("hello!"))
    sampled = GenerationParams(temperature=1.0)
    assert key_of(req("hello", sampled, repeat=0)) != key_of(req("hello", sampled, repeat=1))
    assert key_of(req("hello", id="a")) == key_of(req("hello", id="b"))


def test_key_is_stable_and_int_float_insensitive():
    assert key_of(req("x", GenerationParams(temperature=0, top_p=1))) == key_of(req("x", GenerationParams()))
    # a fixed known value: the key must not change between versions by accident
    expected = request_key("openai", "gpt", "gpt", "ns", [{"role": "user", "content": "hi"}], GenerationParams(), 0)
    assert expected == request_key(
        "openai",
        "gpt",
        "gpt",
        "ns",
        [{"role": "user", "content": "hi"}],
        GenerationParams(temperature=0, max_tokens=256),
        0,
    )
    # pinned: keys of existing caches (computed before the key's fast path skipped the params' deep copy)
    hi = [{"role": "user", "content": "hi"}]
    assert request_key("openai", "gpt", "gpt", "ns", hi, GenerationParams(), 2) == (
        "9193da0957425b0f95ed57614493a4912be58e483bb37f1d6896959434634137"
    )
    schema = {"type": "array", "items": {"maxLength": 40}}
    params = GenerationParams(temperature=0.5, seed=3, stop=("x", "y"), json_schema=schema)
    assert request_key("openai", "gpt", "gpt", "ns", hi, params, 2) == (
        "305de20d46beccb9e9e066ad8dc64c6ea1d0f765e931daf14f3ca73f92ec45e9"
    )


def test_fast_keys_equal_reference_keys():
    maker = _KeyMaker("scripted", "m", "r", "ns")
    params = [GenerationParams(), GenerationParams(temperature=0.5, seed=3, stop=("x",), json_schema={"a": [1]})]
    for i in range(20):
        r = req(f"question ü {i}", params[i % 2], repeat=i % 3)
        assert maker(r) == key_of(r, namespace="ns")


# ------------------------------------------------------------------------------------------- hits/misses


def test_second_run_makes_no_calls_and_keeps_everything(tmp_path):
    backend = ScriptedBackend(fn=lambda r: f"answer to {r.messages[-1]['content']}")
    cb = CachedBackend(backend, tmp_path)
    first = cb.generate(reqs(50))
    assert backend.n_calls == 50 and cb.stats.calls == 50 and cb.stats.hits == 0
    assert not any(r.cached for r in first)
    cb.close()
    again = CachedBackend(backend, tmp_path)  # a new process would do the same: reopen from disk
    second = again.generate(reqs(50))
    assert backend.n_calls == 50, "a cached request was sent again"
    assert again.stats.hits == 50 and again.stats.calls == 0
    for a, b in zip(first, second, strict=True):
        assert b.cached and (b.text, b.prompt_tokens, b.completion_tokens, b.finish_reason) == (
            a.text,
            a.prompt_tokens,
            a.completion_tokens,
            a.finish_reason,
        )
    assert [r.text for r in second] == [f"answer to q {i}" for i in range(50)]


def test_only_misses_go_to_the_backend_in_order(tmp_path):
    backend = ScriptedBackend(fn=lambda r: r.messages[-1]["content"].upper())
    cb = CachedBackend(backend, tmp_path)
    cb.generate(reqs(10)[::2])
    backend.calls.clear()
    out = cb.generate(reqs(10))
    assert [r.messages[-1]["content"] for r in backend.calls] == [f"q {i}" for i in range(1, 10, 2)]
    assert [r.text for r in out] == [f"Q {i}" for i in range(10)]
    assert [r.cached for r in out] == [i % 2 == 0 for i in range(10)]


def test_duplicates_in_a_batch_make_one_call(tmp_path):
    backend = ScriptedBackend()
    cb = CachedBackend(backend, tmp_path)
    out = cb.generate([req("same"), req("same"), req("other"), req("same")])
    assert backend.n_calls == 2 and cb.stats.duplicates == 2
    assert [r.ok for r in out] == [True] * 4


def test_namespace_and_model_separate_entries(tmp_path):
    b1 = ScriptedBackend(model="m1", default="one")
    b2 = ScriptedBackend(model="m2", default="two")
    assert CachedBackend(b1, tmp_path).generate([req("x")])[0].text == "one"
    assert CachedBackend(b2, tmp_path).generate([req("x")])[0].text == "two"
    assert CachedBackend(b1, tmp_path, namespace="prompt-v2").generate([req("x")])[0].cached is False
    assert b1.n_calls == 2


def test_sampled_repeats_are_distinct_entries(tmp_path):
    backend = ScriptedBackend(responses={"x": ["a", "b", "c"]})
    cb = CachedBackend(backend, tmp_path)
    p = GenerationParams(temperature=0.8, seed=1)
    out = cb.generate([req("x", p, repeat=k) for k in range(3)])
    assert [r.text for r in out] == ["a", "b", "c"]
    assert [r.cached for r in cb.generate([req("x", p, repeat=k) for k in range(3)])] == [True] * 3


def test_progress_and_on_response_cover_every_request(tmp_path):
    cb = CachedBackend(ScriptedBackend(), tmp_path)
    cb.generate(reqs(5))
    seen, ticks = {}, []
    out = cb.generate(reqs(8) + [req("q 0")], progress=ticks.append, on_response=seen.__setitem__)
    assert sum(ticks) == 9 and sorted(seen) == list(range(9))
    assert all(seen[i] is out[i] for i in range(9))


# --------------------------------------------------------------------------------------------- failures


def test_failures_are_stored_but_never_served(tmp_path):
    backend = ScriptedBackend(fail_every=3, fail_text="garbage {")
    cb = CachedBackend(backend, tmp_path)
    out = cb.generate(reqs(9))
    failed = [i for i, r in enumerate(out) if not r.ok]
    assert failed == [2, 5, 8] and cb.stats.failures == 3
    st = cache_stats(tmp_path)
    assert (st["ok_keys"], st["failed_keys"], st["failed_records"]) == (6, 3, 3)
    entries = failed_entries(tmp_path)
    assert [e["request"]["messages"][-1]["content"] for e in entries] == ["q 2", "q 5", "q 8"]
    assert all(e["text"] == "garbage {" and "simulated failure" in e["error"] for e in entries)
    # next run: exactly the failed keys are asked again, the rest are hits
    backend.calls.clear()
    backend.fail_every = 0
    again = CachedBackend(backend, tmp_path)
    out2 = again.generate(reqs(9))
    assert [r.messages[-1]["content"] for r in backend.calls] == ["q 2", "q 5", "q 8"]
    assert all(r.ok for r in out2) and again.stats.hits == 6
    assert cache_stats(tmp_path)["failed_keys"] == 0 and failed_entries(tmp_path) == []


def test_error_response_with_text_is_a_failure(tmp_path):
    backend = ScriptedBackend(fn=lambda r: ChatResponse(text="partial", error="http_500: boom", attempts=6))
    cb = CachedBackend(backend, tmp_path)
    cb.generate([req("x")])
    cb.generate([req("x")])
    assert backend.n_calls == 2 and cb.stats.hits == 0
    assert [e["attempts"] for e in failed_entries(tmp_path)] == [6]


# ------------------------------------------------------------------------------------------- durability


def test_crash_mid_run_keeps_every_completed_response(tmp_path):
    backend = ScriptedBackend(crash_after=7)
    cb = CachedBackend(backend, tmp_path)
    with pytest.raises(ScriptedCrash):
        cb.generate(reqs(20))
    assert cache_stats(tmp_path)["ok_keys"] == 7
    backend2 = ScriptedBackend()
    cb2 = CachedBackend(backend2, tmp_path)
    assert all(r.ok for r in cb2.generate(reqs(20)))
    assert backend2.n_calls == 13, "a completed call was made twice"


class BatchOnly(Backend):
    """A backend without per-response reporting (``streams`` False, like vLLM): the cache chunks its misses."""

    name, model, revision = "batchonly", "m", "r"

    def __init__(self, crash_on_call: int | None = None):
        self.batches: list[int] = []
        self.crash_on_call = crash_on_call

    def generate(self, requests, progress=None):
        self.batches.append(len(requests))
        if self.crash_on_call is not None and len(self.batches) == self.crash_on_call:
            raise RuntimeError("killed")
        if progress:
            progress(len(requests))
        return [ChatResponse(text="ok " + r.messages[-1]["content"]) for r in requests]

    def close(self):
        pass


def test_batch_backend_gets_chunks_and_a_crash_loses_only_the_chunk_in_flight(tmp_path):
    b = BatchOnly(crash_on_call=3)
    cb = CachedBackend(b, tmp_path, chunk_size=4)
    with pytest.raises(RuntimeError):
        cb.generate(reqs(20))
    assert b.batches == [4, 4, 4] and cache_stats(tmp_path)["ok_keys"] == 8
    b2 = BatchOnly()
    out = CachedBackend(b2, tmp_path, chunk_size=4).generate(reqs(20))
    assert b2.batches == [4, 4, 4] and [r.text for r in out] == [f"ok q {i}" for i in range(20)]


def test_truncated_last_line_and_corrupt_lines_are_tolerated(tmp_path):
    cb = CachedBackend(ScriptedBackend(), tmp_path)
    cb.generate(reqs(6))
    cb.close()
    (seg,) = list(tmp_path.glob("*.jsonl"))
    lines = seg.read_bytes().splitlines(keepends=True)
    # line 2: garbage; line 3: right prefix, broken JSON; plus a half-written last line
    broken = lines[3][:90] + b"XXXX" + lines[3][94:]
    seg.write_bytes(lines[0] + lines[1] + b"\x00\x00garbage\n" + lines[2] + broken + lines[4] + lines[5][:40])
    st = cache_stats(tmp_path)
    assert st["truncated_tails"] == 1 and st["corrupt_lines"] >= 1
    backend = ScriptedBackend()
    cb2 = CachedBackend(backend, tmp_path)
    out = cb2.generate(reqs(6))
    assert all(r.ok for r in out)
    # q 3 (broken record) and q 5 (truncated) are asked again; the rest are hits
    assert sorted(r.messages[-1]["content"] for r in backend.calls) == ["q 3", "q 5"]
    assert cb2.stats.corrupt >= 2


def test_records_written_by_another_instance_are_seen_without_reopening(tmp_path):
    a = CachedBackend(ScriptedBackend(), tmp_path)
    b_backend = ScriptedBackend()
    b = CachedBackend(b_backend, tmp_path)
    a.generate(reqs(5))
    assert all(r.cached for r in b.generate(reqs(5))) and b_backend.n_calls == 0


def _writer(cache_dir: str, worker: int, n: int) -> None:
    backend = ScriptedBackend(fn=lambda r: json.dumps({"w": worker, "q": r.messages[-1]["content"]}))
    cb = CachedBackend(backend, cache_dir, chunk_size=7)
    # overlapping key ranges: worker k asks q k*n/2 .. k*n/2 + n
    start = worker * n // 2
    for lo in range(start, start + n, 25):
        cb.generate([req(f"q {i}") for i in range(lo, min(lo + 25, start + n))])
    cb.close()


def test_concurrent_writer_processes_lose_and_corrupt_nothing(tmp_path):
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    n, workers = 300, 4
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), w, n)) for w in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    segs = list(tmp_path.glob("*.jsonl"))
    assert len(segs) == workers  # one segment per writer, never a shared append
    st = cache_stats(tmp_path)
    total_keys = n // 2 * (workers - 1) + n
    assert st["corrupt_lines"] == 0 and st["truncated_tails"] == 0 and st["failed_records"] == 0
    assert st["ok_keys"] == total_keys
    assert st["records"] >= total_keys  # overlaps may be answered by two writers at once
    for _seg, _off, rec in iter_records(tmp_path):
        assert rec is not None and rec["ok"] and json.loads(rec["text"])["w"] in range(workers)
    backend = ScriptedBackend()
    out = CachedBackend(backend, tmp_path).generate([req(f"q {i}") for i in range(total_keys)])
    assert backend.n_calls == 0 and all(json.loads(r.text)["q"] == f"q {i}" for i, r in enumerate(out))


# ------------------------------------------------------------------------------------------- compaction


def test_compact_merges_and_keeps_hits_for_open_readers(tmp_path):
    for fail_every in (3, 2, 1):  # failures: q2 q5 q8 q11, then q5 q11, then q5 q11 again
        cb = CachedBackend(ScriptedBackend(fail_every=fail_every), tmp_path)
        cb.generate(reqs(12))
        cb.close()
    assert len(list(tmp_path.glob("*.jsonl"))) == 3
    before = cache_stats(tmp_path)
    assert (before["ok_keys"], before["failed_keys"], before["failed_records"]) == (10, 2, 8)
    reader_backend = ScriptedBackend()
    reader = CachedBackend(reader_backend, tmp_path)
    reader.generate(reqs(1))  # index the segments, which compaction then removes
    result = compact(tmp_path, min_age_s=0)
    assert result["segments_in"] == 3 and len(list(tmp_path.glob("*.jsonl"))) == 1
    after = cache_stats(tmp_path)
    assert after["ok_keys"] == before["ok_keys"] and after["failed_keys"] == before["failed_keys"]
    assert after["records"] == before["ok_keys"] + before["failed_keys"]
    served = reader.generate(reqs(12))
    assert reader_backend.n_calls == 12 - before["ok_keys"]  # only keys that never succeeded
    assert all(r.ok for r in served)


def test_compact_skips_recent_segments(tmp_path):
    CachedBackend(ScriptedBackend(), tmp_path).generate(reqs(3))
    assert compact(tmp_path, min_age_s=3600)["segments_in"] == 0


# ------------------------------------------------------------------------------------------- spend cap

PRICES = {"m": {"prompt": 1000.0, "completion": 2000.0}}  # USD per 1M tokens: expensive, so small caps bite


def test_spend_cap_stops_before_exceeding_and_keeps_what_was_done(tmp_path):
    requests = [req(f"q {i}", GenerationParams(max_tokens=10)) for i in range(40)]
    guard = SpendGuard(0.0, price_of("m", PRICES), "m", backend="paid")
    per_request = guard.estimate(requests[0])
    guard = SpendGuard(per_request * 10.5, price_of("m", PRICES), "m", backend="paid")
    backend = ScriptedBackend(model="m", fn=costly)
    cb = CachedBackend(backend, tmp_path, guard=guard, chunk_size=4)
    with pytest.raises(SpendCapExceeded) as info:
        cb.generate(requests)
    assert guard.spent_usd <= guard.cap_usd
    assert info.value.remaining_requests == 40 - backend.n_calls
    # calls use what the estimate says (the most a call can cost): exactly 10 fit under 10.5 x that
    assert backend.n_calls == 10
    assert guard.estimate(requests[backend.n_calls]) > guard.cap_usd - guard.spent_usd
    assert cache_stats(tmp_path)["ok_keys"] == backend.n_calls
    # cached hits cost nothing: a rerun with a bigger cap only pays for the rest
    guard2 = SpendGuard(per_request * 100, price_of("m", PRICES), "m", backend="paid")
    backend2 = ScriptedBackend(model="m", fn=costly)
    out = CachedBackend(backend2, tmp_path, guard=guard2).generate(requests)
    assert all(r.ok for r in out) and backend2.n_calls == 40 - backend.n_calls
    assert guard2.spent_usd == pytest.approx(
        guard2.cost(
            sum(r.prompt_tokens for r in backend2_calls(out)), sum(r.completion_tokens for r in backend2_calls(out))
        )
    )


def costly(request: ChatRequest) -> ChatResponse:
    return ChatResponse(
        text="one two",
        prompt_tokens=estimate_prompt_tokens(request.messages),
        completion_tokens=request.params.max_tokens,
    )


def backend2_calls(out):
    return [r for r in out if not r.cached]


# ------------------------------------------------------------------------------------------------- CLI


def test_cli_stats_failures_compact(tmp_path, capsys):
    CachedBackend(ScriptedBackend(fail_every=2), tmp_path).generate(reqs(4))
    assert cli.main(["cache", "stats", "--cache-dir", str(tmp_path)]) == 0
    st = json.loads(capsys.readouterr().out)
    assert (st["ok_keys"], st["failed_keys"]) == (2, 2)
    assert cli.main(["cache", "failures", "--cache-dir", str(tmp_path), "--messages"]) == 0
    fl = json.loads(capsys.readouterr().out)
    assert fl["failed_keys"] == 2 and {f["messages"][-1]["content"] for f in fl["failures"]} == {"q 1", "q 3"}
    assert all(f["text"] == "not json {" and f["error"] for f in fl["failures"])
    assert cli.main(["cache", "compact", "--cache-dir", str(tmp_path), "--min-age", "0"]) == 0
    assert json.loads(capsys.readouterr().out)["records_out"] == 4
    assert cli.main(["cache", "stats", "--cache-dir", str(tmp_path / "missing")]) == 2
    assert "no such cache directory" in capsys.readouterr().err


def test_segment_names_identify_the_writer(tmp_path):
    CachedBackend(ScriptedBackend(), tmp_path).generate(reqs(1))
    (seg,) = tmp_path.glob("*.jsonl")
    assert seg.name.startswith("seg-") and f"-{os.getpid()}-" in seg.name
    assert Path(seg).read_bytes().startswith(b'{"key":"')


def test_lookup_serves_successes_only_and_calls_nothing(tmp_path):
    def answer(req):
        text = req.messages[-1]["content"]
        return "ok " + text if "good" in text else ChatResponse(text="garbage", error="http_500: boom")

    backend = ScriptedBackend(fn=answer)
    reqs = [ChatRequest([{"role": "user", "content": c}]) for c in ("good 1", "bad", "good 2", "never asked")]
    CachedBackend(backend, tmp_path).generate(reqs[:3])
    fresh = ScriptedBackend(fn=answer)
    found = CachedBackend(fresh, tmp_path).lookup(reqs)
    assert [r.text if r else None for r in found] == ["ok good 1", None, "ok good 2", None]
    assert all(r.cached for r in found if r)
    assert fresh.n_calls == 0
