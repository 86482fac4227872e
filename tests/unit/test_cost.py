"""Cost estimates and the spend guard (instag.cost)."""

from __future__ import annotations

import pytest

from instag.cost import (
    SpendCapExceeded,
    SpendGuard,
    estimate_cost,
    estimate_prompt_tokens,
    estimate_requests,
    prices_for,
)
from instag.errors import ConfigError, InstagError
from instag.llm.base import ChatRequest, GenerationParams

PRICES = {"gpt-3.5-turbo": {"prompt": 0.5, "completion": 1.5}, "free": {"prompt": 0, "completion": 0}}


def test_estimate_cost_arithmetic():
    row = estimate_cost(1000, 2_000_000, 1_000_000, "gpt-3.5-turbo", PRICES)
    assert row["usd"] == pytest.approx(2 * 0.5 + 1 * 1.5)
    assert (row["requests"], row["prompt_tokens"], row["completion_tokens"]) == (1000, 2_000_000, 1_000_000)
    assert row["usd_per_1m_prompt"] == 0.5 and row["usd_per_1m_completion"] == 1.5


def test_local_backends_cost_nothing_and_unknown_paid_models_are_named():
    for backend in ("embedded", "transformers", "vllm", "scripted"):
        assert estimate_cost(10, 10**9, 10**9, "anything", None, backend=backend)["usd"] == 0
    with pytest.raises(ConfigError, match="'prices'.*gpt-4-unknown") as info:
        estimate_cost(1, 1, 1, "gpt-4-unknown", PRICES)
    assert info.value.key == "prices"
    with pytest.raises(ConfigError, match="prices.bad"):
        prices_for("bad", {"bad": {"prompt": "x"}})
    with pytest.raises(ConfigError, match="prices.neg"):
        prices_for("neg", {"neg": {"prompt": -1, "completion": 1}})


def test_prompt_token_estimate_is_an_upper_side_estimate():
    english = "The quick brown fox jumps over the lazy dog. " * 20  # ~200 real tokens (GPT tokenizers)
    assert estimate_prompt_tokens([{"role": "user", "content": english}]) >= 200
    assert estimate_prompt_tokens([]) == 3
    assert estimate_prompt_tokens([{"role": "user", "content": "汉字"}]) == 3 + 4 + 2  # 6 UTF-8 bytes / 3


def test_estimate_requests_uses_max_tokens():
    reqs = [ChatRequest([{"role": "user", "content": "abc"}], GenerationParams(max_tokens=100))] * 4
    row = estimate_requests(reqs, "gpt-3.5-turbo", PRICES)
    assert row["requests"] == 4 and row["completion_tokens"] == 400 and row["prompt_tokens"] == 4 * (3 + 4 + 1)


def test_spend_guard_admits_what_fits_and_charges_real_use():
    guard = SpendGuard(1.0, {"m": {"prompt": 1e6, "completion": 0}}, "m")  # $1 per prompt token
    r = ChatRequest([{"role": "user", "content": "abcabc"}], GenerationParams(max_tokens=5))  # 3+4+2 = 9 tokens
    assert guard.estimate(r) == pytest.approx(9.0)
    assert guard.admit([r]) == 0  # 9 > 1
    guard = SpendGuard(20.0, {"m": {"prompt": 1e6, "completion": 0}}, "m")
    assert guard.admit([r] * 5) == 2
    guard.charge(15, 100)
    assert guard.spent_usd == pytest.approx(15.0) and guard.remaining_usd == pytest.approx(5.0)
    assert guard.admit([r]) == 0
    with pytest.raises(SpendCapExceeded, match="spend cap") as info:
        guard.exceeded(3)
    assert isinstance(info.value, InstagError) and info.value.remaining_requests == 3
    assert SpendGuard(None, PRICES, "gpt-3.5-turbo").admit([r] * 7) == 7  # no cap: accounting only
    assert SpendGuard(0.0, None, "local", backend="embedded").admit([r] * 7) == 7  # free
    with pytest.raises(ConfigError, match="spend_cap_usd"):
        SpendGuard(-1, PRICES, "gpt-3.5-turbo")
    with pytest.raises(ConfigError, match="prices"):
        SpendGuard(1, PRICES, "not-priced")
