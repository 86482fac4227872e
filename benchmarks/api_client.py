"""Throughput of the ``openai`` backend and of a fully cached rerun (issue 4's and issue 16's API-client targets).

1. The loopback OpenAI-compatible server (tests/support/openai_server.py, in its own process) answers every
   request after 200 ms. At concurrency 64 and 256 the ideal rate is concurrency / 0.2 s (320 and 1280
   requests/s). Each level runs for at least ``--seconds`` (default 20) so that connection ramp-up does not
   decide the figure, twice: first a bare aiohttp loop (``concurrency`` tasks posting pre-encoded bodies over
   one pooled session, no parsing: the machine's ceiling against this server), then ``OpenAIBackend`` on the
   same number of requests. Targets: backend >= 95 % (64) and >= 90 % (256) of ideal; the ratio to the bare
   loop measured in the same run is printed beside it.
2. A cache of 100K answered requests is written, then a new ``CachedBackend`` around an ``OpenAIBackend`` opens
   it and answers the same 100K requests: every one a hit, no request reaches the server. Target: >= 20K
   requests/s, including opening (indexing) the cache.

Prints the figures, the load average (other processes share the CPU) and peak memory (max RSS).

    .venv/bin/python benchmarks/api_client.py [--seconds 20] [--cached 100000] [--transport auto sdk]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import math
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support

from instag.llm.base import ChatRequest, GenerationParams  # noqa: E402
from instag.llm.cache import CachedBackend  # noqa: E402
from instag.llm.openai_backend import OpenAIBackend, _run_loop  # noqa: E402
from instag.llm.scripted import ScriptedBackend  # noqa: E402
from tests.support.openai_server import OpenAIServer  # noqa: E402

DELAY = 0.2


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def make_requests(n: int, tag: str = "") -> list[ChatRequest]:
    params = GenerationParams(temperature=0.0, max_tokens=128)
    system = {"role": "system", "content": "You are a helpful assistant that tags user queries with intentions."}
    return [
        ChatRequest(
            [
                system,
                {
                    "role": "user",
                    "content": f"{tag}Query number {i}: please explain topic {i % 977} "
                    f"in detail, with examples and a short summary at the end.",
                },
            ],
            params,
        )
        for i in range(n)
    ]


def bench_api(server: OpenAIServer, concurrency: int, n: int, transport: str) -> dict:
    backend = OpenAIBackend(
        "bench-model", base_url=server.base_url, concurrency=concurrency, timeout=30, max_retries=2, transport=transport
    )
    backend.generate(make_requests(concurrency, tag=f"warm{concurrency} "))  # imports, first connections
    reqs = make_requests(n, tag=f"c{concurrency} ")
    t0 = time.perf_counter()
    out = backend.generate(reqs)
    dt = time.perf_counter() - t0
    ideal = concurrency / DELAY
    rate = n / dt
    return {
        "transport": backend.used_transport,
        "concurrency": concurrency,
        "requests": n,
        "ok": sum(r.ok for r in out),
        "seconds": round(dt, 3),
        "req_per_s": round(rate, 1),
        "ideal_req_per_s": ideal,
        "fraction_of_ideal": round(rate / ideal, 4),
    }


def bench_bare(server: OpenAIServer, concurrency: int, n: int) -> dict:
    """The ceiling: ``concurrency`` aiohttp tasks posting pre-encoded bodies over one session, nothing else."""
    import aiohttp

    url = server.base_url.rstrip("/") + "/chat/completions"
    bodies = [
        json.dumps({"model": "bench-model", "messages": r.messages, "temperature": 0.0, "max_tokens": 128}).encode()
        for r in make_requests(n, tag=f"bare{concurrency} ")
    ]

    async def run() -> tuple[float, int]:
        conn = aiohttp.TCPConnector(limit=concurrency)
        headers = {"Content-Type": "application/json", "Authorization": "Bearer EMPTY"}
        async with aiohttp.ClientSession(connector=conn, headers=headers) as session:
            ok = 0
            todo = iter(bodies[:concurrency])

            async def worker():
                nonlocal ok
                for body in todo:
                    async with session.post(url, data=body) as resp:
                        await resp.read()
                        ok += resp.status == 200

            await asyncio.gather(*(worker() for _ in range(concurrency)))  # open the connections
            todo, ok = iter(bodies[concurrency:]), 0
            t0 = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return time.perf_counter() - t0, ok

    dt, ok = _run_loop(run)  # the event loop the backend runs on (uvloop when installed)
    done = n - concurrency
    ideal = concurrency / DELAY
    return {
        "transport": "bare aiohttp loop",
        "concurrency": concurrency,
        "requests": done,
        "ok": ok,
        "seconds": round(dt, 3),
        "req_per_s": round(done / dt, 1),
        "ideal_req_per_s": ideal,
        "fraction_of_ideal": round(done / dt / ideal, 4),
    }


class _Filler(ScriptedBackend):
    """Writes cache entries under the openai backend's identity (the fast way to fill a cache of 100K)."""

    name = "openai"


