"""The OpenVINO embedding backend gives sentence-transformers' vectors within the stated tolerance.

Real phrases (the opening words of real instructions in ../shared/data) and synthetic tag names are
embedded by both backends of ``SentenceTransformerEmbedder``; every component must agree within
``OPENVINO_TOLERANCE`` and DBSCAN at the paper's eps must give the same partition. The export is built once
into a temporary model cache (slow: it traces the model).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from instag.normalize import semantic
from instag.synthetic import tag_names, variants_of

pytest.importorskip("openvino")
pytest.importorskip("sentence_transformers")


def _phrases(shared_data, n=150) -> list[str]:
    with open(shared_data / "dolly-3k.json", encoding="utf-8") as fh:
        rows = json.load(fh)
    out = []
    for row in rows[:n]:
        words = row["instruction"].split()
        out.append(" ".join(words[: 2 + len(out) % 5]))  # 2-6 words, like tags
    names = tag_names(200, seed=3)
    out += names + [variants_of(x)[i % 6] for i, x in enumerate(names[:100])]
    return list(dict.fromkeys(out)) + ["  padded phrase  ", "x"]


@pytest.mark.slow
def test_openvino_vectors_match_sentence_transformers(shared_data, tmp_path):
    texts = _phrases(shared_data)
    ov = semantic.SentenceTransformerEmbedder(threads=2, batch_size=64, backend="openvino", cache_dir=str(tmp_path))
    st = semantic.SentenceTransformerEmbedder(threads=2, backend="torch")
    a, b = ov.encode(texts), st.encode(texts)
    assert a.shape == b.shape == (len(texts), 384)
    assert np.abs(a - b).max() <= semantic.OPENVINO_TOLERANCE
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-6)
    la, lb = semantic.cluster(a, 0.05), semantic.cluster(b, 0.05)
    groups = [{tuple(np.flatnonzero(labels == k)) for k in np.unique(labels)} for labels in (la, lb)]
    assert groups[0] == groups[1]
    assert len(groups[0]) < len(texts)  # some variants merge, so the comparison covers merges
    assert (tmp_path / "embeddings").is_dir()  # the export lives in the given model cache
    # a second embedder reuses the export; the same texts give the same vectors (other batches: within tolerance)
    again = semantic.SentenceTransformerEmbedder(threads=2, batch_size=64, backend="openvino", cache_dir=str(tmp_path))
    assert np.array_equal(again.encode(texts), a)
    assert np.abs(again.encode(texts[:10]) - a[:10]).max() <= semantic.OPENVINO_TOLERANCE


def test_auto_backend_keeps_small_batches_on_torch_and_one_cache_key():
    auto = semantic.SentenceTransformerEmbedder(threads=1)
    torch_only = semantic.SentenceTransformerEmbedder(threads=1, backend="torch")
    assert auto.key == torch_only.key  # one cache: the vectors agree within the tolerance
    assert auto._backend_for(10) == "torch"
    assert auto._backend_for(semantic.OPENVINO_MIN_TEXTS) == "openvino"
    with pytest.raises(ValueError, match="unknown embedding backend"):
        semantic.SentenceTransformerEmbedder(backend="onnx")
