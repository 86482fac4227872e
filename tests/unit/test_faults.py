"""Fault injection: LLM calls through the cache against a loopback server that fails 20% of requests.

The server (tests/support/openai_server.py) draws each request's fate from a hash of (seed, prompt, how many
times that prompt arrived), so the outcome of every item is known in advance: the first attempt whose draw
is not a fault succeeds, and an item whose first ``1 + max_retries`` draws are all faults fails. The tests
check each item against that prediction, so a lost item, an extra call or a failure cached as a success
shows up as a mismatch, not as a statistic.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

pytest.importorskip("openai", reason="the openai backend needs the 'llm' extra")

from instag.llm.base import ChatRequest, GenerationParams  # noqa: E402
from instag.llm.cache import CachedBackend, cache_stats, failed_entries, iter_records  # noqa: E402
from instag.llm.cost import SpendCapExceeded, SpendGuard, estimate_requests, price_of  # noqa: E402
from instag.llm.openai_backend import OpenAIBackend  # noqa: E402
from tests.support.openai_server import FAULT_KINDS, OpenAIServer, _State, default_reply  # noqa: E402

N_ITEMS = 300
FAULT_RATE = 0.2
MAX_RETRIES = 2  # 3 attempts: P(an item fails) = 0.2**3 = 0.8%, so a few of 300 fail for most seeds
TIMEOUT = 2.0  # client's per-attempt limit; the server's "timeout" fault hangs longer


def prompts(n: int, tag: str = "item") -> list[str]:
    return [f"{tag}{i} what is {i} plus {i}?" for i in range(n)]


def requests_for(texts: list[str]) -> list[ChatRequest]:
    params = GenerationParams(max_tokens=64)
    return [ChatRequest([{"role": "user", "content": t}], params, meta={"i": i}) for i, t in enumerate(texts)]


def predicted_attempts(texts: list[str], seed: int, attempts: int) -> dict[str, tuple[bool, int]]:
    """(succeeds, attempts used) per prompt, from the server's own fault draw."""
    state = _State(0, None, FAULT_RATE, FAULT_KINDS, seed, 0.01, 5, None, None, False)
    out = {}
    for t in texts:
        n = next((k for k in range(1, attempts + 1) if state.draw_fault(t, k) is None), None)
        out[t] = (True, n) if n is not None else (False, attempts)
    return out


def pick_seed(texts: list[str], attempts: int) -> int:
    """The first seed under which at least two items fail every attempt (so the failure path is exercised)."""
    for seed in range(100):
        if sum(not ok for ok, _ in predicted_attempts(texts, seed, attempts).values()) >= 2:
            return seed
    raise AssertionError("no seed gives failures")


def make_backend(server: OpenAIServer, **kw) -> OpenAIBackend:
    opts = dict(
        concurrency=32,
        timeout=TIMEOUT,
        max_retries=MAX_RETRIES,
        backoff_base=0.01,
        backoff_max=0.05,
        max_retry_after=0.05,
    )
    opts.update(kw)
    return OpenAIBackend("test-model", base_url=server.base_url, **opts)


@pytest.fixture(scope="module")
def fault_run(tmp_path_factory):
    """One run of N_ITEMS requests through the cache at 20% faults, then a second run over the same cache."""
    texts = prompts(N_ITEMS)
    seed = pick_seed(texts, 1 + MAX_RETRIES)
    cache_dir = tmp_path_factory.mktemp("fault-cache")
    with OpenAIServer(fault_rate=FAULT_RATE, seed=seed, retry_after=0.01, hang_seconds=3 * TIMEOUT) as server:
        with CachedBackend(make_backend(server), cache_dir) as cached:
            first = cached.generate(requests_for(texts))
            stats1 = cached.stats.as_dict()
        after_first = server.stats(bodies=False)
        cache1 = cache_stats(cache_dir)
        records1 = [rec for _seg, _off, rec in iter_records(cache_dir)]
        failed1 = failed_entries(cache_dir)
        with CachedBackend(make_backend(server), cache_dir) as cached:
            second = cached.generate(requests_for(texts))
            stats2 = cached.stats.as_dict()
        after_second = server.stats(bodies=False)
    return {
        "texts": texts,
        "seed": seed,
        "cache_dir": cache_dir,
        "first": first,
        "second": second,
        "stats1": stats1,
        "stats2": stats2,
        "server1": after_first,
        "server2": after_second,
        "cache1": cache1,
        "records1": records1,
        "failed1": failed1,
        "cache2": cache_stats(cache_dir),
    }


