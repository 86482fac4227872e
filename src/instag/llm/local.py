"""What every in-process model backend shares (``embedded``, ``transformers``; the fingerprint also ``vllm``
and the phrase embedder): the model cache, file and folder fingerprints, and the batch loop.

- :func:`model_cache_root`: where converted model copies live (``cache_dir``, else ``$INSTAG_MODEL_CACHE``,
  else ``~/.cache/instag/models``; never the repository); :func:`build_once` fills it safely when processes race.
- :func:`file_sha256` and :func:`folder_fingerprint`: what pins a GGUF file or a model folder in cache keys.
- :func:`generate_local`: the loop of a local backend's ``generate``: group requests by decoding parameters,
  render each chat (or take a pre-rendered ``prompt``), count its tokens, plan batches of similar length,
  answer a prompt that cannot fit the context with an error, run each batch (a failing batch answers each of
  its requests with the error) and report every response as it completes.

Nothing here imports torch or transformers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..io import file_sha256  # noqa: F401  (part of this module's API: what pins a GGUF)
from .base import ChatRequest, ChatResponse, GenerationParams, OnResponse, ProgressFn

log = logging.getLogger(__name__)

#: environment variable that moves the converted-model cache (default ``~/.cache/instag/models``)
MODEL_CACHE_ENV = "INSTAG_MODEL_CACHE"


def model_cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where converted model copies live: ``cache_dir``, else ``$INSTAG_MODEL_CACHE``, else ~/.cache/instag/models."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    env = os.environ.get(MODEL_CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "instag" / "models"


def folder_fingerprint(path: str | os.PathLike) -> str:
    """A cheap content fingerprint (sha256 hex) of a model folder: every file's relative path and size, small
    files (config, tokenizer; up to 2 MiB) in full, larger ones (weights) by their first and last MiB (hashing
    every byte of a 26 GB checkpoint on each start would take minutes). ``.cache`` folders are skipped."""
    root = Path(path)
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file() and ".cache" not in p.relative_to(root).parts):
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


def sample_seed(seed: int | None, repeat: int) -> int:
    """The RNG seed of a sampled request: from the configured seed and the repeat index."""
    return int(hashlib.sha256(f"{seed}:{repeat}".encode()).hexdigest()[:8], 16)


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


BatchFn = Callable[[list[str], GenerationParams, int], list[ChatResponse]]


def generate_local(
    requests: Sequence[ChatRequest],
    *,
    render: Callable[[list[dict[str, str]]], str],
    count_tokens: Callable[[str], int],
    run_batch: BatchFn,
    plan: Callable[[list[int]], list[list[int]]],
    context: int | None,
    progress: ProgressFn | None = None,
    on_response: OnResponse | None = None,
) -> list[ChatResponse]:
    """The batch loop of a local backend (see the module docstring); one response per request, in order.

    ``run_batch(prompts, params, repeat)`` answers rendered prompts of one parameter group; ``plan(lengths)``
    groups prompt indices into batches; ``context`` (None: unknown) bounds prompt tokens + ``max_tokens``.
    """
    out: list[ChatResponse | None] = [None] * len(requests)

    def emit(i: int, resp: ChatResponse) -> None:
        out[i] = resp
        if on_response is not None:
            on_response(i, resp)
        if progress is not None:
            progress(1)

    groups: dict[str, list[int]] = {}
    for i, req in enumerate(requests):
        groups.setdefault(params_group_key(req.params, req.repeat), []).append(i)
    for idx in groups.values():
        params, repeat = requests[idx[0]].params, requests[idx[0]].repeat
        prompts = [r.prompt if r.prompt is not None else render(r.messages) for r in (requests[i] for i in idx)]
        lengths = [count_tokens(p) for p in prompts]
        for batch in plan(lengths):
            fits = []
            for b in batch:
                if context and lengths[b] + params.max_tokens > context:
                    error = (
                        f"prompt of {lengths[b]} tokens + max_tokens {params.max_tokens} exceeds the model "
                        f"context of {context}"
                    )
                    emit(idx[b], ChatResponse(text=None, prompt_tokens=lengths[b], error=error))
                else:
                    fits.append(b)
            if not fits:
                continue
            try:
                responses = run_batch([prompts[b] for b in fits], params, repeat)
            except Exception as exc:  # never raise for one batch: report it on each of its requests
                log.exception("batch of %d failed", len(fits))
                responses = [ChatResponse(text=None, error=f"{type(exc).__name__}: {exc}") for _ in fits]
            for b, resp in zip(fits, responses, strict=True):
                emit(idx[b], resp)
    return out  # type: ignore[return-value]
