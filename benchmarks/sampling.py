"""Benchmark: Algorithm 1 and every decoupled ablation on a synthetic pool at the paper's scale.

    .venv/bin/python benchmarks/sampling.py [--queries 300000] [--tags 6400] [--seed 0] [--no-memory]

The pool comes from instag.synthetic (Zipf tag frequencies, ~4.5 tags per query). Its tags-per-query tail is
set with dispersion 1.2 so that Algorithm 1's 6K lands near the paper's 16.56 tags per query, which the
complexity sweep's top level (16.6) needs. The variants are the paper configuration's (configs/paper.yaml):
complexity 10 levels 6.7..16.6 at 6K and full coverage, diversity 12 levels 45%..100% at 6K and 5.0 tags,
Algorithm 1 and uniform random at 1K/3K/6K/10K/16K.

Printed per step: wall time (untraced run) and peak traced memory (a second run under tracemalloc, which
numpy reports its buffers to), plus the achieved size, coverage and tags per query. Goals (2 cores): the 6K
selection under 5 s, all ablations together under 60 s, memory under 2 GiB. No assertions: read the figures.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from instag import sampling
from instag.io import dumps
from instag.sampling import Pool, UnreachableTarget
from instag.synthetic import pool_arrays

COMPLEXITY = [round(6.7 + i * 1.1, 4) for i in range(10)]
DIVERSITY = [round(0.45 + i * 0.05, 4) for i in range(12)]
SIZES = [1000, 3000, 6000, 10000, 16000]


def measure(fn, memory: bool):
    t0 = time.perf_counter()
    result = fn()
    wall = time.perf_counter() - t0
    peak = None
    if memory:
        tracemalloc.start()
        fn()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return result, wall, peak


def mib(n):
    return "-" if n is None else f"{n / 2**20:8.1f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=300_000)
    ap.add_argument("--tags", type=int, default=6400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-memory", action="store_true", help="skip the traced second run of every step")
    args = ap.parse_args(argv)
    memory = not args.no_memory
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    print(f"cpus: {os.cpu_count()}, numpy {np.__version__}, python {sys.version.split()[0]}")

    t0 = time.perf_counter()
    pa = pool_arrays(args.queries, args.tags, args.seed, dispersion=1.2)
    lists = pa.to_lists()
    datasets = ["wizardlm_alpaca", "wizardlm_sharegpt", "ultrachat", "sharegpt"]
    records = [(f"q{i:07d}", datasets[i % 4], tags) for i, tags in enumerate(lists)]
    print(f"synthetic pool drawn in {time.perf_counter() - t0:.2f} s")

    pool, wall, peak = measure(lambda: Pool.from_records(records, datasets), memory)
    print(
        f"pool: {pool.size} queries, {pool.n_tags} tags, {pool.counts.mean():.3f} tags per query "
        f"(paper 306,044 / 6,398 / 4.48), max {pool.counts.max()}"
    )
    print(f"  Pool.from_records: {wall:.2f} s, peak {mib(peak).strip()} MiB")
    with tempfile.TemporaryDirectory() as tmp:
        norm = Path(tmp) / "normalized.jsonl"
        with open(norm, "w") as fh:
            for rid, ds, tags in records:
                fh.write(dumps({"id": rid, "dataset": ds, "tags": sorted(tags)}) + "\n")
        out = Path(tmp) / "pool.jsonl"
        _, wall, _ = measure(
            lambda: sampling.build_pool(norm, out, Path(tmp) / "s.json", Path(tmp) / "p.tsv", datasets), False
        )
        print(f"  build_pool (read normalized.jsonl, write pool.jsonl + tables): {wall:.2f} s")
        _, wall, _ = measure(lambda: sampling.load_pool(out), False)
        print(f"  load_pool (per select job, before selecting): {wall:.2f} s")

    print(f"\n{'step':34s} {'time s':>8s} {'peak MiB':>9s} {'size':>6s} {'coverage':>9s} {'tags/q':>7s}  note")
    total = 0.0
    peaks = []

    def row(name, fn):
        nonlocal total
        try:
            res, wall, peak = measure(fn, memory)
        except UnreachableTarget as exc:
            print(f"{name:34s} FAILED: {exc}")
            return
        sel, info = res if isinstance(res, tuple) else (res, {})
        m = pool.measure(sel)
        total += wall
        peaks.append(peak or 0)
        note = ""
        if "passes" in info:
            note = f"passes {info['passes']}"
        elif "attempts" in info:
            note = f"cover {info['cover_size']}, attempts {info['attempts']}"
        print(
            f"{name:34s} {wall:8.3f} {mib(peak):>9s} {m['size']:6d} {m['coverage']:9.4f} "
            f"{m['avg_tags_per_query']:7.3f}  {note}"
        )

    for n in SIZES:
        row(f"size/n{n} (Algorithm 1)", lambda n=n: sampling.complexity_first(pool, n, args.seed))
    for k in COMPLEXITY:
        row(f"complexity/tags{k:g}", lambda k=k: sampling.constrained(pool, 6000, 1.0, k, args.seed, 0.01, 0.05))
    for c in DIVERSITY:
        row(
            f"diversity/cov{round(100 * c, 2):g}",
            lambda c=c: sampling.constrained(pool, 6000, c, 5.0, args.seed, 0.01, 0.05),
        )
    for n in SIZES:
        row(f"random/n{n}", lambda n=n: sampling.uniform_random(pool, n, args.seed))
    print(f"\nall ablations: {total:.2f} s selecting (goal < 60 s); Algorithm 1 at 6K: see size/n6000 (goal < 5 s)")
    if peaks:
        print(f"largest traced peak of a step: {max(peaks) / 2**20:.1f} MiB")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"process max RSS: {rss:.0f} MiB (goal < 2048), including the synthetic pool's Python lists")
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