def test_every_item_is_done_or_failed_as_predicted(fault_run):
    texts, first = fault_run["texts"], fault_run["first"]
    predicted = predicted_attempts(texts, fault_run["seed"], 1 + MAX_RETRIES)
    assert len(first) == N_ITEMS and all(r is not None for r in first), "an item was lost"
    for text, resp in zip(texts, first, strict=True):
        ok, attempts = predicted[text]
        assert resp.ok == ok, (text, resp)
        assert resp.attempts == attempts, (text, resp.attempts, attempts, resp.error)
        if ok:
            assert resp.text == default_reply({"messages": [{"role": "user", "content": text}]})
        else:
            assert resp.error and f"after {1 + MAX_RETRIES} attempts" in resp.error
    n_ok = sum(r.ok for r in first)
    st = fault_run["stats1"]
    assert st["calls"] == N_ITEMS and st["failures"] == N_ITEMS - n_ok and st["hits"] == 0
    print(
        f"fault run: {N_ITEMS} items, {sum(fault_run['server1']['faults_injected'].values())} faults injected "
        f"{dict(fault_run['server1']['faults_injected'])}, {n_ok} done, {N_ITEMS - n_ok} failed after retries"
    )


def test_faults_of_every_kind_were_injected_and_counts_add_up(fault_run):
    server = fault_run["server1"]
    injected = Counter(server["faults_injected"])
    assert set(injected) == set(FAULT_KINDS), f"kinds never injected: {set(FAULT_KINDS) - set(injected)}"
    # every request the server saw was either a fault or an answer, and the client counted each as an attempt
    assert server["requests"] == sum(injected.values()) + server["ok"]
    assert server["requests"] == sum(r.attempts for r in fault_run["first"]) == fault_run["stats1"]["attempts"]
    assert server["ok"] == sum(r.ok for r in fault_run["first"])
    assert 0.12 < sum(injected.values()) / server["requests"] < 0.28


def test_no_request_is_made_more_often_than_its_retry_limit(fault_run):
    counts = fault_run["server1"]["counts"]
    assert set(counts) == set(fault_run["texts"])
    assert max(counts.values()) <= 1 + MAX_RETRIES
    for text, resp in zip(fault_run["texts"], fault_run["first"], strict=True):
        assert counts[text] == resp.attempts


def test_the_cache_holds_no_failure_as_a_success(fault_run):
    stats = fault_run["cache1"]  # as the first run left it
    n_ok = sum(r.ok for r in fault_run["first"])
    assert stats["ok_keys"] == n_ok and stats["failed_keys"] == N_ITEMS - n_ok
    assert stats["corrupt_lines"] == 0 and stats["truncated_tails"] == 0
    assert len(fault_run["records1"]) == N_ITEMS  # one record per item: its success or its final failure
    for rec in fault_run["records1"]:
        if rec["ok"]:
            prompt = rec.get("request", {}).get("messages", [{}])[-1].get("content")
            # a success is the server's real answer (valid tag JSON), never a fault body
            assert json.loads(rec["text"])[0]["tag"].startswith("topic "), rec
            assert rec["error"] is None and prompt is None  # successes do not store the request
        else:
            assert rec["error"], rec
    failed = fault_run["failed1"]
    assert sorted(f["request"]["messages"][-1]["content"] for f in failed) == sorted(
        t for t, r in zip(fault_run["texts"], fault_run["first"], strict=True) if not r.ok
    )


def test_rerun_serves_successes_and_retries_only_the_failed(fault_run):
    first, second = fault_run["first"], fault_run["second"]
    n_failed = sum(not r.ok for r in first)
    st = fault_run["stats2"]
    assert st["hits"] == N_ITEMS - n_failed and st["calls"] == n_failed
    before, after = fault_run["server1"]["counts"], fault_run["server2"]["counts"]
    for text, r1, r2 in zip(fault_run["texts"], first, second, strict=True):
        if r1.ok:
            assert r2.cached and r2.text == r1.text
            assert after[text] == before[text], f"a completed call was repeated: {text}"
        else:
            assert after[text] > before[text]
    # after the rerun the cache holds each item once as a success, or its failure; still nothing else
    assert fault_run["cache2"]["ok_keys"] == sum(r.ok for r in second)
    assert fault_run["cache2"]["ok_keys"] + fault_run["cache2"]["failed_keys"] == N_ITEMS


