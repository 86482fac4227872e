"""Local causal LMs through Hugging Face ``transformers``: any model directory or GGUF file, batched.

``TransformersBackend(model, gguf_file=None, dtype="bfloat16", batch_size=16, device="cpu", ...)``:

- Requests are grouped by decoding parameters, sorted by prompt length and generated in left-padded batches
  of ``batch_size`` with the tokenizer's chat template (``add_generation_prompt``), or as given when the
  request carries a pre-rendered ``prompt`` (the batch loop is :func:`instag.llm.local.generate_local`).
- ``params.json_schema`` turns on grammar-constrained decoding with xgrammar (``xgrammar.contrib.hf``'s
  logits processor over the schema compiled without free whitespace): a finished output is always valid
  JSON for the schema; one that hits ``max_tokens`` is cut off and reported with ``finish_reason="length"``.
- A GGUF file is dequantized by transformers on load (slow: ~15 s for 135M parameters). The converted copy
  is saved once in the model cache (:func:`model_cache_root`, keyed by the file's sha256 and the dtype), so
  later processes load safetensors instead; see :func:`build_once` for how concurrent builds stay safe.
- ``revision`` (part of every cache key): the GGUF's sha256 plus the dtype, or for a directory a hash of its
  config and weight files (names, sizes and the first and last MiB of each), unless given.

Heavy imports (torch, transformers, xgrammar) happen on first use, so constructing a backend is cheap and a
fully cached run never loads the model.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .base import Backend, ChatRequest, ChatResponse, GenerationParams, OnResponse, ProgressFn
from .local import (
    batched_order,
    build_once,
    file_sha256,
    folder_fingerprint,
    generate_local,
    model_cache_root,
    sample_seed,
    schema_grammar,
    split_at_stop,
)

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ backend


class TransformersBackend(Backend):
    """A local causal LM (directory or GGUF) through ``transformers``; see the module docstring."""

    name = "transformers"
    takes_threads = True
    streams = True
    raw_prompts = True

    @classmethod
    def spec_for_run(cls, spec: dict, run_dir: Path) -> dict:
        """The run's HF folder."""
        return {**spec, "model": str(Path(run_dir) / "model")}

    def __init__(
        self,
        model: str,
        gguf_file: str | None = None,
        dtype: str = "bfloat16",
        batch_size: int = 16,
        device: str = "cpu",
        max_batch_tokens: int | None = 8192,
        threads: int | None = None,
        revision: str | None = None,
        max_context: int | None = None,
        cache_dir: str | None = None,
        trust_remote_code: bool = False,
    ):
        path = Path(str(model)).expanduser()
        if gguf_file is None and path.suffix == ".gguf":
            path, gguf_file = path.parent, path.name
        self.path = path
        self.gguf_file = gguf_file
        self.model = str(model) if gguf_file is None or str(model).endswith(".gguf") else f"{model}/{gguf_file}"
        if dtype not in ("bfloat16", "float16", "float32", "auto"):
            raise ConfigError("dtype", f"unknown dtype {dtype!r} (bfloat16, float16, float32, auto)")
        self.dtype = dtype
        if int(batch_size) < 1:
            raise ConfigError("batch_size", "must be >= 1")
        self.batch_size = int(batch_size)
        self.max_batch_tokens = max_batch_tokens
        self.device = device
        self.threads = threads
        self.max_context = max_context
        self.cache_dir = cache_dir
        self.trust_remote_code = trust_remote_code
        if gguf_file is not None:
            gguf_path = path / gguf_file
            if not gguf_path.is_file():
                raise ConfigError("model", f"GGUF file not found: {gguf_path}")
            self.gguf_sha256 = file_sha256(gguf_path)
            self.revision = revision or f"sha256:{self.gguf_sha256}+{dtype}"
        else:
            self.gguf_sha256 = None
            if revision:
                self.revision = revision
            elif path.is_dir():
                self.revision = f"dir:{folder_fingerprint(path)}+{dtype}"
            else:  # a hub id (offline cache): the id is all we know
                self.revision = f"id:{model}+{dtype}"
        self._tok = None
        self._model = None
        self._compiler = None
        self._grammars: dict[str, Any] = {}
        self.load_seconds = 0.0

    # ------------------------------------------------------------------ loading
    def _source(self) -> tuple[str, dict]:
        """Where to load from: the cached safetensors copy of a GGUF (built once), else the directory."""
        if self.gguf_file is None:
            return str(self.path), {}
        target = model_cache_root(self.cache_dir) / self.gguf_sha256 / f"hf-{self.dtype}"

        def convert(tmp: Path) -> None:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            log.info("converting %s to a %s safetensors copy in %s (once)", self.gguf_file, self.dtype, target)
            kw = {"gguf_file": self.gguf_file}
            tok = AutoTokenizer.from_pretrained(self.path, **kw)
            mdl = AutoModelForCausalLM.from_pretrained(self.path, dtype=_torch_dtype(torch, self.dtype), **kw)
            # transformers marks a GGUF-loaded model as "quantized" (not serializable); its tensors are dense
            # here, so drop the marker and save plain safetensors
            mdl.hf_quantizer = None
            if hasattr(mdl.config, "quantization_config"):
                del mdl.config.quantization_config
            mdl.is_quantized = False
            mdl.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            (tmp / "SOURCE.json").write_text(
                json.dumps({"gguf": str(self.path / self.gguf_file), "sha256": self.gguf_sha256, "dtype": self.dtype})
            )

        try:
            return str(build_once(target, convert)), {}
        except OSError as exc:  # read-only or full cache: load the GGUF directly every time
            log.warning("cannot write the model cache %s (%s); loading the GGUF directly", target, exc)
            return str(self.path), {"gguf_file": self.gguf_file}

    def tokenizer(self):
        if self._tok is None:
            from transformers import AutoTokenizer

            src, kw = self._source()
            tok = AutoTokenizer.from_pretrained(src, trust_remote_code=self.trust_remote_code, **kw)
            tok.padding_side = "left"
            if tok.pad_token_id is None:
                tok.pad_token = tok.eos_token
            self._tok = tok
        return self._tok

    def _load(self):
        if self._model is not None:
            return self._model
        import torch
        from transformers import AutoModelForCausalLM

        if self.threads:
            torch.set_num_threads(int(self.threads))
        t0 = time.perf_counter()
        tok = self.tokenizer()
        src, kw = self._source()
        mdl = AutoModelForCausalLM.from_pretrained(
            src, dtype=_torch_dtype(torch, self.dtype), trust_remote_code=self.trust_remote_code, **kw
        )
        mdl.to(self.device).eval()
        if mdl.generation_config is not None:  # our parameters, not the checkpoint's sampling defaults
            mdl.generation_config.temperature = None
            mdl.generation_config.top_p = None
            mdl.generation_config.top_k = None
        self._model = mdl
        if self.max_context is None:
            self.max_context = int(getattr(mdl.config, "max_position_embeddings", 0) or 0) or None
        self.load_seconds = time.perf_counter() - t0
        log.info("loaded %s (%s, %s) in %.1f s", self.model, self.dtype, self.device, self.load_seconds)
        del tok
        return mdl

    def load(self) -> None:
        self._load()

    def _grammar(self, schema: dict):
        import xgrammar as xgr

        key = json.dumps(schema, sort_keys=True)
        if key not in self._grammars:
            if self._compiler is None:
                vocab = int(self._load().config.vocab_size)
                info = xgr.TokenizerInfo.from_huggingface(self.tokenizer(), vocab_size=vocab)
                self._compiler = xgr.GrammarCompiler(info)
            self._grammars[key] = self._compiler.compile_grammar(schema_grammar(schema))
        return self._grammars[key]

    # ------------------------------------------------------------------ text helpers
    def render(self, messages: list[dict[str, str]]) -> str:
        """The prompt text of a chat: the tokenizer's chat template with the generation prompt."""
        return self.tokenizer().apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer()(text, add_special_tokens=False)["input_ids"])

    def truncate_text(self, text: str, max_tokens: int) -> tuple[str, bool]:
        """``text`` cut to its first ``max_tokens`` tokens; (text, whether it was cut)."""
        tok = self.tokenizer()
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        if len(enc["input_ids"]) <= max_tokens:
            return text, False
        end = enc["offset_mapping"][max_tokens - 1][1]
        return text[:end], True

    # ------------------------------------------------------------------ generation
    def generate(
        self,
        requests: Sequence[ChatRequest],
        progress: ProgressFn | None = None,
        on_response: OnResponse | None = None,
    ) -> list[ChatResponse]:
        if not requests:
            return []
        self._load()
        return generate_local(
            requests,
            render=self.render,
            count_tokens=self.count_tokens,
            run_batch=self._generate_batch,
            plan=lambda lengths: batched_order(lengths, self.batch_size, self.max_batch_tokens),
            context=self.max_context,
            progress=progress,
            on_response=on_response,
        )

    def _generate_batch(self, prompts: list[str], params: GenerationParams, repeat: int) -> list[ChatResponse]:
        import torch

        tok, mdl = self.tokenizer(), self._model
        t0 = time.perf_counter()
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        kwargs: dict[str, Any] = {
            "max_new_tokens": params.max_tokens,
            "pad_token_id": tok.pad_token_id,
            "eos_token_id": _eos_ids(tok, mdl),
        }
        if params.temperature > 0:
            kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p)
            torch.manual_seed(sample_seed(params.seed, repeat))
        else:
            kwargs["do_sample"] = False
        if params.stop:
            kwargs.update(stop_strings=list(params.stop), tokenizer=tok)
        if params.json_schema is not None:
            from xgrammar.contrib.hf import LogitsProcessor

            kwargs["logits_processor"] = [LogitsProcessor(self._grammar(params.json_schema))]
        with torch.inference_mode():
            gen = mdl.generate(**enc, **kwargs)
        seconds = (time.perf_counter() - t0) / len(prompts)
        new = gen[:, enc["input_ids"].shape[1] :].tolist()
        eos = set(kwargs["eos_token_id"])
        out = []
        for row, mask in zip(new, enc["attention_mask"].tolist(), strict=True):
            n = next((k + 1 for k, t in enumerate(row) if t in eos), None)
            finish = "stop" if n is not None else ("length" if len(row) >= params.max_tokens else "stop")
            toks = row[: n if n is not None else len(row)]
            text = tok.decode(toks, skip_special_tokens=True)
            if params.stop:
                text, hit = split_at_stop(text, params.stop)
                finish = "stop" if hit else finish
            out.append(
                ChatResponse(
                    text=text,
                    prompt_tokens=int(sum(mask)),
                    completion_tokens=len(toks),
                    seconds=seconds,
                    finish_reason=finish,
                )
            )
        return out

    def close(self) -> None:
        self._model = None
        self._grammars.clear()
        self._compiler = None
        with contextlib.suppress(Exception):
            import gc

            gc.collect()


def _torch_dtype(torch, name: str):
    return "auto" if name == "auto" else getattr(torch, name)


def _eos_ids(tok, mdl) -> list[int]:
    ids = mdl.generation_config.eos_token_id if mdl.generation_config is not None else None
    ids = list(ids) if isinstance(ids, list | tuple) else ([ids] if ids is not None else [])
    if tok.eos_token_id is not None and tok.eos_token_id not in ids:
        ids.append(tok.eos_token_id)
    return ids
