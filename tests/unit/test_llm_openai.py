"""The openai backend against a real loopback HTTP server: canned, slow, malformed, 429/5xx answers; limits;
the key only from the environment; the backend registry (instag.llm.get_backend)."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from instag.errors import ConfigError
from instag.llm import BACKENDS, get_backend
from instag.llm.base import ChatRequest, GenerationParams
from instag.llm.cache import CachedBackend, cache_stats
from instag.llm.openai_backend import OpenAIBackend, RateLimiter, is_loopback, parse_retry_after
from tests.support import openai_server as _server_module
from tests.support.openai_server import FAULT_KINDS, OpenAIServer

openai_server = _server_module.openai_server  # fixtures
openai_server_factory = _server_module.openai_server_factory

TRANSPORTS = ["sdk", "aiohttp"]
SCHEMA = {"type": "array", "items": {"type": "object", "properties": {"tag": {"type": "string"}}}}


def req(text: str, params: GenerationParams | None = None) -> ChatRequest:
    return ChatRequest([{"role": "user", "content": text}], params or GenerationParams())


def backend_for(server: OpenAIServer, **kw) -> OpenAIBackend:
    opts = dict(concurrency=8, timeout=2.0, max_retries=3, backoff_base=0.01, backoff_max=0.05)
    opts.update(kw)
    return OpenAIBackend("test-model", base_url=server.base_url, **opts)


@pytest.fixture(autouse=True)
def _no_real_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


# ------------------------------------------------------------------------------------------ canned answers


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_canned_answers_tokens_and_request_body(openai_server_factory, transport):
    server = openai_server_factory(
        reply=lambda body: "echo " + body["messages"][-1]["content"], served_model="test-model-0613"
    )
    b = backend_for(server, transport=transport, extra_body={"top_k": 5})
    params = GenerationParams(temperature=0.5, top_p=0.9, max_tokens=33, seed=7, stop=("END",))
    out = b.generate([req(f"hello {i}", params) for i in range(12)])
    assert [r.text for r in out] == [f"echo hello {i}" for i in range(12)]
    assert all(r.ok and r.attempts == 1 and r.finish_reason == "stop" and not r.cached for r in out)
    assert all(r.prompt_tokens == 2 + 4 + 3 and r.completion_tokens == 3 and r.seconds > 0 for r in out)
    assert b.served_model == "test-model-0613" and b.used_transport == transport
    body = server.bodies[0]
    assert body["model"] == "test-model" and body["temperature"] == 0.5 and body["top_p"] == 0.9
    assert body["max_tokens"] == 33 and body["seed"] == 7 and body["stop"] == ["END"] and body["top_k"] == 5
    assert "response_format" not in body


@pytest.mark.parametrize(
    ("json_mode", "expected"),
    [
        ("auto", {"type": "json_schema", "json_schema": {"name": "output", "schema": SCHEMA, "strict": False}}),
        ("schema", {"type": "json_schema", "json_schema": {"name": "output", "schema": SCHEMA, "strict": False}}),
        ("object", {"type": "json_object"}),
        ("none", None),
    ],
)
def test_structured_output_modes(openai_server, json_mode, expected):
    b = backend_for(openai_server, json_mode=json_mode)
    b.generate([req("x", GenerationParams(json_schema=SCHEMA)), req("y")])
    bodies = {bd["messages"][-1]["content"]: bd for bd in openai_server.bodies}
    assert bodies["x"].get("response_format") == expected
    assert "response_format" not in bodies["y"]  # no schema asked: free text


def test_max_tokens_finish_reason_length(openai_server_factory):
    server = openai_server_factory(reply=lambda body: "one two three four five")
    (r,) = backend_for(server).generate([req("x", GenerationParams(max_tokens=2))])
    assert r.ok and r.text == "one two" and r.finish_reason == "length"


def test_progress_on_response_and_order(openai_server_factory):
    server = openai_server_factory(delay=0.01, reply=lambda body: body["messages"][-1]["content"][::-1])
    ticks, seen = [], {}
    out = backend_for(server, concurrency=5).generate(
        [req(f"abc{i}") for i in range(23)], ticks.append, on_response=seen.__setitem__
    )
    assert [r.text for r in out] == [f"abc{i}"[::-1] for i in range(23)]
    assert sum(ticks) == 23 and sorted(seen) == list(range(23))


def test_concurrency_is_bounded(openai_server_factory):
    server = openai_server_factory(delay=0.05)
    backend_for(server, concurrency=4).generate([req(f"q{i}") for i in range(24)])
    assert 2 <= server.stats(bodies=False)["max_in_flight"] <= 4


def test_generate_works_inside_a_running_event_loop(openai_server):
    b = backend_for(openai_server)

    async def caller():
        return b.generate([req("a"), req("b")])

    assert all(r.ok for r in asyncio.run(caller()))


# ------------------------------------------------------------------------------------------------ faults


def first_attempt(kind):
    return lambda prompt, n: kind if n == 1 else None


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_each_fault_is_retried_then_succeeds(openai_server_factory, kind, transport):
    server = openai_server_factory(fault_fn=first_attempt(kind), hang_seconds=3.0, retry_after=0.01)
    b = backend_for(server, transport=transport, timeout=0.5)
    out = b.generate([req("q1"), req("q2")])
    assert all(r.ok and r.attempts == 2 for r in out), [r.error for r in out]
    assert server.counts == {"q1": 2, "q2": 2}
    assert server.faults_injected == {kind: 2}
    expected = {
        "429_retry_after": "http_429",
        "429_retry_after_ms": "http_429",
        "429": "http_429",
        "500": "http_500",
        "503": "http_503",
        "reset": "connection",
        "timeout": "timeout",
        "truncated_json": "bad_json",
        "non_json": "bad_json",
        "empty_choices": "empty_choices",
    }[kind]
    assert dict(b.error_counts) == {expected: 2}


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("kind", ["500", "non_json", "empty_choices", "429"])
def test_persistent_fault_fails_after_exactly_max_retries(openai_server_factory, kind, transport):
    server = openai_server_factory(fault_fn=lambda p, n: kind, retry_after=0.01)
    b = backend_for(server, transport=transport, max_retries=3)
    (r,) = b.generate([req("doomed")])
    assert not r.ok and r.attempts == 4 and server.counts == {"doomed": 4}
    assert "after 4 attempts" in r.error
    if kind == "non_json":
        assert r.error.startswith("bad_json") and "502 Bad Gateway" in r.text  # the raw body, kept
    if kind == "500":
        assert r.error.startswith("http_500") and "injected fault" in r.text


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("kind", ["400", "401"])
def test_client_errors_are_not_retried(openai_server_factory, kind, transport):
    server = openai_server_factory(fault_fn=lambda p, n: kind)
    (r,) = backend_for(server, transport=transport).generate([req("bad")])
    assert not r.ok and r.attempts == 1 and r.error.startswith(f"http_{kind}") and server.counts == {"bad": 1}


@pytest.mark.parametrize("kind", ["429_retry_after", "429_retry_after_ms"])
def test_retry_after_is_honoured(openai_server_factory, kind):
    server = openai_server_factory(fault_fn=first_attempt(kind), retry_after=0.4)
    b = backend_for(server, backoff_base=0.001, backoff_max=0.001)
    t0 = time.perf_counter()
    (r,) = b.generate([req("wait")])
    assert r.ok and r.attempts == 2 and time.perf_counter() - t0 >= 0.4


def test_retry_after_parsing():
    assert parse_retry_after({"Retry-After": "3"}) == 3.0
    assert parse_retry_after({"retry-after-ms": "1500", "Retry-After": "9"}) == 1.5
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, now=1445412470.0) == 10.0
    assert parse_retry_after({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, now=1445412490.0) == 0.0
    assert parse_retry_after({"Retry-After": "-1"}) is None and parse_retry_after({}) is None


def test_mixed_faults_every_item_done_or_failed_within_retry_limit(openai_server_factory, tmp_path):
    server = openai_server_factory(fault_rate=0.2, seed=11, hang_seconds=2.0, retry_after=0.01)
    b = backend_for(server, concurrency=32, timeout=0.4, max_retries=2)
    cb = CachedBackend(b, tmp_path)
    requests = [req(f"item {i}") for i in range(300)]
    out = cb.generate(requests)
    stats = server.stats(bodies=False)
    assert sum(stats["faults_injected"].values()) >= 40  # ~20% of >= 300 attempts
    assert len(out) == 300 and all(r.ok or r.error for r in out)
    assert max(stats["counts"].values()) <= 1 + b.max_retries, "a request was made more often than its retries"
    assert sum(r.attempts for r in out) == stats["requests"], "attempts are not counted exactly"
    failed = [r for r in out if not r.ok]
    assert failed, "with this seed some items fault three times in a row (the rerun below needs them)"
    assert all(r.attempts == 3 for r in failed)
    st = cache_stats(tmp_path)
    assert st["ok_keys"] == 300 - len(failed) and st["failed_keys"] == len(failed)
    # rerun: only the failed ones are asked again; no success is served from a failure
    server.reset()
    out2 = CachedBackend(b, tmp_path).generate(requests)
    assert server.stats(bodies=False)["requests"] == sum(r.attempts for r in out2 if not r.cached)
    assert sum(1 for r in out2 if not r.cached) == len(failed)


# ------------------------------------------------------------------------------------------- rate limits


def test_requests_per_minute_limit(openai_server):
    b = backend_for(openai_server, concurrency=16, rpm=1200)  # 20/s, bucket of 20
    t0 = time.perf_counter()
    b.generate([req(f"r{i}") for i in range(30)])
    assert time.perf_counter() - t0 >= 0.45  # the 10 beyond the bucket take >= 0.5 s


def test_tokens_per_minute_limiter():
    async def run():
        lim = RateLimiter(6000)  # 100 per second, bucket of 100
        t0 = time.perf_counter()
        await lim.acquire(100)
        fast = time.perf_counter() - t0
        await lim.acquire(50)  # empty bucket: waits ~0.5 s
        slow = time.perf_counter() - t0
        lim.refund(30)
        return fast, slow, lim.level

    fast, slow, level = asyncio.run(run())
    assert fast < 0.1 and slow >= 0.45 and level >= 29


def test_tpm_counts_tokens(openai_server_factory):
    server = openai_server_factory(reply=lambda body: " ".join(["word"] * 100))
    b = backend_for(server, concurrency=8, tpm=60 * 400)  # 400 tokens/s, bucket of 400
    t0 = time.perf_counter()
    out = b.generate([req(f"t{i}", GenerationParams(max_tokens=100)) for i in range(8)])  # 108 each: 864 > 400
    assert all(r.completion_tokens == 100 for r in out)
    assert time.perf_counter() - t0 >= 0.8


# ------------------------------------------------------------------------------------------------ the key


def test_key_only_from_the_environment(monkeypatch):
    with pytest.raises(ConfigError, match="api_key_env"):
        OpenAIBackend("gpt-x", base_url="https://api.example.com/v1")
    with pytest.raises(ConfigError, match="api_key"):
        OpenAIBackend("gpt-x", api_key="sk-in-config")
    monkeypatch.setenv("MY_KEY", "sk-env")
    OpenAIBackend("gpt-x", base_url="https://api.example.com/v1", api_key_env="MY_KEY")
    OpenAIBackend("gpt-x", base_url="http://127.0.0.1:9/v1")  # loopback: dummy key
    assert is_loopback("http://localhost:8000/v1") and is_loopback("http://[::1]:1/v1")
    assert not is_loopback("https://api.openai.com/v1")


def test_key_is_never_stored_logged_or_cached(openai_server, tmp_path, monkeypatch, caplog):
    secret = "sk-test-FAKE-0123456789-SECRET"
    monkeypatch.setenv("INSTAG_TEST_KEY", secret)
    caplog.set_level(logging.DEBUG)
    for transport in TRANSPORTS:
        b = backend_for(openai_server, api_key_env="INSTAG_TEST_KEY", transport=transport)
        cb = CachedBackend(b, tmp_path / transport)
        cb.generate([req("hello"), req("again")])
        cb.close()
        assert secret not in repr(b) and secret not in repr(vars(b))
    assert secret not in caplog.text
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    assert all(secret not in repr(body) for body in openai_server.bodies)


# --------------------------------------------------------------------------------------------- registry


def test_get_backend_constructs_by_name(openai_server):
    b = get_backend({"backend": "openai", "model": "m", "base_url": openai_server.base_url, "concurrency": 3})
    assert isinstance(b, OpenAIBackend) and b.concurrency == 3 and b.name == "openai"
    s = get_backend({"backend": "scripted", "fail_every": 2})
    assert s.name == "scripted" and s.fail_every == 2


def test_get_backend_names_bad_specs(monkeypatch):
    with pytest.raises(ConfigError, match="'backend'.*unknown backend 'nope'"):
        get_backend({"backend": "nope"})
    with pytest.raises(ConfigError, match="'concurency'"):
        get_backend({"backend": "scripted", "concurency": 3})
    with pytest.raises(ConfigError, match="'backend'"):
        get_backend({"model": "x"})
    import importlib

    real = importlib.import_module

    def fake_import(name, *a, **k):
        if name.endswith("openai_backend"):
            raise ModuleNotFoundError("No module named 'openai'", name="openai")
        return real(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", fake_import)
    with pytest.raises(ConfigError, match=r"'backend'.*needs the package 'openai'.*pip install"):
        get_backend({"backend": "openai", "model": "m"})
    assert set(BACKENDS) >= {"openai", "embedded", "transformers", "vllm", "scripted"}
