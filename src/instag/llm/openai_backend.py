"""The ``openai`` backend: any OpenAI-compatible chat endpoint (OpenAI, vLLM's or llama.cpp's server, ...).

Requests go through the official ``openai`` async client (``AsyncOpenAI`` with ``max_retries=0``: the
retries are ours), ``transport="sdk"``; or, ``transport="aiohttp"``, straight through aiohttp with the URL
and headers such a client would send (about 6x less CPU per request: 0.12 instead of 0.77 ms here, which
decides whether a 2-core machine can keep 256 requests in flight to a fast local server). ``"auto"`` (the
default) picks ``aiohttp`` for a loopback ``base_url`` (a local vLLM or llama.cpp server) and the SDK otherwise
(remote APIs, whose rate limits are far below either path's speed). Both paths behave the same:

- bounded concurrency: ``concurrency`` workers, each holding one request (with its retries) at a time;
- a total time limit per attempt (``timeout`` seconds);
- retries, at most ``max_retries`` after the first attempt (so at most ``1 + max_retries`` attempts), on 408, 409,
  429 and 5xx answers, connection errors, timeouts, bodies that are not JSON, and answers without a choice or
  text; the wait honours ``retry-after-ms`` and ``Retry-After`` (seconds or an HTTP date, capped at
  ``max_retry_after``), else grows exponentially from ``backoff_base`` to ``backoff_max`` with jitter
  (uniform between half and all of the step). Other 4xx answers (bad request, auth) are not retried;
- requests-per-minute and tokens-per-minute limits (``rpm``, ``tpm``; token buckets holding one second's
  worth, a request counted at its estimated prompt tokens plus ``max_tokens`` and corrected by the real usage);
- structured output: with ``params.json_schema`` set, ``json_mode="schema"`` (``"auto"``) sends
  ``response_format={"type": "json_schema", ...}``, ``"object"`` sends ``{"type": "json_object"}`` (the only
  JSON mode of e.g. gpt-3.5-turbo; the answer must then be a JSON object, and the prompt must say "JSON"),
  ``"none"`` sends nothing.

The API key is read only from the environment variable named by ``api_key_env``, when a batch starts; it is
never stored on the object, logged or written. When the variable is unset and ``base_url`` is a loopback
address, the dummy key ``"EMPTY"`` is used (local servers ignore it); otherwise it is a ConfigError.

:meth:`OpenAIBackend.generate` is synchronous (it runs its own event loop, in a worker thread when called from
inside a running loop), returns one :class:`~instag.llm.base.ChatResponse` per request in order, and never
raises for a single request: after its retries the response carries ``error`` (``"<kind>: <message>"``, kinds
``http_<status>``, ``timeout``, ``connection``, ``bad_json``, ``empty_choices``, ``no_content``), the raw body
received (``text``, at most 4000 characters) and ``attempts``. ``progress(1)`` and ``on_response(index, response)``
are called as each request completes (the cache writes each response as it arrives through ``on_response``).

``revision`` (part of the cache key) is the ``revision`` option, else the model name: a key must be known before
any call, so that a fully cached rerun makes none. Pin a dated model name (or set ``revision``) when it matters.
The model id the endpoint reports is kept in ``served_model`` (and the cache stores it with each record).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import email.utils
import functools
import importlib
import importlib.util
import ipaddress
import json
import logging
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import timezone
from typing import Any
from urllib.parse import urlsplit

from ..errors import ConfigError
from .base import Backend, ChatRequest, ChatResponse, ProgressFn
from .cost import estimate_prompt_tokens

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 409, 429})
_RAW_KEEP = 4000


def is_loopback(url: str | None) -> bool:
    """True for http(s) URLs on localhost / 127.0.0.0/8 / ::1."""
    if not url:
        return False
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_retry_after(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date), or None.

    >>> parse_retry_after({"Retry-After": "2"}), parse_retry_after({"retry-after-ms": "250"})
    (2.0, 0.25)
    >>> parse_retry_after({"Retry-After": "Wed, 21 Oct 2015 07:28:10 GMT"}, now=1445412480.0)
    10.0
    >>> parse_retry_after({"Retry-After": "soon"}) is None
    True
    """
    if not headers:
        return None
    lower = {str(k).lower(): v for k, v in headers.items()}
    ms = lower.get("retry-after-ms")
    if ms:
        try:
            value = float(ms) / 1000.0
            if value >= 0:
                return value
        except ValueError:
            pass
    ra = lower.get("retry-after")
    if not ra:
        return None
    try:
        value = float(ra)
        return value if value >= 0 else None
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(ra)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


