"""vLLM backend: offline batched generation with vLLM's ``LLM`` inside the (GPU) job itself.

No server to start, watch or stop: the Snakemake job that needs the model loads it with
``vllm.LLM(...)``, answers its whole shard in one batched ``LLM.chat`` call (the model's own chat
template, continuous batching, paged KV cache) and exits. For a model that a site already serves,
use the ``openai`` backend against that vLLM server instead (``base_url: http://host:8000/v1``).

Structured output: when ``GenerationParams.json_schema`` is set, decoding is constrained to the schema
with vLLM's structured outputs (``StructuredOutputsParams(json=...)``, vLLM >= 0.10.2; older releases
``GuidedDecodingParams(json=...)``), both backed by xgrammar.

``vllm`` is imported only when the engine is first needed, so constructing the backend, reading its
``revision`` and serving cached responses never touch the GPU.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .base import Backend, ChatRequest, ChatResponse, GenerationParams, OnResponse, ProgressFn
from .local import folder_fingerprint

log = logging.getLogger(__name__)

_SNAPSHOT = re.compile(r"/snapshots/([0-9a-f]{40})(?:/|$)")


def model_revision(model: str, revision: str | None = None) -> str:
    """What pins the weights of ``model`` for the cache key.

    An explicit ``revision`` wins. A Hugging Face cache snapshot directory gives its commit hash. Any
    other local directory gives ``sha256:<16 hex>`` of its :func:`~instag.llm.local.folder_fingerprint`. A hub id resolves to the commit of its cached snapshot (offline); if it
    is not cached, ``"main"`` (vLLM then downloads the current main).
    """
    if revision:
        return str(revision)
    path = Path(model).expanduser()
    if path.is_dir():
        match = _SNAPSHOT.search(str(path.resolve()) + "/")
        if match:
            return match.group(1)
        return "sha256:" + folder_fingerprint(path)[:16]
    if path.is_file():  # a single GGUF file
        stat = path.stat()
        return "sha256:" + hashlib.sha256(f"{path.name}\0{stat.st_size}".encode()).hexdigest()[:16]
    try:
        from huggingface_hub import snapshot_download

        local = snapshot_download(model, local_files_only=True)
    except Exception:  # not cached, or huggingface_hub missing: vLLM will fetch "main"
        return "main"
    match = _SNAPSHOT.search(str(local) + "/")
    return match.group(1) if match else "main"


def sampling_kwargs(params: GenerationParams, repeat: int = 0) -> dict[str, Any]:
    """Keyword arguments of ``vllm.SamplingParams`` for one request (without the structured output).

    A seeded sampled request adds ``repeat`` to its seed, so repeats of one prompt differ yet each is
    reproducible; greedy decoding (temperature 0) needs no seed.
    """
    kwargs: dict[str, Any] = {
        "temperature": params.temperature,
        "top_p": params.top_p,
        "max_tokens": params.max_tokens,
    }
    if params.stop:
        kwargs["stop"] = list(params.stop)
    if params.seed is not None:
        kwargs["seed"] = int(params.seed) + int(repeat)
    return kwargs


def structured_output_kwargs(schema: dict) -> dict[str, Any]:
    """The ``SamplingParams`` keyword that constrains output to a JSON schema, for the installed vLLM."""
    try:  # vLLM >= 0.10.2 (the guided_* names were removed in 0.12)
        from vllm.sampling_params import StructuredOutputsParams
    except ImportError:
        from vllm.sampling_params import GuidedDecodingParams

        return {"guided_decoding": GuidedDecodingParams(json=schema)}
    return {"structured_outputs": StructuredOutputsParams(json=schema)}


class VLLMBackend(Backend):
    """Chat completions from a local model through vLLM's offline engine.

    Parameters mirror ``vllm.LLM``: ``tensor_parallel_size`` (GPUs to shard the model over; set it to
    the job's ``gpu`` resource), ``dtype``, ``max_model_len`` (None: the model's own), and
    ``gpu_memory_utilization``. ``chat_template_kwargs`` go to the chat template (e.g.
    ``{"enable_thinking": false}``); ``batch_size`` bounds one ``LLM.chat`` call (progress is reported
    per batch); ``engine_args`` go to ``vllm.LLM`` unchanged (``enforce_eager``, ``quantization``,
    ``trust_remote_code``, ...). Options are explicit so that a misspelt key in a config spec is named
    by :func:`instag.llm.get_backend` before any job loads a model.
    """

    name = "vllm"
    raw_prompts = True

    @classmethod
    def spec_for_run(cls, spec: dict, run_dir: Path) -> dict:
        """The run's HF folder."""
        return {**spec, "model": str(Path(run_dir) / "model")}

    def __init__(
        self,
        model: str,
        tensor_parallel_size: int = 1,
        dtype: str = "auto",
        max_model_len: int | None = None,
        gpu_memory_utilization: float = 0.9,
        revision: str | None = None,
        seed: int = 0,
        chat_template_kwargs: dict | None = None,
        batch_size: int = 1024,
        engine_args: dict | None = None,
    ) -> None:
        self.model = str(model)
        self.revision = model_revision(self.model, revision)
        self._hub_revision = revision  # what vLLM loads (None: the default branch)
        self.tensor_parallel_size = int(tensor_parallel_size)
        self.dtype = dtype
        self.max_model_len = max_model_len
        self.gpu_memory_utilization = float(gpu_memory_utilization)
        self.seed = int(seed)
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        self.batch_size = max(1, int(batch_size))
        self.engine_args = dict(engine_args or {})
        self._llm = None

    # -- engine ---------------------------------------------------------------------------------------
    def _engine(self):
        if self._llm is None:
            try:
                from vllm import LLM
            except ImportError as exc:
                raise ImportError(
                    "the 'vllm' backend needs the vllm package on a CUDA machine (pip install vllm); "
                    f"import failed: {exc}"
                ) from exc
            kwargs = dict(
                model=self.model,
                tensor_parallel_size=self.tensor_parallel_size,
                dtype=self.dtype,
                gpu_memory_utilization=self.gpu_memory_utilization,
                seed=self.seed,
            )
            if self.max_model_len is not None:
                kwargs["max_model_len"] = int(self.max_model_len)
            if self._hub_revision:
                kwargs["revision"] = self._hub_revision
            kwargs.update(self.engine_args)
            log.info("vllm: loading %s (revision %s, tp=%d)", self.model, self.revision, self.tensor_parallel_size)
            start = time.perf_counter()
            self._llm = LLM(**kwargs)
            log.info("vllm: engine ready in %.1f s", time.perf_counter() - start)
        return self._llm

    def _sampling_params(self, request: ChatRequest):
        from vllm import SamplingParams

        kwargs = sampling_kwargs(request.params, request.repeat)
        if request.params.json_schema is not None:
            kwargs.update(structured_output_kwargs(request.params.json_schema))
        return SamplingParams(**kwargs)

    def _chat(self, conversations: list[list[dict]], sampling: list) -> list:
        kwargs: dict[str, Any] = {"use_tqdm": False}
        if self.chat_template_kwargs:
            kwargs["chat_template_kwargs"] = self.chat_template_kwargs
        return self._engine().chat(conversations, sampling, **kwargs)

    # -- Backend protocol -----------------------------------------------------------------------------
    def generate(
        self,
        requests: Sequence[ChatRequest],
        progress: ProgressFn | None = None,
        on_response: OnResponse | None = None,
    ) -> list[ChatResponse]:
        """Answer every request, in order. A batch that vLLM rejects (a prompt longer than
        ``max_model_len``, a schema it cannot compile) is retried one request at a time, so only the
        offending requests come back with ``error`` set."""
        responses: list[ChatResponse] = []
        for start in range(0, len(requests), self.batch_size):
            batch = list(requests[start : start + self.batch_size])
            responses.extend(self._generate_batch(batch))
            if progress is not None:
                progress(len(batch))
        return responses

    def _generate_batch(self, batch: list[ChatRequest]) -> list[ChatResponse]:
        self._engine()  # load outside the timed call; a load failure is not a per-request error
        began = time.perf_counter()
        raw = [r.prompt is not None for r in batch]
        if any(raw) and not all(raw) and len(batch) > 1:  # chats and pre-rendered prompts: one call each
            return [resp for r in batch for resp in self._generate_batch([r])]
        try:
            sampling = [self._sampling_params(r) for r in batch]
            if all(raw):  # pre-rendered prompts: no chat template
                outputs = self._engine().generate([r.prompt for r in batch], sampling, use_tqdm=False)
            else:
                outputs = self._chat([list(r.messages) for r in batch], sampling)
        except Exception as exc:  # isolate the failing request(s) below
            if len(batch) == 1:
                return [ChatResponse(text=None, error=f"{type(exc).__name__}: {exc}", seconds=_since(began))]
            log.warning("vllm: batch of %d failed (%s); retrying one by one", len(batch), exc)
            return [resp for r in batch for resp in self._generate_batch([r])]
        seconds = _since(began) / max(1, len(batch))
        return [_to_response(out, seconds) for out in outputs]

    def close(self) -> None:
        """Drop the engine and free GPU memory (the job usually just exits)."""
        if self._llm is None:
            return
        llm, self._llm = self._llm, None
        del llm
        try:
            import gc

            import torch

            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass

    def describe(self) -> dict[str, Any]:
        """The settings that identify this backend (for logs and summaries)."""
        return {
            "backend": self.name,
            "model": self.model,
            "revision": self.revision,
            "tensor_parallel_size": self.tensor_parallel_size,
            "dtype": self.dtype,
            "max_model_len": self.max_model_len,
        }

    def __repr__(self) -> str:
        return f"VLLMBackend({json.dumps(self.describe())})"


def _since(start: float) -> float:
    return time.perf_counter() - start


def _to_response(out: Any, seconds: float) -> ChatResponse:
    """One ``vllm.RequestOutput`` as a :class:`ChatResponse`."""
    if not out.outputs:
        return ChatResponse(text=None, error="vllm returned no completion", seconds=seconds)
    completion = out.outputs[0]
    return ChatResponse(
        text=completion.text,
        prompt_tokens=len(out.prompt_token_ids or ()),
        completion_tokens=len(completion.token_ids or ()),
        seconds=seconds,
        finish_reason=completion.finish_reason,
    )