def test_spend_cap_stops_before_it_is_exceeded_and_keeps_what_was_done(tmp_path):
    texts = prompts(60, "spend")
    reqs = requests_for(texts)
    prices = {"test-model": {"prompt": 1000.0, "completion": 2000.0}}  # USD per 1M tokens: a few cents per call
    full = estimate_requests(reqs, "test-model", price_of("test-model", prices))
    cap = full["usd"] * 0.1  # the estimate counts max_tokens per answer; real answers are shorter
    with OpenAIServer() as server:
        guard = SpendGuard(cap, price_of("test-model", prices), "test-model")
        with CachedBackend(make_backend(server, concurrency=4), tmp_path, guard=guard, chunk_size=8) as cached:
            with pytest.raises(SpendCapExceeded) as info:
                cached.generate(reqs)
        sent = server.stats(bodies=False)
        assert guard.spent_usd <= cap, (guard.spent_usd, cap)
        assert 0 < sent["requests"] < len(texts)
        assert info.value.remaining_requests == len(texts) - sent["requests"]
        stats = cache_stats(tmp_path)
        assert stats["ok_keys"] == sent["ok"] == sent["requests"], "an answered call is missing from the cache"
        # a rerun without a cap finishes the rest and repeats none of the calls already made
        with CachedBackend(make_backend(server), tmp_path) as cached:
            out = cached.generate(reqs)
        assert all(r.ok for r in out)
        assert max(server.counts.values()) == 1 and server.requests == len(texts)


# ------------------------------------------------------------------------------------------ judging


def verdict_reply(body: dict) -> str:
    return json.dumps({"explanation": "the tags fit", "verdict": "yes"})


def judge_files(tmp_path, n_records: int = 200):
    """Records with one query each and 2-3 tags from a small vocabulary (so tags recur for consistency cases)."""
    vocab = [f"skill {k}" for k in range(30)]
    data, norm = [], []
    for i in range(n_records):
        tags = sorted({vocab[i % 30], vocab[(i * 7) % 30], vocab[(i * 11 + 3) % 30]})
        turns = [
            {"role": "user", "content": f"judge query {i}: explain idea {i}"},
            {"role": "assistant", "content": "ok"},
        ]
        data.append({"id": f"r{i}", "dataset": "d", "source_line": i + 1, "source_id": None, "turns": turns})
        norm.append({"id": f"r{i}", "dataset": "d", "tags": tags, "queries": [tags], "status": "ok"})
    dpath, npath = tmp_path / "d.jsonl", tmp_path / "normalized.jsonl"
    dpath.write_text("".join(json.dumps(r) + "\n" for r in data))
    npath.write_text("".join(json.dumps(r) + "\n" for r in norm))
    return dpath, npath


def test_judging_run_under_faults_accounts_for_every_case(tmp_path):
    quality = pytest.importorskip("instag.quality", reason="the quality stage is not there yet")
    from instag.io import iter_jsonl, read_tsv

    dpath, npath = judge_files(tmp_path)
    n_prec, n_cons = 170, 30  # 200 judge calls (30 tags are eligible for consistency cases)

    def judge_spec(server):
        return {
            "backend": "openai",
            "model": "test-model",
            "base_url": server.base_url,
            "concurrency": 32,
            "timeout": TIMEOUT,
            "max_retries": MAX_RETRIES,
            "backoff_base": 0.01,
            "backoff_max": 0.05,
            "max_retry_after": 0.05,
        }

    def run(server, cache, name):
        return quality.evaluate(
            npath,
            [dpath],
            tmp_path / f"{name}.jsonl",
            tmp_path / f"{name}.tsv",
            judge=judge_spec(server),
            cache_dir=tmp_path / cache,
            n_precision=n_prec,
            n_consistency=n_cons,
            seed=0,
            max_retries=0,  # only the backend's own retries: every case's attempts are then predicted
        )

    with OpenAIServer(reply=verdict_reply) as server:  # a fault-free pass, to learn the prompts and pick a seed
        run(server, "probe-cache", "probe")
        seed = pick_seed(sorted(server.counts), 1 + MAX_RETRIES)
    with OpenAIServer(
        fault_rate=FAULT_RATE, seed=seed, retry_after=0.01, hang_seconds=3 * TIMEOUT, reply=verdict_reply
    ) as server:
        summary = run(server, "cache", "j1")
        first = server.stats(bodies=False)
        summary2 = run(server, "cache", "j2")
        second = server.stats(bodies=False)

    lines = [rec for _, rec in iter_jsonl(tmp_path / "j1.jsonl")]
    assert len(lines) == n_prec + n_cons, "a judging case was lost"
    counts = first["counts"]
    assert len(counts) == n_prec + n_cons  # one distinct prompt per case
    predicted = predicted_attempts(sorted(counts), seed, 1 + MAX_RETRIES)
    for prompt, n in counts.items():
        assert n == predicted[prompt][1] <= 1 + MAX_RETRIES, prompt
    n_failed = sum(not ok for ok, _ in predicted.values())
    assert n_failed >= 2 and sum(x["status"] == "failed" for x in lines) == n_failed
    assert all(x["verdict"] == "yes" for x in lines if x["status"] == "ok")
    assert all(x["error"] and x["verdict"] is None for x in lines if x["status"] == "failed")
    table = {r["metric"]: r for r in read_tsv(tmp_path / "j1.tsv")}
    for kind, n in (("precision", n_prec), ("consistency", n_cons)):
        row = table[kind]
        assert int(row["cases"]) == n == int(row["judged"]) + int(row["failed"])
        assert summary[kind]["failed"] == int(row["failed"])
    assert sum(first["faults_injected"].values()) > 0.1 * first["requests"]
    # the rerun repeats only the failed cases; no completed judgment is asked again
    assert summary2["cache"]["calls"] == n_failed and summary2["cache"]["hits"] == n_prec + n_cons - n_failed
    for prompt, n in second["counts"].items():
        if predicted[prompt][0]:
            assert n == counts[prompt], f"a completed judgment was asked again: {prompt[:80]}"
    print(
        f"judging run: {n_prec + n_cons} cases, {sum(first['faults_injected'].values())} faults injected, "
        f"{n_prec + n_cons - n_failed} judged, {n_failed} failed after retries, 0 lost"
    )