class RateLimiter:
    """An async token bucket: ``per_minute`` units per minute, holding at most ``burst_seconds`` worth.

    ``acquire(n)`` waits until the bucket holds ``min(n, capacity)``, then takes ``n`` (the level may go below
    zero for a request larger than the bucket: later requests then wait longer). ``refund(n)`` gives units back.
    """

    def __init__(self, per_minute: float, burst_seconds: float = 1.0, clock: Callable[[], float] = time.monotonic):
        if per_minute <= 0:
            raise ValueError("per_minute must be > 0")
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * burst_seconds)
        self.level = self.capacity
        self.clock = clock
        self.stamp = clock()
        self._lock = asyncio.Lock()

    def _fill(self) -> None:
        now = self.clock()
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    async def acquire(self, n: float = 1.0) -> None:
        async with self._lock:  # first come, first served
            need = min(n, self.capacity)
            while True:
                self._fill()
                if self.level >= need:
                    self.level -= n
                    return
                await asyncio.sleep((need - self.level) / self.rate)

    def refund(self, n: float) -> None:
        self._fill()
        self.level = min(self.capacity, self.level + n)


class _TransportTimeout(Exception):
    """The transport gave up waiting (some transports also say this when a connection is lost)."""


class _SDKTransport:
    """POST /chat/completions through the official ``openai`` async client (``AsyncOpenAI``, ``max_retries=0``).

    ``client.post`` with ``cast_to=<httpx>.Response`` (the SDK's documented way to call an endpoint with a raw
    body and get the raw response) skips the SDK's per-request transformation of typed params, which costs
    more CPU than the HTTP exchange itself; the body is parsed by us, so malformed answers are ours to judge.
    """

    def __init__(self, backend: OpenAIBackend, api_key: str):
        import openai

        self.client = openai.AsyncOpenAI(
            api_key=api_key,
            base_url=backend.base_url,
            max_retries=0,
            timeout=backend.timeout + 5,
            http_client=_http_client(backend.http_client, backend.concurrency),
        )
        self.response_cls = _httpx_module().Response

    async def send(self, body: dict) -> bytes:
        import openai

        try:
            raw = await self.client.post("/chat/completions", cast_to=self.response_cls, body=body)
            return await raw.aread()
        except openai.APITimeoutError as exc:
            raise _TransportTimeout(_short(_root(exc))) from exc
        except openai.APIStatusError as exc:
            try:
                text, headers = exc.response.text[:_RAW_KEEP], exc.response.headers
            except Exception:
                text, headers = None, None
            raise _status_failure(exc.status_code, _short(exc), text, headers) from None
        except openai.APIConnectionError as exc:
            raise _Failure("connection", _short(_root(exc)), True) from None

    async def close(self) -> None:
        await self.client.close()


class _AiohttpTransport:
    """POST /chat/completions with aiohttp directly: about 6x less CPU per request than the SDK path, for
    high-rate local servers (vLLM, llama.cpp). URL and headers (auth, organization, project, user agent) are
    taken from an ``AsyncOpenAI`` client built with the same settings, so both paths send the same request."""

    def __init__(self, backend: OpenAIBackend, api_key: str):
        import aiohttp

        self.url, headers = _sdk_request_target(backend.base_url, api_key)
        self.session = aiohttp.ClientSession(
            headers=headers,
            connector=aiohttp.TCPConnector(limit=backend.concurrency, limit_per_host=backend.concurrency),
            timeout=aiohttp.ClientTimeout(total=backend.timeout + 5),
            auto_decompress=False,  # the request asks for no compression (Accept-Encoding: identity)
        )

    async def send(self, body: dict) -> bytes:
        import aiohttp

        try:
            async with self.session.post(self.url, data=json.dumps(body).encode("utf-8")) as resp:
                content = await resp.read()
                status, headers = resp.status, resp.headers
        except aiohttp.ServerTimeoutError as exc:
            raise _TransportTimeout(_short(exc)) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise _Failure("connection", _short(exc), True) from None
        if status >= 400:
            text = content.decode("utf-8", "replace")
            raise _status_failure(status, f"Error code: {status} - {text[:300]}", text[:_RAW_KEEP], headers)
        return content

    async def close(self) -> None:
        await self.session.close()


