"""The LLM-job layer (instag.llm.job) on its own, and as the one code path of tagging and the quality judge.

The stage test drives both stages through a loopback OpenAI-compatible server (tests/support/openai_server.py)
with prices and a spend cap, each as two jobs in sequence: each job alone fits under the cap, the two together
do not, so the second job stops at the cap only if it counts what the first spent (from the cache).
"""

from __future__ import annotations

import json

import pytest

from instag.errors import ConfigError
from instag.llm.base import ChatRequest, ChatResponse, GenerationParams
from instag.llm.cache import iter_records
from instag.llm.cost import SpendCapExceeded
from instag.llm.job import JobSettings, LLMJob
from instag.llm.scripted import ScriptedBackend


def _reqs(*texts, **params):
    return [ChatRequest([{"role": "user", "content": t}], GenerationParams(**params)) for t in texts]


def _number(text):
    return (int(text), None) if text.strip().isdigit() else (None, f"not a number: {text!r}")


def test_parse_reask_and_failure_records(tmp_path):
    backend = ScriptedBackend(responses={"a": ["x", "7"], "b": "nope", "c": "3"})
    settings = JobSettings(backend={"backend": "scripted"}, cache_dir=str(tmp_path), max_retries=2)
    with LLMJob(settings, stage="unit", namespace="v1", backend=backend) as job:
        a, b, c = job.run(_reqs("a", "b", "c"), parse=_number)
    assert (a.ok, a.value, a.attempts, a.retried, a.request.repeat) == (True, 7, 2, True, 1)
    assert a.request.params.temperature == 0.7  # a re-ask is a new sample
    assert (b.ok, b.raw, b.attempts) == (False, "nope", 3) and b.error == "not a number: 'nope' (after 3 attempts)"
    assert (c.ok, c.value, c.cached) == (True, 3, False)
    assert job.namespace == "unit:v1" and job.stats["calls"] == 2 + 3 + 1
    # a second job answers from the cache: the re-asked request is found at its second attempt, with no call
    again = ScriptedBackend(default="0")
    with LLMJob(settings, stage="unit", namespace="v1", backend=again) as job:
        a2, b2, c2 = job.run(_reqs("a", "b", "c"), parse=_number)
    assert (a2.value, a2.cached, c2.value) == (7, True, 3) and not b2.ok and again.n_calls == 0


def test_backend_errors_are_reasked_and_kept_with_their_text(tmp_path):
    backend = ScriptedBackend(fn=lambda r: ChatResponse(text="partial", error="HTTP 500"))
    settings = JobSettings(backend={"backend": "scripted"}, cache_dir=None, max_retries=1)
    with LLMJob(settings, stage="unit", namespace="v", backend=backend) as job:
        (r,) = job.run(_reqs("q"))
    assert not r.ok and r.error == "backend: HTTP 500 (after 2 attempts)" and r.raw == "partial"
    assert backend.n_calls == 2 and r.response.error == "HTTP 500"


def test_estimate_and_the_no_price_rule(tmp_path):
    reqs = _reqs("abc", "def", max_tokens=10)
    priced = JobSettings(backend={"backend": "openai", "model": "m"}, prices={"m": {"prompt": 1e6, "completion": 0}})
    est = LLMJob(priced, stage="s", namespace="n").estimate(reqs)  # no backend is built for an estimate
    assert est["usd"] == 2 * (3 + 4 + 1) and est["max_requests"] == 6 and est["model"] == "m"
    blank = LLMJob(JobSettings(backend={"backend": "embedded"}), stage="s", namespace="n").estimate(reqs)
    assert blank["usd"] is None and blank["model"] == "SmolLM2-135M-Instruct"
    capped_local = JobSettings(backend={"backend": "embedded"}, spend_cap_usd=1.0)
    assert LLMJob(capped_local, stage="s", namespace="n").price is None  # local, unpriced: the cap does not apply
    with pytest.raises(ConfigError, match="unpriced") as info:
        LLMJob(
            JobSettings(backend={"backend": "openai", "model": "unpriced"}, spend_cap_usd=1.0, section="mtbench"),
            stage="mtbench_judge",
            namespace="n",
        )
    assert info.value.key == "mtbench.prices"


def test_raw_prompts_only_where_the_backend_takes_them(tmp_path):
    backend = ScriptedBackend(default="ok")
    settings = JobSettings(backend={"backend": "scripted"}, cache_dir=str(tmp_path))
    raw = ChatRequest([], GenerationParams(), prompt="USER: hi ASSISTANT:")
    with LLMJob(settings, stage="unit", namespace="v", backend=backend) as job:
        (r,) = job.run([raw])
    assert r.ok and backend.calls[0].prompt == "USER: hi ASSISTANT:"
    chat = _reqs("USER: hi ASSISTANT:")[0]
    assert job.backend.key(raw) != job.backend.key(chat)  # the prompt is part of the cache key

    class ChatOnly(ScriptedBackend):
        raw_prompts = False

    with pytest.raises(ConfigError, match="pre-rendered"):
        LLMJob(settings, stage="unit", namespace="v", backend=ChatOnly()).run([raw])


# --- tagging and the quality judge: one code path for cost, cap and cache -------------------------------

PRICES = {"test-model": {"prompt": 0.0, "completion": 2000.0}}  # USD per 1M tokens: completion only, dear
LONG = " ".join(["words"] * 56)  # answers of about 60 tokens: the estimate (max_tokens 64) is close to the cost