# ------------------------------------------------------------------------------------------ tagging


def tag_records(tmp_path, n: int, tag: str = "tagq"):
    path = tmp_path / "records.jsonl"
    with open(path, "w") as fh:
        for i in range(n):
            turns = [
                {"role": "user", "content": f"{tag} {i}: how do I sort {i} numbers?"},
                {"role": "assistant", "content": "ok"},
            ]
            fh.write(
                json.dumps({"id": f"d-{i}", "dataset": "d", "source_line": i + 1, "source_id": None, "turns": turns})
                + "\n"
            )
    return path


@pytest.fixture(scope="module")
def tag_run(tmp_path_factory):
    """A tagging shard of 300 queries at 20% faults, then the same shard again over the same cache."""
    tagging = pytest.importorskip("instag.tagging", reason="the tagging stage is not there yet")
    tmp_path = tmp_path_factory.mktemp("tagging-faults")
    n, backend_retries, tag_retries = 300, 1, 1
    limit = (1 + backend_retries) * (1 + tag_retries)  # attempts per query: backend retries within each tag attempt
    records = tag_records(tmp_path, n)
    template = tagging.load_template()
    prompts_ = [tagging.render_prompt(template, f"tagq {i}: how do I sort {i} numbers?") for i in range(n)]
    seed = pick_seed(prompts_, limit)
    with OpenAIServer(fault_rate=FAULT_RATE, seed=seed, retry_after=0.01, hang_seconds=3 * TIMEOUT) as server:
        backend = {
            "backend": "openai",
            "model": "test-model",
            "base_url": server.base_url,
            "concurrency": 32,
            "timeout": TIMEOUT,
            "max_retries": backend_retries,
            "backoff_base": 0.01,
            "backoff_max": 0.05,
            "max_retry_after": 0.05,
        }
        settings = {
            "backend": backend,
            "max_retries": tag_retries,
            "cache_dir": str(tmp_path / "cache"),
            "chunk_size": 100,
        }
        s1 = tagging.tag_shard(records, tmp_path / "run1.jsonl", None, 0, n, settings)
        first = server.stats(bodies=False)
        cache1 = cache_stats(tmp_path / "cache")
        s2 = tagging.tag_shard(records, tmp_path / "run2.jsonl", None, 0, n, settings)
        second = server.stats(bodies=False)
    return {
        "n": n,
        "limit": limit,
        "backend_retries": backend_retries,
        "tag_retries": tag_retries,
        "prompts": prompts_,
        "predicted": predicted_attempts(prompts_, seed, limit),
        "lines1": [json.loads(x) for x in (tmp_path / "run1.jsonl").read_text().splitlines()],
        "lines2": [json.loads(x) for x in (tmp_path / "run2.jsonl").read_text().splitlines()],
        "s1": s1,
        "s2": s2,
        "first": first,
        "second": second,
        "cache1": cache1,
    }


