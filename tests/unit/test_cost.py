"""Cost estimates, the one rule for models without a price, and the spend guard (instag.llm.cost)."""

from __future__ import annotations

import pytest

from instag.errors import ConfigError, InstagError
from instag.llm.base import ChatRequest, ChatResponse, GenerationParams
from instag.llm.cache import CachedBackend
from instag.llm.cost import (
    SpendCapExceeded,
    SpendGuard,
    estimate_cost,
    estimate_prompt_tokens,
    estimate_requests,
    price_of,
    resolve_price,
    stage_spend,
)
from instag.llm.scripted import ScriptedBackend

PRICES = {"gpt-3.5-turbo": {"prompt": 0.5, "completion": 1.5}, "free": {"prompt": 0, "completion": 0}}


def test_estimate_cost_arithmetic():
    row = estimate_cost(1000, 2_000_000, 1_000_000, "gpt-3.5-turbo", price_of("gpt-3.5-turbo", PRICES))
    assert row["usd"] == pytest.approx(2 * 0.5 + 1 * 1.5)
    assert (row["requests"], row["prompt_tokens"], row["completion_tokens"]) == (1000, 2_000_000, 1_000_000)
    assert row["usd_per_1m_prompt"] == 0.5 and row["usd_per_1m_completion"] == 1.5


def test_one_rule_for_models_without_a_price():
    # no price: cost unknown (blank), whatever the backend
    row = estimate_cost(10, 10**9, 10**9, "anything", price_of("anything", PRICES))
    assert row["usd"] is None and row["usd_per_1m_prompt"] is None
    assert price_of("free", PRICES) == (0.0, 0.0)  # a local or self-hosted model can be priced at 0
    # no cap, or not a paid backend: never fatal
    assert resolve_price("x", PRICES, paid=True, cap_usd=None) is None
    assert resolve_price("x", PRICES, paid=False, cap_usd=1.0) is None
    # a cap on a paid backend with no price: a ConfigError naming the section's key
    with pytest.raises(ConfigError, match="gpt-4-unknown") as info:
        resolve_price("gpt-4-unknown", PRICES, paid=True, cap_usd=1.0, backend="openai", key="quality.prices")
    assert info.value.key == "quality.prices"
    with pytest.raises(ConfigError, match="prices.bad"):
        price_of("bad", {"bad": {"prompt": "x"}})
    with pytest.raises(ConfigError, match="prices.neg"):
        price_of("neg", {"neg": {"prompt": -1, "completion": 1}})


def test_prompt_token_estimate_is_an_upper_side_estimate():
    english = "The quick brown fox jumps over the lazy dog. " * 20  # ~200 real tokens (GPT tokenizers)
    assert estimate_prompt_tokens([{"role": "user", "content": english}]) >= 200
    assert estimate_prompt_tokens([]) == 3
    assert estimate_prompt_tokens([{"role": "user", "content": "汉字"}]) == 3 + 4 + 2  # 6 UTF-8 bytes / 3
    assert estimate_prompt_tokens([], prompt="abcdef") == 3 + 2  # a pre-rendered prompt is counted instead


def test_estimate_requests_uses_max_tokens():
    reqs = [ChatRequest([{"role": "user", "content": "abc"}], GenerationParams(max_tokens=100))] * 4
    row = estimate_requests(reqs, "gpt-3.5-turbo", price_of("gpt-3.5-turbo", PRICES))
    assert row["requests"] == 4 and row["completion_tokens"] == 400 and row["prompt_tokens"] == 4 * (3 + 4 + 1)


def test_spend_guard_admits_what_fits_and_charges_real_use():
    price = (1e6, 0.0)  # $1 per prompt token
    guard = SpendGuard(1.0, price, "m")
    r = ChatRequest([{"role": "user", "content": "abcabc"}], GenerationParams(max_tokens=5))  # 3+4+2 = 9 tokens
    assert guard.estimate(r) == pytest.approx(9.0)
    assert guard.admit([r]) == 0  # 9 > 1
    guard = SpendGuard(20.0, price, "m")
    assert guard.admit([r] * 5) == 2
    guard.charge(15, 100)
    assert guard.spent_usd == pytest.approx(15.0) and guard.remaining_usd == pytest.approx(5.0)
    assert guard.admit([r]) == 0
    with pytest.raises(SpendCapExceeded, match="spend cap") as info:
        guard.exceeded(3)
    assert isinstance(info.value, InstagError) and info.value.remaining_requests == 3
    assert SpendGuard(None, (0.5, 1.5), "gpt-3.5-turbo").admit([r] * 7) == 7  # no cap: accounting only
    assert SpendGuard(0.0, None, "local").admit([r] * 7) == 7  # no price: the cap does not apply
    with pytest.raises(ConfigError, match="spend_cap_usd"):
        SpendGuard(-1, (1, 1), "gpt-3.5-turbo")


def test_stage_spend_counts_every_call_of_the_stage_in_the_cache(tmp_path):
    def answer(req):
        return ChatResponse(text="x", prompt_tokens=1000, completion_tokens=500)

    for stage, model in [("tagging", "m"), ("tagging", "m"), ("quality", "m"), ("tagging", "unpriced")]:
        with CachedBackend(ScriptedBackend(model=model, fn=answer), tmp_path, namespace=f"{stage}:abc") as cached:
            cached.generate(
                [ChatRequest([{"role": "user", "content": f"{stage} {model} {len(list(tmp_path.iterdir()))}"}])]
            )
    prices = {"m": {"prompt": 1.0, "completion": 2.0}}  # $0.002 per call
    assert stage_spend(tmp_path, "tagging", prices) == pytest.approx(2 * 0.002)  # the unpriced model counts 0
    assert stage_spend(tmp_path, "quality", prices) == pytest.approx(0.002)
    assert stage_spend(tmp_path / "none", "tagging", prices) == 0.0 and stage_spend(None, "tagging", prices) == 0.0
