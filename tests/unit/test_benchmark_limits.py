"""The compute limit benchmarks/tagging.py prints: FLOPs per token from the shipped GGUF, and the bound itself."""

from __future__ import annotations

import importlib.util

import pytest

from tests.conftest import REPO

pytest.importorskip("gguf")


def _bench():
    spec = importlib.util.spec_from_file_location("bench_tagging", REPO / "benchmarks" / "tagging.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_model_flops_of_smollm2_135m():
    from instag.llm.embedded import find_gguf

    flops = _bench().model_flops(find_gguf())
    hidden, kv, ffn, layers, vocab = 576, 192, 1536, 30, 49152  # SmolLM2-135M's configuration
    per_layer = 2 * hidden * hidden + 2 * hidden * kv + 3 * hidden * ffn  # q, o; k, v; gate, up, down
    assert flops == {"block": 2 * layers * per_layer, "head": 2 * vocab * hidden, "attention": 4 * layers * hidden}


def test_compute_limit_counts_each_token_once_and_a_shared_prefix_once():
    limit = _bench().compute_limit
    flops = {"block": 10, "head": 3, "attention": 1}
    # prompt 4, generated 3: 6 tokens through the blocks, 3 heads, attention over 0+1+...+5 earlier positions
    assert limit([(4, 3)], flops, 1e-9) == pytest.approx(6 * 10 + 3 * 3 + 15)
    # two calls sharing a 2-token prefix: it goes through the blocks once; attention over it is not repeated
    full = limit([(4, 3), (4, 3)], flops, 1e-9)
    assert limit([(4, 3), (4, 3)], flops, 1e-9, shared=2) == pytest.approx(full - 2 * (2 * 10 + 1) + (2 * 10 + 1))
    assert limit([(4, 3)], flops, 2e-9) == pytest.approx(limit([(4, 3)], flops, 1e-9) / 2)