def test_tagging_run_under_faults_accounts_for_every_query(tag_run):
    n, limit, predicted, first = tag_run["n"], tag_run["limit"], tag_run["predicted"], tag_run["first"]
    lines, s1, cache1 = tag_run["lines1"], tag_run["s1"], tag_run["cache1"]
    assert [x["id"] for x in lines] == [f"d-{i}" for i in range(n)], "a query was lost or reordered"
    n_failed = sum(not ok for ok, _ in predicted.values())
    assert n_failed >= 2
    for p, line in zip(tag_run["prompts"], lines, strict=True):
        ok, attempts = predicted[p]
        assert (line["status"] == "ok") == ok, line
        assert first["counts"][p] == attempts <= limit, (p, first["counts"][p], attempts)
        if not ok:
            assert line["tags"] is None and line["error"].startswith("backend:"), line
    assert s1["queries"] == n == s1["ok"] + s1["failed"] and s1["failed"] == n_failed
    assert first["requests"] == sum(first["faults_injected"].values()) + first["ok"]
    # the cache: one success per query that succeeded; failures kept as failures only
    assert cache1["ok_keys"] == n - n_failed and cache1["corrupt_lines"] == 0
    # each tag attempt is its own key: a key failed when all its backend attempts did
    per_attempt = 1 + tag_run["backend_retries"]
    failed_attempts = sum((a - 1) // per_attempt if ok else 1 + tag_run["tag_retries"] for ok, a in predicted.values())
    assert cache1["failed_keys"] == failed_attempts
    print(
        f"tagging run: {n} queries, {sum(first['faults_injected'].values())} faults injected, "
        f"{n - n_failed} tagged, {n_failed} failed after {limit} attempts, 0 lost"
    )


def test_tagging_rerun_repeats_no_successful_call(tag_run):
    first, second = tag_run["first"]["counts"], tag_run["second"]["counts"]
    per_attempt = 1 + tag_run["backend_retries"]
    for p, (ok, attempts) in tag_run["predicted"].items():
        if ok and attempts <= per_attempt:  # succeeded on the first tag attempt
            assert second[p] == first[p], "a completed call was made again"
    assert tag_run["s2"]["failed"] <= tag_run["s1"]["failed"]


def test_tagging_rerun_makes_no_call_for_a_tagged_query(tag_run):
    """Issue 4: running the stage twice makes zero model calls for what was done. A query whose first tag attempt
    failed at the backend and whose retry (repeat 1) succeeded is done; its rerun must not ask again (and must
    not replace the retry's tags with a new first-attempt answer)."""
    n_failed = tag_run["s1"]["failed"]
    first, second = tag_run["first"]["counts"], tag_run["second"]["counts"]
    asked_again = [p for p, (ok, _) in tag_run["predicted"].items() if ok and second[p] != first[p]]
    assert not asked_again, f"{len(asked_again)} tagged queries were asked again on the rerun"
    assert tag_run["s2"]["cache_hits"] == tag_run["n"] - n_failed


def test_spend_cap_holds_for_the_stage_across_shard_jobs(tmp_path):
    """The cap is for the stage: shard jobs run one after another (or a rerun) must not each get the whole cap."""
    tagging = pytest.importorskip("instag.tagging", reason="the tagging stage is not there yet")
    from instag.llm.cache import iter_records
    from instag.llm.cost import SpendCapExceeded as CapError

    records = tag_records(tmp_path, 60, "capq")
    # only completion tokens are priced, and every answer is 60 words long (max_tokens 64): the estimate a guard
    # makes before a call is then close to what the call costs
    prices = {"test-model": {"prompt": 0.0, "completion": 2000.0}}

    def long_answer(body: dict) -> str:
        return json.dumps([{"tag": "sorting", "explanation": " ".join(["words"] * 56)}])

    with OpenAIServer(reply=long_answer) as server:
        backend = {"backend": "openai", "model": "test-model", "base_url": server.base_url, "concurrency": 4}
        settings = {
            "backend": backend,
            "cache_dir": str(tmp_path / "cache"),
            "prices": prices,
            "max_tokens": 64,
            "chunk_size": 8,
        }
        one = tagging.estimate([records], tmp_path / "est.tsv", settings)[-1]["usd"] / 60  # estimated USD per query
        settings["spend_cap_usd"] = cap = 25 * one  # room for about 25 queries of 60, by the estimate
        stopped = 0
        for shard in range(3):  # three shard jobs of 20 queries, as Snakemake would run them
            try:
                tagging.tag_shard(records, tmp_path / f"shard-{shard}.jsonl", None, shard, 20, settings)
            except CapError:
                stopped += 1
    spent = sum(rec["completion_tokens"] * 2000.0 / 1e6 for _s, _o, rec in iter_records(tmp_path / "cache") if rec)
    assert spent <= cap, f"the stage spent ${spent:.4f} against a cap of ${cap:.4f} ({server.requests} calls)"
    assert stopped >= 1, "the cap never stopped a job"
