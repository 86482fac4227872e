"""Cost estimates and a spend cap for API stages.

Prices come from config: ``{model: {"prompt": USD per 1M prompt tokens, "completion": USD per 1M completion
tokens}}``, looked up by the exact model name. Local backends (``embedded``, ``transformers``, ``vllm``,
``scripted``) cost nothing; a paid backend (``openai``) with a model missing from the table is a
:class:`~instag.errors.ConfigError` naming the ``prices`` key, so nothing is sent before a price is known (an
OpenAI-compatible local server gets an entry with price 0).

Token counts before a call are estimates: prompt tokens from the UTF-8 size of the messages (one token per 3
bytes, plus 4 per message and 3 per request: higher than real counts for English text), completion tokens
from ``max_tokens`` (the most a call can produce). After a call the real counts are charged.

:class:`SpendGuard` is what :class:`instag.llm.cache.CachedBackend` consults before sending each chunk of
uncached requests: :meth:`SpendGuard.admit` says how many of them fit under the cap, and when the cap would be
exceeded the cache raises :class:`SpendCapExceeded` after everything already answered has been written.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .errors import ConfigError, InstagError

#: Backends that run locally and cost nothing.
LOCAL_BACKENDS = frozenset({"embedded", "transformers", "vllm", "scripted"})


class SpendCapExceeded(InstagError):
    """The next requests would take the spend past the configured cap; what was answered is in the cache."""

    def __init__(self, cap_usd: float, spent_usd: float, remaining_requests: int):
        self.cap_usd, self.spent_usd, self.remaining_requests = cap_usd, spent_usd, remaining_requests
        super().__init__(
            f"spend cap of ${cap_usd:.4f} reached: ${spent_usd:.4f} spent, {remaining_requests} request(s) not "
            "sent (the answered ones are in the cache; raise 'spend_cap_usd' or rerun to continue)"
        )


def prices_for(model: str, prices: Mapping[str, Any] | None, backend: str = "openai") -> tuple[float, float]:
    """(USD per 1M prompt tokens, USD per 1M completion tokens) of ``model``; (0, 0) for local backends."""
    if backend in LOCAL_BACKENDS:
        return 0.0, 0.0
    entry = (prices or {}).get(model)
    if entry is None:
        known = ", ".join(sorted(prices or {})) or "none"
        raise ConfigError(
            "prices",
            f"no price for model '{model}' of the paid backend '{backend}' (priced: {known}); "
            "add {'prompt': USD per 1M tokens, 'completion': USD per 1M tokens}",
        )
    try:
        p, c = float(entry["prompt"]), float(entry["completion"])
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"prices.{model}", "needs numbers 'prompt' and 'completion' (USD per 1M tokens)") from None
    if p < 0 or c < 0:
        raise ConfigError(f"prices.{model}", "prices must not be negative")
    return p, c


def estimate_prompt_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    """An upper-side estimate of a chat prompt's tokens: UTF-8 bytes / 3, plus 4 per message and 3 per request."""
    total = 3
    for m in messages:
        total += 4 + -(-len(str(m.get("content", "")).encode("utf-8")) // 3)
    return total


def estimate_cost(
    n_requests: int,
    prompt_tokens: int,
    completion_tokens: int,
    model: str,
    prices: Mapping[str, Any] | None,
    backend: str = "openai",
) -> dict[str, Any]:
    """A cost estimate as one row (requests, tokens, prices, USD), e.g. for ``results/tables/cost_estimate.tsv``."""
    p, c = prices_for(model, prices, backend)
    usd = prompt_tokens * p / 1e6 + completion_tokens * c / 1e6
    return {
        "backend": backend,
        "model": model,
        "requests": int(n_requests),
        "prompt_tokens": int(prompt_tokens),
        "completion_tokens": int(completion_tokens),
        "usd_per_1m_prompt": p,
        "usd_per_1m_completion": c,
        "usd": round(usd, 6),
    }


def estimate_requests(
    requests: Iterable[Any], model: str, prices: Mapping[str, Any] | None, backend: str = "openai"
) -> dict[str, Any]:
    """:func:`estimate_cost` for a list of :class:`~instag.llm.base.ChatRequest` (``max_tokens`` as completion)."""
    n = pt = ct = 0
    for req in requests:
        n += 1
        pt += estimate_prompt_tokens(req.messages)
        ct += int(req.params.max_tokens)
    return estimate_cost(n, pt, ct, model, prices, backend)


class SpendGuard:
    """Tracks spend against ``cap_usd`` (None: no cap, only accounting) at ``model``'s prices.

    ``spent_usd`` starts the count (e.g. what earlier jobs of the same stage spent).
    """

    def __init__(
        self,
        cap_usd: float | None,
        prices: Mapping[str, Any] | None,
        model: str,
        *,
        backend: str = "openai",
        spent_usd: float = 0.0,
    ):
        if cap_usd is not None and cap_usd < 0:
            raise ConfigError("spend_cap_usd", "must be >= 0")
        self.cap_usd = cap_usd
        self.model = model
        self.backend = backend
        self.prompt_price, self.completion_price = prices_for(model, prices, backend)
        self.spent_usd = float(spent_usd)
        self.prompt_tokens = 0
        self.completion_tokens = 0

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.prompt_price + completion_tokens * self.completion_price) / 1e6

    def estimate(self, request: Any) -> float:
        """Upper-side cost of one request before it is sent."""
        return self.cost(estimate_prompt_tokens(request.messages), int(request.params.max_tokens))

    @property
    def remaining_usd(self) -> float | None:
        return None if self.cap_usd is None else self.cap_usd - self.spent_usd

    def admit(self, requests: Sequence[Any]) -> int:
        """How many of ``requests`` (a leading run) can be sent without the estimate passing the cap."""
        if self.cap_usd is None:
            return len(requests)
        budget = self.cap_usd - self.spent_usd
        n = 0
        for req in requests:
            budget -= self.estimate(req)
            if budget < 0:
                break
            n += 1
        return n

    def charge(self, prompt_tokens: int, completion_tokens: int) -> None:
        """Record the real tokens of a call that was made."""
        self.prompt_tokens += int(prompt_tokens)
        self.completion_tokens += int(completion_tokens)
        self.spent_usd += self.cost(prompt_tokens, completion_tokens)

    def exceeded(self, remaining_requests: int) -> None:
        """Raise :class:`SpendCapExceeded` for ``remaining_requests`` requests not sent."""
        raise SpendCapExceeded(
            self.cap_usd if self.cap_usd is not None else float("inf"), self.spent_usd, remaining_requests
        )

    def summary(self) -> dict[str, Any]:
        return {
            "cap_usd": self.cap_usd,
            "spent_usd": round(self.spent_usd, 6),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "model": self.model,
            "backend": self.backend,
        }
