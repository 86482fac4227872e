"""Local causal LMs through Hugging Face ``transformers``: any model directory or GGUF file, batched.

``TransformersBackend(model, gguf_file=None, dtype="bfloat16", batch_size=16, device="cpu", ...)``:

- Requests are grouped by decoding parameters, sorted by prompt length and generated in left-padded batches
  of ``batch_size`` with the tokenizer's chat template (``add_generation_prompt``).
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
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .base import ChatRequest, ChatResponse, GenerationParams, ProgressFn

log = logging.getLogger(__name__)

OnResponse = Callable[[int, ChatResponse], None]

#: environment variable that moves the converted-model cache (default ``~/.cache/instag/models``)
MODEL_CACHE_ENV = "INSTAG_MODEL_CACHE"


# ------------------------------------------------------------------------------------------ helpers


def model_cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where converted model copies live: ``cache_dir``, else ``$INSTAG_MODEL_CACHE``, else ~/.cache/instag/models."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    env = os.environ.get(MODEL_CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "instag" / "models"


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def directory_fingerprint(path: str | os.PathLike) -> str:
    """A cheap content fingerprint of a model directory: config/tokenizer files in full, weight files by name,
    size and their first and last MiB (hashing every byte of a 26 GB checkpoint on each start would take minutes)."""
    root = Path(path)
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file() and ".cache" not in p.parts):
        rel = f.relative_to(root).as_posix()
        size = f.stat().st_size
        h.update(f"{rel}\0{size}\0".encode())
        with open(f, "rb") as fh:
            if size <= 2 << 20:
                h.update(fh.read())
            else:
                h.update(fh.read(1 << 20))
                fh.seek(-(1 << 20), os.SEEK_END)
                h.update(fh.read(1 << 20))
    return h.hexdigest()


def build_once(target: Path, build: Callable[[Path], None]) -> Path:
    """Make ``target`` (a directory) with ``build(tmp_dir)`` unless it exists; safe when processes race.

    The build writes into a fresh temporary directory beside ``target``, which is then renamed into place
    (atomic on one file system). A process that loses the race discards its copy and uses the winner's.
    """
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache may be shared by users of a cluster
    try:
        build(tmp)
        try:
            os.rename(tmp, target)
        except OSError:  # another process renamed its copy first (target exists and is not empty)
            if not target.is_dir():
                raise
            log.info("model cache %s was built by another process; using it", target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def schema_grammar(schema: dict) -> Any:
    """The xgrammar grammar of a JSON schema, compact (no free whitespace between tokens: fewer tokens to
    generate and no room for a small model to loop on blank lines)."""
    import xgrammar as xgr

    return xgr.Grammar.from_json_schema(json.dumps(schema), any_whitespace=False, strict_mode=True)


def params_group_key(params: GenerationParams, repeat: int) -> str:
    d = params.to_dict()
    d["repeat"] = repeat
    return json.dumps(d, sort_keys=True, default=str)


def split_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """Cut ``text`` at the first stop string; (text, whether one was found)."""
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def batched_order(lengths: Sequence[int], batch_size: int, max_batch_tokens: int | None = None) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first), so padding stays small.

    With ``max_batch_tokens`` a batch also holds at most that many padded prompt tokens (at least one
    prompt), so a few very long prompts run in small batches instead of padding a full one.

    >>> batched_order([5, 100, 7, 6], 2)
    [[1, 2], [3, 0]]
    >>> batched_order([5, 100, 7, 6], 4, max_batch_tokens=100)
    [[1], [2, 3, 0]]
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches, k = [], 0
    while k < len(order):
        n = batch_size
        if max_batch_tokens:
            n = max(1, min(batch_size, max_batch_tokens // max(1, lengths[order[k]])))
        batches.append(order[k : k + n])
        k += n
    return batches


# ------------------------------------------------------------------------------------------ backend


class TransformersBackend:
    """A local causal LM (directory or GGUF) through ``transformers``; see the module docstring."""

    name = "transformers"

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
                self.revision = f"dir:{directory_fingerprint(path)}+{dtype}"
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
        out: list[ChatResponse | None] = [None] * len(requests)
        if not requests:
            return []
        self._load()
        groups: dict[str, list[int]] = {}
        for i, req in enumerate(requests):
            groups.setdefault(params_group_key(req.params, req.repeat), []).append(i)
        for idx in groups.values():
            params, repeat = requests[idx[0]].params, requests[idx[0]].repeat
            prompts = [self.render(requests[i].messages) for i in idx]
            lengths = [self.count_tokens(p) for p in prompts]
            for batch in batched_order(lengths, self.batch_size, self.max_batch_tokens):
                fits = []
                for b in batch:
                    need = lengths[b] + params.max_tokens
                    if self.max_context and need > self.max_context:
                        resp = ChatResponse(
                            text=None,
                            prompt_tokens=lengths[b],
                            error=(
                                f"prompt of {lengths[b]} tokens + max_tokens {params.max_tokens} exceeds the model "
                                f"context of {self.max_context}"
                            ),
                        )
                        self._emit(idx[b], resp, out, progress, on_response)
                    else:
                        fits.append(b)
                if not fits:
                    continue
                try:
                    responses = self._generate_batch([prompts[b] for b in fits], params, repeat)
                except Exception as exc:  # never raise for one batch: report it on each of its requests
                    log.exception("batch of %d failed", len(fits))
                    responses = [ChatResponse(text=None, error=f"{type(exc).__name__}: {exc}") for _ in fits]
                for b, resp in zip(fits, responses, strict=True):
                    self._emit(idx[b], resp, out, progress, on_response)
        return out  # type: ignore[return-value]

    @staticmethod
    def _emit(i, resp, out, progress, on_response) -> None:
        out[i] = resp
        if on_response is not None:
            on_response(i, resp)
        if progress is not None:
            progress(1)

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
            torch.manual_seed(_seed(params.seed, repeat))
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


def _seed(seed: int | None, repeat: int) -> int:
    return int(hashlib.sha256(f"{seed}:{repeat}".encode()).hexdigest()[:8], 16)
