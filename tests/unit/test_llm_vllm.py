"""instag.llm.vllm_backend: revision pinning and request mapping (anywhere), real generation (GPU + vllm).

The request-mapping tests put a recording stand-in for the ``vllm`` module in ``sys.modules``; they
check what the backend hands vLLM and how it maps vLLM's outputs back, not vLLM itself. The test marked
``gpu`` runs the real engine and needs vllm, a CUDA GPU and a local chat model in ``INSTAG_VLLM_MODEL``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import types
from dataclasses import dataclass, field

import pytest

from instag.llm.base import Backend, ChatRequest, GenerationParams
from instag.llm.vllm_backend import VLLMBackend, model_revision, sampling_kwargs

# --- revision ------------------------------------------------------------------------------------------


def test_revision_of_a_local_dir_follows_config_and_weights(tmp_path):
    (tmp_path / "config.json").write_text('{"hidden_size": 8}')
    (tmp_path / "model.safetensors").write_bytes(b"x" * 10)
    first = model_revision(str(tmp_path))
    assert first.startswith("sha256:") and len(first) == len("sha256:") + 16
    assert model_revision(str(tmp_path)) == first  # stable
    (tmp_path / "config.json").write_text('{"hidden_size": 16}')
    second = model_revision(str(tmp_path))
    assert second != first
    (tmp_path / "model.safetensors").write_bytes(b"x" * 11)  # other weights, same config
    assert model_revision(str(tmp_path)) != second


def test_revision_of_a_hub_snapshot_is_its_commit(tmp_path):
    commit = "0123456789abcdef0123456789abcdef01234567"
    snap = tmp_path / "models--org--m" / "snapshots" / commit
    snap.mkdir(parents=True)
    assert model_revision(str(snap)) == commit


def test_explicit_revision_wins(tmp_path):
    assert model_revision(str(tmp_path), "v1.2") == "v1.2"


def test_uncached_hub_id_is_main(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert model_revision("no-such-org/no-such-model-xyz") == "main"


def test_constructing_does_not_import_vllm(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # any import of vllm would now raise ImportError
    backend = VLLMBackend(str(tmp_path), tensor_parallel_size=2)
    assert isinstance(backend, Backend)
    assert (backend.name, backend.model, backend.tensor_parallel_size) == ("vllm", str(tmp_path), 2)
    with pytest.raises(ImportError, match="vllm"):
        backend.generate([ChatRequest(messages=[{"role": "user", "content": "hi"}])])


def test_registry_builds_it_and_names_a_misspelt_option(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)
    from instag.errors import ConfigError
    from instag.llm import get_backend

    backend = get_backend({"backend": "vllm", "model": str(tmp_path), "engine_args": {"enforce_eager": True}})
    assert isinstance(backend, VLLMBackend) and backend.engine_args == {"enforce_eager": True}
    with pytest.raises(ConfigError, match="tensor_paralel_size"):
        get_backend({"backend": "vllm", "model": str(tmp_path), "tensor_paralel_size": 2})


# --- request mapping, against a recording stand-in for vllm ---------------------------------------------


def test_sampling_kwargs_offsets_seed_by_repeat():
    params = GenerationParams(temperature=0.7, top_p=0.9, max_tokens=12, seed=5, stop=("\n\n",))
    assert sampling_kwargs(params, repeat=2) == {
        "temperature": 0.7,
        "top_p": 0.9,
        "max_tokens": 12,
        "stop": ["\n\n"],
        "seed": 7,
    }
    assert "seed" not in sampling_kwargs(GenerationParams())


@dataclass
class _Completion:
    text: str
    token_ids: list
    finish_reason: str = "stop"


@dataclass
class _Output:
    prompt_token_ids: list
    outputs: list = field(default_factory=list)


def _fake_vllm(monkeypatch, *, structured: bool = True, fail_on: str | None = None):
    """A ``vllm`` module whose LLM echoes the last user turn and records every call."""
    calls: dict = {"init": [], "chat": []}

    class SamplingParams:
        def __init__(self, **kwargs):
            self.kwargs = kwargs

    class StructuredOutputsParams:
        def __init__(self, json=None):
            self.json = json

    class GuidedDecodingParams(StructuredOutputsParams):
        pass

    class LLM:
        def __init__(self, **kwargs):
            calls["init"].append(kwargs)

        def chat(self, conversations, sampling_params, use_tqdm=True, **kwargs):
            calls["chat"].append((conversations, sampling_params, kwargs))
            outs = []
            for conv in conversations:
                text = conv[-1]["content"]
                if fail_on is not None and fail_on in text:
                    raise ValueError(f"prompt too long: {text}")
                outs.append(_Output(list(range(len(text))), [_Completion(text.upper(), [1, 2, 3])]))
            return outs

    vllm = types.ModuleType("vllm")
    vllm.LLM, vllm.SamplingParams = LLM, SamplingParams
    sp = types.ModuleType("vllm.sampling_params")
    sp.SamplingParams = SamplingParams
    if structured:
        sp.StructuredOutputsParams = StructuredOutputsParams
    else:
        sp.GuidedDecodingParams = GuidedDecodingParams
    vllm.sampling_params = sp
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.sampling_params", sp)
    return calls


def _req(text, **params):
    return ChatRequest(messages=[{"role": "user", "content": text}], params=GenerationParams(**params))


def test_generate_maps_requests_and_outputs_in_order(tmp_path, monkeypatch):
    calls = _fake_vllm(monkeypatch)
    schema = {"type": "array", "items": {"type": "object"}}
    backend = VLLMBackend(
        str(tmp_path), max_model_len=4096, dtype="bfloat16", chat_template_kwargs={"a": 1}, engine_args={"e": 2}
    )
    seen = []
    out = backend.generate([_req("one"), _req("two", json_schema=schema, max_tokens=9)], progress=seen.append)
    assert [r.text for r in out] == ["ONE", "TWO"]
    assert [(r.prompt_tokens, r.completion_tokens, r.finish_reason, r.ok) for r in out] == [
        (3, 3, "stop", True),
        (3, 3, "stop", True),
    ]
    assert seen == [2]
    (init,) = calls["init"]
    assert init["model"] == str(tmp_path) and init["max_model_len"] == 4096 and init["dtype"] == "bfloat16"
    assert init["e"] == 2 and init["tensor_parallel_size"] == 1
    (conversations, sampling, kwargs) = calls["chat"][0]
    assert conversations[1] == [{"role": "user", "content": "two"}]
    assert kwargs == {"chat_template_kwargs": {"a": 1}}
    assert "structured_outputs" not in sampling[0].kwargs
    assert sampling[1].kwargs["structured_outputs"].json == schema and sampling[1].kwargs["max_tokens"] == 9
    backend.generate([_req("three")])
    assert len(calls["init"]) == 1  # the engine is loaded once


def test_older_vllm_gets_guided_decoding(tmp_path, monkeypatch):
    calls = _fake_vllm(monkeypatch, structured=False)
    VLLMBackend(str(tmp_path)).generate([_req("x", json_schema={"type": "object"})])
    sampling = calls["chat"][0][1][0]
    assert json.dumps(sampling.kwargs["guided_decoding"].json) == '{"type": "object"}'


def test_one_rejected_request_does_not_fail_the_batch(tmp_path, monkeypatch):
    _fake_vllm(monkeypatch, fail_on="BAD")
    out = VLLMBackend(str(tmp_path), batch_size=2).generate([_req("a"), _req("BAD"), _req("c")])
    assert [r.text for r in out] == ["A", None, "C"]
    assert out[1].error.startswith("ValueError: prompt too long") and not out[1].ok


# --- the real engine ------------------------------------------------------------------------------------


def _gpu_skip_reason() -> str | None:
    if importlib.util.find_spec("vllm") is None:
        return "vllm is not installed (pip install vllm on a CUDA machine)"
    try:
        import torch

        if not torch.cuda.is_available():
            return "no CUDA GPU visible to torch"
    except ImportError:
        return "torch is not installed"
    if not os.environ.get("INSTAG_VLLM_MODEL"):
        return "set INSTAG_VLLM_MODEL to a local chat model directory (no downloads in tests)"
    return None


@pytest.mark.gpu
def test_real_vllm_generates_schema_valid_json():
    reason = _gpu_skip_reason()
    if reason:
        pytest.skip(reason)
    schema = {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {"tag": {"type": "string"}, "explanation": {"type": "string"}},
            "required": ["tag", "explanation"],
        },
        "maxItems": 3,
    }
    backend = VLLMBackend(os.environ["INSTAG_VLLM_MODEL"], max_model_len=2048, gpu_memory_utilization=0.5)
    try:
        prompt = "List the intentions of this query as JSON tags: 'Write a Python function that sorts a list.'"
        out = backend.generate([_req(prompt, max_tokens=200, json_schema=schema), _req("Say hello.", max_tokens=16)])
    finally:
        backend.close()
    assert all(r.ok for r in out), [r.error for r in out]
    parsed = json.loads(out[0].text)
    assert isinstance(parsed, list) and all("tag" in item for item in parsed)
    assert out[1].text.strip() and out[1].completion_tokens <= 16