def _reply(body: dict) -> str:
    prompt = body["messages"][-1]["content"]
    if '"verdict"' in prompt:  # the judge's prompt asks for {"explanation", "verdict"}
        return json.dumps({"explanation": LONG, "verdict": "yes"})
    return json.dumps([{"tag": "sorting", "explanation": LONG}])


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _records(tmp_path, name: str, n: int):
    recs, norm = [], []
    for i in range(n):
        turns = [
            {"role": "user", "content": f"{name} query {i}: sort {i} numbers"},
            {"role": "assistant", "content": "ok"},
        ]
        recs.append({"id": f"{name}-{i}", "dataset": name, "source_line": i + 1, "source_id": None, "turns": turns})
        norm.append({"id": f"{name}-{i}", "dataset": name, "tags": ["sorting"], "queries": [["sorting"]]})
    return _write_jsonl(tmp_path / f"{name}.jsonl", recs), _write_jsonl(tmp_path / f"{name}.norm.jsonl", norm)


def _spent(cache, stage: str) -> float:
    return sum(
        rec["completion_tokens"] * 2000.0 / 1e6
        for _s, _o, rec in iter_records(cache)
        if rec and rec["namespace"].startswith(f"{stage}:")
    )


def test_tagging_and_the_judge_stop_at_a_cap_counted_across_their_jobs(tmp_path, monkeypatch):
    pytest.importorskip("openai", reason="the openai backend needs the 'llm' extra")
    from instag import quality, tagging
    from instag.io import read_tsv
    from tests.support.openai_server import OpenAIServer

    seen = []  # (stage, method): both stages go through LLMJob.estimate and LLMJob.run
    for name in ("estimate", "run"):
        original = getattr(LLMJob, name)

        def spy(self, *a, _original=original, _name=name, **k):
            seen.append((self.stage, _name))
            return _original(self, *a, **k)

        monkeypatch.setattr(LLMJob, name, spy)

    cache = tmp_path / "cache"  # one cache for both stages, as in the workflow
    records, _ = _records(tmp_path, "t", 20)
    (rec_a, norm_a), (rec_b, norm_b) = _records(tmp_path, "a", 10), _records(tmp_path, "b", 10)
    with OpenAIServer(reply=_reply) as server:
        backend = {"backend": "openai", "model": "test-model", "base_url": server.base_url, "concurrency": 4}

        # tagging: two shard jobs of 10 queries; the cap is 1.5 shards' estimate
        settings = {"backend": backend, "cache_dir": str(cache), "prices": PRICES, "max_tokens": 64}
        shard_usd = tagging.estimate([records], tmp_path / "est.tsv", settings)[-1]["usd"] / 2
        settings["spend_cap_usd"] = tag_cap = 1.5 * shard_usd
        s0 = tagging.tag_shard(records, tmp_path / "shard-0.jsonl", None, 0, 10, settings)
        assert s0["ok"] == 10 and s0["usd"] <= tag_cap  # the first job fits
        before = server.requests
        with pytest.raises(SpendCapExceeded):  # the second would fit alone, not on top of the first
            tagging.tag_shard(records, tmp_path / "shard-1.jsonl", None, 1, 10, settings)
        assert 0 < server.requests - before < 10
        assert _spent(cache, "tagging") <= tag_cap

        # the judge: two jobs on different queries; the cap is 1.5 jobs' estimate
        def judge(rec, norm, name, cap=None):
            return quality.evaluate(
                norm,
                [rec],
                tmp_path / f"{name}.jsonl",
                tmp_path / f"{name}.tsv",
                judge=backend,
                cache_dir=cache,
                n_precision=10,
                n_consistency=0,
                max_tokens=64,
                prices=PRICES,
                spend_cap_usd=cap,
                cost_estimate=tmp_path / f"{name}.cost.tsv",
            )

        with pytest.raises(SpendCapExceeded):  # learn the estimate without spending: a cap of 0
            judge(rec_a, norm_a, "probe", cap=0.0)
        judge_cap = 1.5 * float(read_tsv(tmp_path / "probe.cost.tsv")[0]["usd"])
        assert judge(rec_a, norm_a, "a", judge_cap)["precision"]["judged"] == 10  # the first job fits
        before = server.requests
        with pytest.raises(SpendCapExceeded):
            judge(rec_b, norm_b, "b", judge_cap)
        assert 0 < server.requests - before < 10
        assert _spent(cache, "quality") <= judge_cap
        # each stage's cap counts its own calls only: the judge's first job was not stopped by tagging's spend
        assert _spent(cache, "tagging") + _spent(cache, "quality") > judge_cap

    assert {("tagging", "estimate"), ("tagging", "run"), ("quality", "estimate"), ("quality", "run")} <= set(seen)
    # the two estimates are the same computation: tagging's table and the judge's row have the same fields
    tag_row, judge_row = read_tsv(tmp_path / "est.tsv")[0], read_tsv(tmp_path / "a.cost.tsv")[0]
    shared = ["backend", "model", "requests", "max_requests", "prompt_tokens", "completion_tokens", "usd"]
    assert all(k in tag_row and k in judge_row for k in shared)
    assert tag_row["usd_per_1m_completion"] == judge_row["usd_per_1m_completion"] == "2000"
