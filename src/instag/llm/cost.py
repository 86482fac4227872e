"""Cost estimates and a spend cap for LLM jobs, with one rule for models without a price.

Prices come from config: ``{model: {"prompt": USD per 1M prompt tokens, "completion": USD per 1M completion
tokens}}``, looked up by the exact model name. The rule, the same in every stage:

- a model in the table costs its price (a local or self-hosted one may be given price 0);
- a model not in the table has an unknown cost: estimates leave the USD cells blank and the spend cap does not
  apply to it, except that a spend cap set for a *paid* backend (one that bills per token, e.g. ``openai``)
  whose model has no price is a :class:`~instag.errors.ConfigError` naming the ``prices`` key, raised before
  anything is sent.

Token counts before a call are estimates: prompt tokens from the UTF-8 size of the messages (one token per 3
bytes, plus 4 per message and 3 per request: higher than real counts for English text), completion tokens
from ``max_tokens`` (the most a call can produce). After a call the real counts are charged.

The cap is for a stage, over all its jobs and reruns: :func:`stage_spend` sums the tokens of every call the
cache recorded under the stage's namespace (``<stage>:...``) at the configured prices, and a
:class:`SpendGuard` starts from that sum. :class:`instag.llm.cache.CachedBackend` consults the guard before
sending each chunk of uncached requests (:meth:`SpendGuard.admit`); when the cap would be exceeded it raises
:class:`SpendCapExceeded` after everything already answered has been written.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..errors import ConfigError, InstagError

Price = tuple[float, float]  # (USD per 1M prompt tokens, USD per 1M completion tokens)


class SpendCapExceeded(InstagError):
    """The next requests would take the spend past the configured cap; what was answered is in the cache."""

    def __init__(self, cap_usd: float, spent_usd: float, remaining_requests: int):
        self.cap_usd, self.spent_usd, self.remaining_requests = cap_usd, spent_usd, remaining_requests
        super().__init__(
            f"spend cap of ${cap_usd:.4f} reached: ${spent_usd:.4f} spent, {remaining_requests} request(s) not "
            "sent (the answered ones are in the cache; raise 'spend_cap_usd' or rerun to continue)"
        )


def price_of(model: str, prices: Mapping[str, Any] | None, key: str = "prices") -> Price | None:
    """The price of ``model`` in the table, or None when it has none; a malformed entry names ``key.model``."""
    entry = (prices or {}).get(model)
    if entry is None:
        return None
    try:
        p, c = float(entry["prompt"]), float(entry["completion"])
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"{key}.{model}", "needs numbers 'prompt' and 'completion' (USD per 1M tokens)") from None
    if p < 0 or c < 0:
        raise ConfigError(f"{key}.{model}", "prices must not be negative")
    return p, c


def resolve_price(
    model: str,
    prices: Mapping[str, Any] | None,
    *,
    paid: bool,
    cap_usd: float | None,
    backend: str = "?",
    key: str = "prices",
) -> Price | None:
    """:func:`price_of` plus the one rule: a cap on a paid backend needs a price (ConfigError naming ``key``)."""
    price = price_of(model, prices, key)
    if price is None and paid and cap_usd is not None:
        known = ", ".join(sorted(prices or {})) or "none"
        raise ConfigError(
            key,
            f"no price for model '{model}' of the paid backend '{backend}' (priced: {known}), but a spend cap is "
            "set; add {'prompt': USD per 1M tokens, 'completion': USD per 1M tokens} for it",
        )
    return price


def estimate_prompt_tokens(messages: Sequence[Mapping[str, Any]], prompt: str | None = None) -> int:
    """An upper-side estimate of a chat prompt's tokens: UTF-8 bytes / 3, plus 4 per message and 3 per request
    (a pre-rendered ``prompt``, when given, is counted instead of the messages)."""
    if prompt is not None:
        return 3 + -(-len(prompt.encode("utf-8")) // 3)
    total = 3
    for m in messages:
        total += 4 + -(-len(str(m.get("content", "")).encode("utf-8")) // 3)
    return total


def request_prompt_tokens(request: Any) -> int:
    """:func:`estimate_prompt_tokens` of a :class:`~instag.llm.base.ChatRequest`."""
    return estimate_prompt_tokens(request.messages, request.prompt)


def cost_usd(price: Price | None, prompt_tokens: int, completion_tokens: int) -> float | None:
    """USD of the given tokens at ``price``; None when the price is unknown."""
    if price is None:
        return None
    return (prompt_tokens * price[0] + completion_tokens * price[1]) / 1e6


def estimate_cost(
    n_requests: int,
    prompt_tokens: int,
    completion_tokens: int,
    model: str,
    price: Price | None,
    backend: str = "?",
) -> dict[str, Any]:
    """A cost estimate as one row (requests, tokens, prices, USD; price and USD blank when unknown)."""
    usd = cost_usd(price, prompt_tokens, completion_tokens)
    return {
        "backend": backend,
        "model": model,
        "requests": int(n_requests),
        "prompt_tokens": int(prompt_tokens),
        "completion_tokens": int(completion_tokens),
        "usd_per_1m_prompt": None if price is None else price[0],
        "usd_per_1m_completion": None if price is None else price[1],
        "usd": None if usd is None else round(usd, 6),
    }


def estimate_requests(requests: Iterable[Any], model: str, price: Price | None, backend: str = "?") -> dict[str, Any]:
    """:func:`estimate_cost` for a list of :class:`~instag.llm.base.ChatRequest` (``max_tokens`` as completion)."""
    n = pt = ct = 0
    for req in requests:
        n += 1
        pt += request_prompt_tokens(req)
        ct += int(req.params.max_tokens)
    return estimate_cost(n, pt, ct, model, price, backend)


def stage_spend(cache_dir: str | os.PathLike | None, stage: str, prices: Mapping[str, Any] | None) -> float:
    """USD spent by every call the cache recorded for ``stage`` (namespace ``<stage>:...``), all jobs and runs,
    each model at its configured price (models without a price count 0).

    Jobs running at the same time each see what was spent when they started, so together they can pass the cap
    by at most what each sends before it looks again (one chunk per job); jobs run one after another cannot.
    """
    from .cache import iter_records

    if not cache_dir or not os.path.isdir(cache_dir):
        return 0.0
    tokens: dict[str, list[int]] = {}
    prefix = f"{stage}:"
    for _seg, _off, rec in iter_records(cache_dir):
        if rec is not None and str(rec.get("namespace", "")).startswith(prefix):
            t = tokens.setdefault(str(rec.get("model")), [0, 0])
            t[0] += int(rec.get("prompt_tokens") or 0)
            t[1] += int(rec.get("completion_tokens") or 0)
    total = 0.0
    for model, (pt, ct) in tokens.items():
        usd = cost_usd(price_of(model, prices), pt, ct)
        total += usd or 0.0
    return total


class SpendGuard:
    """Tracks spend against ``cap_usd`` (None: no cap, only accounting) at ``price`` (None: unknown, the cap
    does not apply). ``spent_usd`` starts the count (what earlier jobs of the same stage spent)."""

    def __init__(
        self,
        cap_usd: float | None,
        price: Price | None,
        model: str,
        *,
        backend: str = "?",
        spent_usd: float = 0.0,
    ):
        if cap_usd is not None and cap_usd < 0:
            raise ConfigError("spend_cap_usd", "must be >= 0")
        self.cap_usd = cap_usd
        self.model = model
        self.backend = backend
        self.price = price
        self.spent_usd = float(spent_usd)
        self.prompt_tokens = 0
        self.completion_tokens = 0

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return cost_usd(self.price, prompt_tokens, completion_tokens) or 0.0

    def estimate(self, request: Any) -> float:
        """Upper-side cost of one request before it is sent."""
        return self.cost(request_prompt_tokens(request), int(request.params.max_tokens))

    @property
    def applies(self) -> bool:
        """Whether the cap constrains anything: a cap is set and the model's price is known."""
        return self.cap_usd is not None and self.price is not None

    @property
    def remaining_usd(self) -> float | None:
        return None if self.cap_usd is None else self.cap_usd - self.spent_usd

    def admit(self, requests: Sequence[Any]) -> int:
        """How many of ``requests`` (a leading run) can be sent without the estimate passing the cap."""
        if not self.applies:
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
            "spent_usd": round(self.spent_usd, 6) if self.price is not None else None,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "model": self.model,
            "backend": self.backend,
        }