def _fill(cache_dir: str, n: int) -> None:
    with CachedBackend(_Filler(model="bench-model", revision="bench-model"), cache_dir, namespace="bench") as cb:
        cb.generate(make_requests(n, tag="cached "))


def bench_cached(server: OpenAIServer, n: int) -> dict:
    """Fill in a child process (so this process's peak RSS is the rerun's), then rerun fully cached."""
    with tempfile.TemporaryDirectory(prefix="instag-bench-cache-") as d:
        t0 = time.perf_counter()
        proc = multiprocessing.get_context("spawn").Process(target=_fill, args=(d, n))
        proc.start()
        proc.join()
        assert proc.exitcode == 0, "filling the cache failed"
        fill_s = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in Path(d).iterdir())
        server.reset()
        reqs = make_requests(n, tag="cached ")
        rss0 = rss_mib()
        backend = OpenAIBackend("bench-model", base_url=server.base_url, concurrency=64)
        t0 = time.perf_counter()
        cb = CachedBackend(backend, d, namespace="bench")
        out = cb.generate(reqs)
        dt = time.perf_counter() - t0
        cb.close()
        assert all(r.cached and r.ok for r in out), "not every request was a hit"
        calls = server.requests
    return {
        "requests": n,
        "fill_seconds": round(fill_s, 2),
        "cache_mib": round(size / 2**20, 1),
        "rerun_seconds": round(dt, 3),
        "req_per_s": round(n / dt),
        "hits": cb.stats.hits,
        "server_requests": calls,
        "max_rss_mib_with_requests": round(rss0),
        "max_rss_mib_after_rerun": round(rss_mib()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0, help="seconds per level at the ideal rate (default 20)")
    ap.add_argument("--cached", type=int, default=100_000, help="requests of the cached rerun (default 100000)")
    ap.add_argument(
        "--transport",
        nargs="+",
        default=["auto", "sdk"],
        choices=["auto", "aiohttp", "sdk"],
        help="OpenAIBackend transports to measure (default: auto, which is aiohttp on loopback, and sdk)",
    )
    ap.add_argument("--skip-api", action="store_true")
    args = ap.parse_args()
    results: dict = {"load_before": load(), "cpus": os.cpu_count()}
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    print(f"event loop: {loop} (backend and bare loop alike); load {load()}", flush=True)
    with OpenAIServer(delay=DELAY, keep_bodies=False, mode="process") as server:
        if not args.skip_api:
            for conc, target in ((64, 0.95), (256, 0.90)):
                n = int(math.ceil(args.seconds * conc / DELAY))
                bare = bench_bare(server, conc, n + conc)
                results[f"bare_c{conc}"] = bare
                print(
                    f"bare aiohttp loop, concurrency {conc}: {bare['req_per_s']} req/s = "
                    f"{100 * bare['fraction_of_ideal']:.1f}% of ideal {bare['ideal_req_per_s']:.0f} over "
                    f"{bare['seconds']:.1f} s, {bare['ok']}/{bare['requests']} ok, load {load()}",
                    flush=True,
                )
                for transport in args.transport:
                    r = bench_api(server, conc, n, transport)
                    r["target"] = target
                    r["meets_target"] = r["fraction_of_ideal"] >= target
                    r["ratio_to_bare"] = round(r["req_per_s"] / bare["req_per_s"], 4)
                    results[f"api_{transport}_c{conc}"] = r
                    print(
                        f"transport {transport} ({r['transport']}), concurrency {conc}: {r['req_per_s']} req/s = "
                        f"{100 * r['fraction_of_ideal']:.1f}% of ideal {r['ideal_req_per_s']:.0f} (target "
                        f"{100 * target:.0f}%), {100 * r['ratio_to_bare']:.1f}% of the bare loop, over "
                        f"{r['seconds']:.1f} s, {r['ok']}/{r['requests']} ok, load {load()}",
                        flush=True,
                    )
        if args.cached:
            r = bench_cached(server, args.cached)
            r["target_req_per_s"] = 20_000
            r["meets_target"] = r["req_per_s"] >= 20_000
            results["cached_rerun"] = r
            print(
                f"cached rerun: {r['requests']} requests in {r['rerun_seconds']} s = {r['req_per_s']} req/s "
                f"(target 20000), {r['server_requests']} requests reached the server, cache {r['cache_mib']} MiB, "
                f"peak RSS {r['max_rss_mib_with_requests']} MiB with the 100K requests built, "
                f"{r['max_rss_mib_after_rerun']} MiB after the rerun",
                flush=True,
            )
    results["load_after"] = load()
    results["max_rss_mib"] = round(rss_mib())
    print(
        f"load average before/after: {results['load_before']} / {results['load_after']}; "
        f"peak RSS {results['max_rss_mib']} MiB"
    )
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
