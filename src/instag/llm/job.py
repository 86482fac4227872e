"""The one LLM-job layer every model-calling stage uses: backend spec -> cost estimate -> spend cap -> cache ->
parse and re-ask -> results or failure records.

Usage (tagging, the quality judge, MT-Bench answers and judge, InsTagger evaluation all look like this)::

    from instag.llm.job import JobSettings, LLMJob

    settings = JobSettings(backend={"backend": "openai", "model": "gpt-4"}, cache_dir="cache/llm",
                           prices={"gpt-4": {"prompt": 30, "completion": 60}}, spend_cap_usd=5.0,
                           max_retries=2, retry_temperature=0.7, section="quality")
    with LLMJob(settings, stage="quality", namespace=content_hash([template, schema]), threads=2) as job:
        row = job.estimate(requests)               # tokens and USD before any call (USD None: no price)
        results = job.run(requests, parse=fn)      # fn(text) -> (value, error | None); one JobResult each
        for r in results: r.ok, r.value, r.error, r.raw, r.attempts, r.cached, r.response
        job.backend_info                           # {"backend", "model", "revision", "engine", "reported_model"}

What a job does:

- **Backend** from the spec (``{"backend": NAME, ...options}``), built on first need, so an estimate never
  loads a model; ``threads`` goes to backends that take it (``Backend.takes_threads``). Tests pass
  ``backend=`` instead.
- **Namespace**: cache keys are made under ``"<stage>:<namespace>"`` (the caller hashes its prompt template,
  schema and anything else that changes answers, e.g. with :func:`instag.llm.prompts.content_hash`).
- **Cost, one rule** (:mod:`instag.llm.cost`): a model with a price in ``prices`` costs that; one without
  has a blank cost and no cap applies to it, except that a cap on a paid backend (``Backend.paid``) with no
  price for its model is a ConfigError naming ``<section>.prices``, raised when the job is made.
- **Spend cap** for the stage: when the backend is built, what every earlier job of the stage spent is
  counted from the cache (:func:`~instag.llm.cost.stage_spend`); the cache then admits only requests whose
  estimated cost still fits, and raises :class:`~instag.llm.cost.SpendCapExceeded` (with everything answered
  so far written) when the next one would pass the cap.
- **Cache**: every call is cached by content (:class:`~instag.llm.cache.CachedBackend`; ``cache_dir=None``
  caches nothing but still counts and guards).
- **Parse and re-ask**: first, for each request, the cached answer of any attempt that parses is used with
  no call; then the rest are asked, and an answer that fails (at the backend, or ``parse``) is asked again up
  to ``max_retries`` times. A retry is a new sample: attempt ``k`` has repeat index ``request.repeat + k`` and,
  when the first attempt is greedy, ``retry_temperature``. What still fails is a failure record: ``ok=False``
  with the error and the raw text of the last answer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import ConfigError
from .base import Backend, ChatRequest, ChatResponse, GenerationParams, ProgressFn
from .cache import CachedBackend
from .cost import SpendCapExceeded, SpendGuard, estimate_requests, resolve_price, stage_spend

log = logging.getLogger(__name__)

ParseFn = Callable[[str], tuple[Any, "str | None"]]


def text_parser(text: str) -> tuple[Any, str | None]:
    """The default parser: any non-empty text is the value."""
    return (text, None) if text.strip() else (None, "empty answer")


@dataclass
class JobSettings:
    """What a stage's config says about its model calls (the stage's own section maps onto these)."""

    backend: dict = field(default_factory=lambda: {"backend": "embedded"})
    cache_dir: str | None = "cache/llm"
    prices: dict = field(default_factory=dict)
    spend_cap_usd: float | None = None
    max_retries: int = 2
    retry_temperature: float = 0.7
    #: the config section errors name (``"tagging"`` -> ``tagging.prices``); empty: bare keys
    section: str = ""
    #: the key of the backend spec in that section (``backend``; the quality judge's is ``judge``)
    backend_key: str = "backend"

    def key(self, name: str) -> str:
        return f"{self.section}.{name}" if self.section else name

    def check(self, spec: bool = True) -> None:
        """Named errors for bad values (``spec``: also check the backend spec, unless a backend is given)."""
        if spec and (not isinstance(self.backend, dict) or "backend" not in self.backend):
            raise ConfigError(self.key(self.backend_key), "a mapping with a 'backend' key, e.g. {backend: embedded}")
        if self.max_retries < 0:
            raise ConfigError(self.key("max_retries"), "must be >= 0")
        if self.retry_temperature < 0:
            raise ConfigError(self.key("retry_temperature"), "must be >= 0")
        if self.spend_cap_usd is not None and self.spend_cap_usd < 0:
            raise ConfigError(self.key("spend_cap_usd"), "must be >= 0")


@dataclass
class JobResult:
    """The outcome of one request after its attempts: a parsed value, or a failure record."""

    ok: bool
    value: Any = None
    error: str | None = None  # why it failed, with the number of attempts
    raw: str | None = None  # the text the value was parsed from, or the last answer's text
    attempts: int = 0  # attempts looked at, cached or called, up to the one used
    cached: bool = False  # the answer used came from the cache (no call in this run)
    response: ChatResponse | None = None  # the answer used, or the last one (tokens, finish_reason)
    request: ChatRequest | None = None  # the request of that answer (its repeat index, params)

    @property
    def retried(self) -> bool:
        return self.attempts > 1


class LLMJob:
    """A stage's model calls through one backend: see the module docstring."""

    def __init__(
        self,
        settings: JobSettings,
        *,
        stage: str,
        namespace: str,
        threads: int | None = None,
        backend: Backend | None = None,
    ):
        from . import backend_class

        settings.check(spec=backend is None)
        self.settings = s = settings
        self.stage = stage
        self.namespace = namespace if namespace.startswith(f"{stage}:") else f"{stage}:{namespace}"
        self.threads = threads
        self._cls = type(backend) if backend is not None else backend_class(s.backend["backend"])
        self.backend_name = self._cls.name
        self.model_name = str(
            backend.model if backend is not None else s.backend.get("model") or self._cls.default_model or ""
        )
        self.price = resolve_price(
            self.model_name,
            s.prices,
            paid=self._cls.paid,
            cap_usd=s.spend_cap_usd,
            backend=self.backend_name,
            key=s.key("prices"),
        )
        if s.spend_cap_usd is not None and self.price is None:
            log.info("%s: no price for %s, so the spend cap does not apply to it", stage, self.model_name)
        self._given = backend
        self._raw: Backend | None = None
        self._cached: CachedBackend | None = None
        self.guard: SpendGuard | None = None
        self.lookup_hits = 0
        self._sampled: dict[int, tuple[GenerationParams, GenerationParams]] = {}  # see attempt_request

    # ------------------------------------------------------------------ backend
    @property
    def raw_backend(self) -> Backend:
        """The model backend itself (built on first use)."""
        if self._raw is None:
            if self._given is not None:
                self._raw = self._given
            else:
                from . import get_backend

                spec = dict(self.settings.backend)
                if self.threads and self._cls.takes_threads and "threads" not in spec:
                    spec["threads"] = int(self.threads)
                self._raw = get_backend(spec)
        return self._raw

    @property
    def backend(self) -> CachedBackend:
        """The cached, guarded backend the job calls (built on first use)."""
        if self._cached is None:
            s = self.settings
            raw = self.raw_backend
            spent = 0.0
            if s.spend_cap_usd is not None and self.price is not None:
                spent = stage_spend(s.cache_dir, self.stage, s.prices)
                log.info(
                    "%s: spend so far on %s: $%.4f of $%.4f (counted from the cache)",
                    self.stage,
                    raw.model,
                    spent,
                    s.spend_cap_usd,
                )
            if self.price is not None:
                self.guard = SpendGuard(s.spend_cap_usd, self.price, raw.model, backend=raw.name, spent_usd=spent)
            self._cached = CachedBackend(raw, s.cache_dir, namespace=self.namespace, guard=self.guard)
        return self._cached

    @property
    def backend_info(self) -> dict[str, Any]:
        """backend, model, revision, engine and the model id the endpoint reported (None if none)."""
        return self.raw_backend.info()

    def count_tokens(self, text: str) -> int:
        return self.raw_backend.count_tokens(text)

    def truncate_text(self, text: str, max_tokens: int) -> tuple[str, bool]:
        return self.raw_backend.truncate_text(text, max_tokens)

    def render(self, messages: list[dict[str, str]]) -> str:
        return self.raw_backend.render(messages)

    @property
    def small_model(self) -> bool:
        return self._cls.small_model

    # ------------------------------------------------------------------ cost
    def estimate(self, requests: Iterable[ChatRequest]) -> dict[str, Any]:
        """Before any call: requests, estimated prompt tokens, completion tokens (``max_tokens``, an upper
        bound) and USD (None without a price), ``max_requests`` counting every retry, and the cap."""
        requests = list(requests)
        row = estimate_requests(requests, self.model_name, self.price, self.backend_name)
        row["max_requests"] = row["requests"] * (self.settings.max_retries + 1)
        row["spend_cap_usd"] = self.settings.spend_cap_usd
        return row

    def usd(self) -> float | None:
        """What this job's calls cost (None without a price)."""
        st = self.backend.stats
        if self.price is None:
            return None
        return round((st.prompt_tokens * self.price[0] + st.completion_tokens * self.price[1]) / 1e6, 6)

    @property
    def stats(self) -> dict[str, Any]:
        """Requests, cache hits (incl. answers found across attempts), calls, failures and tokens of this job."""
        d = self.backend.stats.as_dict() if self._cached is not None else {}
        d["hits"] = d.get("hits", 0) + self.lookup_hits
        d["requests"] = d.get("requests", 0) + self.lookup_hits
        return d

    # ------------------------------------------------------------------ running
    def attempt_request(self, request: ChatRequest, attempt: int) -> ChatRequest:
        """The request of attempt ``attempt`` (0: as given; k: repeat + k, sampled)."""
        if attempt == 0:
            return request
        p = request.params
        if p.temperature > 0:
            return replace(request, repeat=request.repeat + attempt)
        # requests that share a params object share its sampled copy too: the cache's key maker serialises
        # each params object (with its JSON schema) once, not once per request and attempt
        got = self._sampled.get(id(p))
        if got is None or got[0] is not p:
            if len(self._sampled) >= 64:  # a stage uses a few params objects; never hold one per request
                self._sampled.clear()
            got = self._sampled[id(p)] = (p, replace(p, temperature=self.settings.retry_temperature))
        return replace(request, params=got[1], repeat=request.repeat + attempt)

    def run(
        self,
        requests: Sequence[ChatRequest],
        parse: ParseFn | None = None,
        progress: ProgressFn | None = None,
        attempts: Iterable[int] | None = None,
    ) -> list[JobResult]:
        """One :class:`JobResult` per request, in order (see the module docstring for the attempts).

        ``attempts``: the attempt indices to use (default ``0..max_retries``; a retry of failed work may pass
        more). ``progress(n)`` is called as requests get their first answer.
        """
        parse = parse or text_parser
        attempts = list(range(self.settings.max_retries + 1) if attempts is None else attempts)
        if not self._cls.raw_prompts and any(r.prompt is not None for r in requests):
            raise ConfigError(
                self.settings.key(self.settings.backend_key),
                f"backend {self.backend_name!r} cannot take pre-rendered prompts",
            )
        backend = self.backend
        results: list[JobResult | None] = [None] * len(requests)
        pending = list(range(len(requests)))
        # A request is done when any of its attempts has a cached answer that parses (e.g. attempt 0 failed at
        # the backend and attempt 1 succeeded): take the first such answer, with no call, before asking.
        for k, attempt in enumerate(attempts):
            if not pending:
                break
            reqs = [self.attempt_request(requests[i], attempt) for i in pending]
            still = []
            for i, req, resp in zip(pending, reqs, backend.lookup(reqs), strict=True):
                value, error = parse(resp.text) if resp is not None else (None, "no answer")
                if error is not None:
                    still.append(i)
                    continue
                self.lookup_hits += 1
                results[i] = JobResult(True, value, None, resp.text, k + 1, True, resp, req)
            if progress is not None and len(still) < len(pending):
                progress(len(pending) - len(still))
            pending = still
        last: dict[int, tuple[ChatResponse, ChatRequest, str]] = {}
        for k, attempt in enumerate(attempts):
            if not pending:
                break
            reqs = [self.attempt_request(requests[i], attempt) for i in pending]
            still = []
            for i, req, resp in zip(pending, reqs, backend.generate(reqs, progress if k == 0 else None), strict=True):
                if not resp.ok:
                    last[i] = (resp, req, f"backend: {resp.error or 'no text'}")
                    still.append(i)
                    continue
                value, error = parse(resp.text)
                if error is not None:
                    if resp.finish_reason == "length":
                        error += f" (hit max_tokens={req.params.max_tokens})"
                    last[i] = (resp, req, error)
                    still.append(i)
                    continue
                results[i] = JobResult(True, value, None, resp.text, k + 1, resp.cached, resp, req)
            pending = still
        for i in pending:
            resp, req, error = last.get(i, (None, None, "not attempted"))
            results[i] = JobResult(
                False,
                None,
                f"{error} (after {len(attempts)} attempts)",
                resp.text if resp is not None else None,
                len(attempts),
                False,
                resp,
                req,
            )
        return results  # type: ignore[return-value]

    def close(self) -> None:
        if self._cached is not None:
            self._cached.close()
        elif self._raw is not None:
            self._raw.close()

    def __enter__(self) -> LLMJob:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["JobResult", "JobSettings", "LLMJob", "SpendCapExceeded", "text_parser"]