@functools.lru_cache(maxsize=16)
def _sdk_request_target(base_url: str | None, api_key: str) -> tuple[str, dict[str, str]]:
    """The URL and headers (auth, organization, project, user agent) an ``AsyncOpenAI`` client built with
    these settings sends. Computed once per process and settings: building the SDK client loads the TLS
    certificate store (~0.1-0.4 s), which each batch paid before."""
    import openai

    sdk = openai.AsyncOpenAI(api_key=api_key, base_url=base_url, max_retries=0)
    auth = getattr(sdk, "auth_headers", None) or {"Authorization": f"Bearer {api_key}"}
    headers = {k: v for k, v in {**sdk.default_headers, **auth}.items() if isinstance(v, str)}
    headers["Content-Type"] = "application/json"
    headers["Accept-Encoding"] = "identity"
    url = str(sdk.base_url).rstrip("/") + "/chat/completions"
    return url, headers  # the SDK client never opened a connection: nothing to close


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
        return True
    except RuntimeError:
        return False


def _status_failure(status: int, message: str, text: str | None, headers) -> _Failure:
    retry = status in RETRY_STATUS or status >= 500
    return _Failure(f"http_{status}", message, retry, text, parse_retry_after(headers) if retry else None)


class _Failure(Exception):
    def __init__(self, kind: str, message: str, retryable: bool, raw: str | None = None, wait: float | None = None):
        super().__init__(message)
        self.kind, self.message, self.retryable, self.raw, self.wait = kind, message, retryable, raw, wait


def _httpx_module():
    """The HTTPX flavour the installed openai SDK is built on (``httpx`` for openai 1.x, ``httpx2`` later)."""
    import openai

    base = next(c for c in openai.DefaultAsyncHttpxClient.__mro__ if c.__name__ == "AsyncClient")
    return importlib.import_module(base.__module__.split(".")[0])


def _http_client(kind: str, concurrency: int):
    """An HTTP client for the openai SDK with a pool as large as the concurrency (``None``: the SDK default)."""
    import openai

    if kind == "auto":
        kind = "aiohttp" if importlib.util.find_spec("aiohttp") is not None else "httpx"
    try:
        cls = openai.DefaultAioHttpClient if kind == "aiohttp" else openai.DefaultAsyncHttpxClient
        limits = _httpx_module().Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        return cls(limits=limits)
    except Exception as exc:  # an SDK without these helpers (or without aiohttp support): its default client
        log.info("openai backend: the SDK's default HTTP client (%s)", exc)
        return None


def _run_loop(make_coro: Callable[[], Any]) -> Any:
    """Run a coroutine to completion on a new event loop: uvloop's when installed (its C loop and transports
    take about half the CPU per request of asyncio's, which decides the rate at 256 requests in flight on
    2 cores), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(make_coro())
    return uvloop.run(make_coro())


def _run_sync(make_coro: Callable[[], Any]) -> Any:
    if not _loop_running():
        return _run_loop(make_coro)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="openai-backend") as pool:
        return pool.submit(lambda: _run_loop(make_coro)).result()


class OpenAIBackend(Backend):
    """Chat completions from an OpenAI-compatible endpoint. See the module docstring for the behaviour."""

    name = "openai"
    paid = True  # an API that bills per token: a spend cap needs a price for the model
    streams = True

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 16,
        timeout: float = 60.0,
        max_retries: int = 5,
        rpm: float | None = None,
        tpm: float | None = None,
        json_mode: str = "auto",
        extra_body: dict | None = None,
        *,
        revision: str | None = None,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        max_retry_after: float = 120.0,
        transport: str = "auto",
        http_client: str = "auto",
        schema_name: str = "output",
        schema_strict: bool = False,
        max_tokens_param: str = "max_tokens",
        api_key: Any = None,
    ):
        if api_key is not None:
            raise ConfigError(
                "api_key",
                "the API key is read only from the environment; set the variable named by "
                f"'api_key_env' ({api_key_env}) instead of putting the key in a config",
            )
        if not model or not isinstance(model, str):
            raise ConfigError("model", "the openai backend needs a model name")
        if json_mode not in ("auto", "schema", "object", "none"):
            raise ConfigError("json_mode", f"must be one of auto, schema, object, none (got {json_mode!r})")
        if transport not in ("auto", "sdk", "aiohttp"):
            raise ConfigError("transport", f"must be one of auto, sdk, aiohttp (got {transport!r})")
        if http_client not in ("auto", "aiohttp", "httpx"):
            raise ConfigError("http_client", f"must be one of auto, aiohttp, httpx (got {http_client!r})")
        if max_tokens_param not in ("max_tokens", "max_completion_tokens"):
            raise ConfigError("max_tokens_param", "must be max_tokens or max_completion_tokens")
        for key, value, low in (("concurrency", concurrency, 1), ("max_retries", max_retries, 0)):
            if not isinstance(value, int) or value < low:
                raise ConfigError(key, f"must be an integer >= {low} (got {value!r})")
        for key, value in (("timeout", timeout), ("rpm", rpm), ("tpm", tpm)):
            if value is not None and not (isinstance(value, (int, float)) and value > 0):
                raise ConfigError(key, f"must be a positive number (got {value!r})")
        try:
            import openai  # noqa: F401
        except ModuleNotFoundError:
            raise ConfigError(
                "backend", "the openai backend needs the package 'openai': pip install 'instag-workflow[llm]'"
            ) from None
        self.model = model
        self.revision = revision or model
        self.base_url = base_url
        self.api_key_env = api_key_env
        self._api_key()  # fail now, before any work, when the key is missing
        self.concurrency = concurrency
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.rpm, self.tpm = rpm, tpm
        self.json_mode = json_mode
        self.extra_body = dict(extra_body or {})
        self.backoff_base, self.backoff_max = float(backoff_base), float(backoff_max)
        self.max_retry_after = float(max_retry_after)
        self.transport = transport
        self.used_transport: str | None = None
        self.http_client = http_client
        self.schema_name, self.schema_strict = schema_name, bool(schema_strict)
        self.max_tokens_param = max_tokens_param
        self.served_model: str | None = None
        self.served_models: Counter[str] = Counter()
        self.error_counts: Counter[str] = Counter()  # every failed attempt, by kind
        self._rng = random.Random()

    @property
    def reported_model(self) -> str | None:
        return self.served_model

    def __repr__(self) -> str:
        return f"OpenAIBackend(model={self.model!r}, base_url={self.base_url!r}, concurrency={self.concurrency})"

    def _api_key(self) -> str:
        key = os.environ.get(self.api_key_env)
        if key:
            return key
        if is_loopback(self.base_url):
            return "EMPTY"
        raise ConfigError(
            "api_key_env",
            f"environment variable {self.api_key_env} is not set; the API key is read "
            "only from the environment (a dummy key is used only for loopback base_url)",
        )

    # ------------------------------------------------------------------ request building
    def _kwargs(self, req: ChatRequest) -> dict[str, Any]:
        p = req.params
        kw: dict[str, Any] = {
            "model": self.model,
            "messages": req.messages,
            "temperature": p.temperature,
            "top_p": p.top_p,
            self.max_tokens_param: p.max_tokens,
        }
        if p.seed is not None:
            kw["seed"] = p.seed
        if p.stop:
            kw["stop"] = list(p.stop)
        if p.json_schema is not None and self.json_mode != "none":
            if self.json_mode == "object":
                kw["response_format"] = {"type": "json_object"}
            else:
                kw["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": self.schema_name, "schema": p.json_schema, "strict": self.schema_strict},
                }
        if self.extra_body:
            kw.update(self.extra_body)
        return kw

    # ------------------------------------------------------------------ one attempt
    async def _attempt(self, transport, body: dict) -> tuple[str, dict]:
        t0 = time.monotonic()
        try:
            if hasattr(asyncio, "timeout"):
                async with asyncio.timeout(self.timeout):
                    content = await transport.send(body)
            else:  # Python 3.10
                content = await asyncio.wait_for(transport.send(body), self.timeout)
        except (asyncio.TimeoutError, _TransportTimeout) as exc:
            if time.monotonic() - t0 < 0.9 * self.timeout:  # a transport that reports a lost connection as timeout
                raise _Failure("connection", _short(_root(exc)), True) from None
            raise _Failure("timeout", f"no answer within {self.timeout:g} s", True) from None
        text = content.decode("utf-8", "replace")
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise _Failure("bad_json", f"response body is not JSON ({exc})", True, text[:_RAW_KEEP]) from None
        if not isinstance(data, dict):
            raise _Failure("bad_json", "response body is not a JSON object", True, text[:_RAW_KEEP])
        return text, data

    async def _one(self, client, req: ChatRequest, rpm: RateLimiter | None, tpm: RateLimiter | None) -> ChatResponse:
        kwargs = self._kwargs(req)
        est_tokens = estimate_prompt_tokens(req.messages) + int(req.params.max_tokens) if tpm is not None else 0
        t0 = time.perf_counter()
        failure: _Failure | None = None
        attempt = 0
        for attempt in range(1, self.max_retries + 2):
            if rpm is not None:
                await rpm.acquire(1)
            if tpm is not None:
                await tpm.acquire(est_tokens)
            try:
                text, data = await self._attempt(client, kwargs)
                usage = data.get("usage") or {}
                if tpm is not None:
                    used = int(usage.get("prompt_tokens") or 0) + int(usage.get("completion_tokens") or 0)
                    if used and used < est_tokens:
                        tpm.refund(est_tokens - used)
                choices = data.get("choices")
                if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
                    raise _Failure("empty_choices", "the response has no choices", True, text[:_RAW_KEEP])
                choice = choices[0]
                message = choice.get("message") or {}
                content = message.get("content")
                if not isinstance(content, str):
                    refusal = message.get("refusal")
                    raise _Failure(
                        "no_content",
                        f"the response has no text{f' (refusal: {refusal})' if refusal else ''}",
                        not refusal,
                        text[:_RAW_KEEP],
                    )
            except _Failure as exc:
                failure = exc
                self.error_counts[exc.kind] += 1
                if not exc.retryable or attempt > self.max_retries:
                    break
                await asyncio.sleep(self._wait(attempt, exc.wait))
                continue
            served = data.get("model")
            if isinstance(served, str) and served:
                self.served_model = served
                self.served_models[served] += 1
            return ChatResponse(
                text=content,
                prompt_tokens=int(usage.get("prompt_tokens") or 0),
                completion_tokens=int(usage.get("completion_tokens") or 0),
                seconds=time.perf_counter() - t0,
                finish_reason=choice.get("finish_reason"),
                attempts=attempt,
            )
        assert failure is not None
        return ChatResponse(
            text=failure.raw,
            seconds=time.perf_counter() - t0,
            error=f"{failure.kind}: {failure.message} (after {attempt} attempt{'s' if attempt > 1 else ''})",
            attempts=attempt,
        )

    def _wait(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            base = min(retry_after, self.max_retry_after)
            return base + self._rng.uniform(0, 0.1 * base)
        step = min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))
        return self._rng.uniform(step / 2, step)

    # ------------------------------------------------------------------ batch
    async def _run(self, requests: list[ChatRequest], progress, on_response) -> list[ChatResponse]:
        kind = self.transport
        if kind == "auto":
            kind = "aiohttp" if is_loopback(self.base_url) and importlib.util.find_spec("aiohttp") else "sdk"
        client = (_AiohttpTransport if kind == "aiohttp" else _SDKTransport)(self, self._api_key())
        self.used_transport = kind
        rpm = RateLimiter(self.rpm) if self.rpm else None
        tpm = RateLimiter(self.tpm) if self.tpm else None
        out: list[ChatResponse | None] = [None] * len(requests)
        todo = iter(range(len(requests)))

        async def worker() -> None:
            for i in todo:
                resp = await self._one(client, requests[i], rpm, tpm)
                out[i] = resp
                if on_response is not None:
                    on_response(i, resp)
                if progress is not None:
                    progress(1)

        workers = [asyncio.ensure_future(worker()) for _ in range(min(self.concurrency, len(requests)))]
        try:
            await asyncio.gather(*workers)
        except BaseException:
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            raise
        finally:
            await client.close()
        return out  # type: ignore[return-value]

    def generate(
        self,
        requests: Sequence[ChatRequest],
        progress: ProgressFn | None = None,
        on_response: Callable[[int, ChatResponse], None] | None = None,
    ) -> list[ChatResponse]:
        """Answer every request, in order; never raises for a single request's failure."""
        requests = list(requests)
        if not requests:
            return []
        return _run_sync(lambda: self._run(requests, progress, on_response))

    def close(self) -> None:
        """Nothing held between batches (each batch opens and closes its own client)."""


def _root(exc: BaseException) -> BaseException:
    while exc.__cause__ is not None and exc.__cause__ is not exc:
        exc = exc.__cause__
    return exc


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 300 else text[:300] + "..."


__all__ = ["OpenAIBackend", "RateLimiter", "is_loopback", "parse_retry_after"]
