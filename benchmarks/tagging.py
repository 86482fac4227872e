"""Tagging speed: plain sequential ``model.generate`` vs the embedded backend as the tagging stage runs it.

The same real queries (default 64: the first 8 usable user turns of 8 datasets in ../shared/data) are tagged

(a) sequentially, one query at a time, with plain ``transformers`` ``model.generate`` on the packaged
    SmolLM2-135M GGUF dequantized to dense float32 (no grammar, greedy), the naive baseline;
(b) by the tagging stage's own code path: :class:`instag.tagging.Tagger` over the ``embedded`` backend
    (engine auto = OpenVINO GenAI with the tag grammar), in chunks, with parsing and retries; the LLM cache
    is off so every query is computed.

(c) issue 16's anchor, re-run in the same run: the best engine measured here before the project existed
    (../shared/NOTES.md): OpenVINO GenAI on int8 weights (the package's GGUF requantized to Q8_0 with the
    ``gguf`` package, in a temporary folder) at its default precision, ``LLMPipeline.generate`` on batches of
    32 prompts, with xgrammar through ``StructuredOutputConfig(json_schema=...)`` on the tag schema without
    our length bounds (as it was then; outputs that hit the token limit do not parse).

The compute limit of (b) and (c): the fewest seconds their calls' matrix products can take (every prompt and
generated token through the model's blocks, generated tokens through the output head, attention over the context;
FLOPs from the GGUF) at the best rate of a dense matrix product of the model's MLP shape measured with torch on
the same threads, in the precision each computes in (f32 or bf16). Sampling, grammar, scheduling and memory traffic
come on top, so no engine at that precision can be faster; the stage's limit over the anchor's measured rate is the
most it can reach against the anchor.

Model load and a first 1-token call with the grammar (its compilation, ~2 s for the stage's bounded schema, and
the engine's first-inference warm-up; once per process, i.e. once per shard in the workflow) are timed apart in
(b) and (c): the rates are what tagging a large dataset runs at. A shared machine's speed varies by up to 2x
between minutes: ``--repeat N`` runs (b) and (c) alternately N times and prints the median ratio.

Each part runs in its own process (peak memory per part). Prints queries/s, generated tokens/s, the (b)/(a)
ratios, peak RSS and the parse-success rate; the goal (issue 4) is (b) >= 20x (a) in queries/s and 100% parsed;
issue 16's is (b) >= 2x (c) in queries/s, 100% parsed, with as many distinct valid tags as (c) or more.
Other processes share the CPU on a busy machine: the load average is printed before and after.

    python benchmarks/tagging.py                     # 64 queries, 2 threads, greedy, 256 new tokens
    python benchmarks/tagging.py --sequential-limit 16 --threads 2 --json out.json
    python benchmarks/tagging.py --skip-sequential --prompt tagging_no_examples --repeat 3  # stage vs anchor
    python benchmarks/tagging.py --skip-sequential --prompt tagging_no_examples --repeat 3 \
        --backend-json '{"backend": "embedded", "precision": "bf16"}'                       # the same in bf16
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import statistics
import sys
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SOURCES = [
    ("sharegpt.json.gz", "sharegpt", {}),
    ("alpaca-random-9k.json", "alpaca", {}),
    ("code-alpaca-2k.json", "alpaca", {}),
    ("dolly-3k.json", "alpaca", {}),
    ("lima.json", "alpaca", {}),
    ("gsm8k-train.jsonl", "qa", {}),
    ("math-test.jsonl", "qa", {"query": "problem", "response": "solution", "id": "idx"}),
    ("wizardlm-testset.jsonl", "query", {"query": "Instruction", "id": "idx"}),
]


def real_queries(n: int, data: Path, max_chars: int = 2000) -> list[str]:
    """The first usable user turns (at most ``max_chars``) of each source, ``n`` in all."""
    from instag.data import READERS, Reject, validate_turns

    per = -(-n // len(SOURCES))
    out: list[str] = []
    for name, fmt, fields in SOURCES:
        got = 0
        for _line, turns, _sid in READERS[fmt](data / name, {"fields": fields}):
            if isinstance(turns, Reject):
                continue
            turns, bad = validate_turns(turns, max_chars)
            if bad is not None:
                continue
            users = [t["content"] for t in turns if t["role"] == "user"]
            if users and 0 < len(users[0].strip()) <= max_chars:
                out.append(users[0])
                got += 1
                if got == per:
                    break
    return out[:n]


def chat_prompts(tok, s, queries: list[str]) -> list[str]:
    """The stage's messages for each query (settings ``s``: template and system prompt), rendered with an
    OpenVINO GenAI tokenizer's chat template: what the stage sends."""
    from instag.tagging import load_template, render_prompt

    template = load_template(s.prompt)
    return [
        tok.apply_chat_template(
            ([{"role": "system", "content": s.system}] if s.system else [])
            + [{"role": "user", "content": render_prompt(template, q)}],
            add_generation_prompt=True,
        )
        for q in queries
    ]


def distinct_tags(tag_lists) -> int:
    """Distinct tags (case and surrounding space ignored) over lists of ``{"tag", "explanation"}`` (None: unparsed)."""
    return len({t["tag"].strip().lower() for tags in tag_lists if tags for t in tags})


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_sequential(queries: list[str], settings: dict, threads: int) -> dict:
    """(a): plain generate, one query at a time, fp32, greedy, no grammar."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from instag.llm.embedded import find_gguf
    from instag.llm.transformers_local import TransformersBackend
    from instag.tagging import TaggingSettings, load_template, parse_tags, render_prompt

    torch.set_num_threads(threads)
    s = TaggingSettings.from_dict(settings)
    # dense fp32 weights: transformers keeps a model loaded straight from GGUF packed and dequantizes in every
    # matmul (~2 tok/s here), which would flatter the ratio; the model cache holds a dense copy (built once)
    src, kw = TransformersBackend(str(find_gguf()), dtype="float32")._source()
    tok = AutoTokenizer.from_pretrained(src, **kw)
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32, **kw).eval()
    template = load_template(s.prompt)  # the same messages as the stage sends
    gen_tokens = parsed = 0
    t0 = time.perf_counter()
    for q in queries:
        messages = ([{"role": "system", "content": s.system}] if s.system else []) + [
            {"role": "user", "content": render_prompt(template, q)}
        ]
        ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        with torch.inference_mode():
            out = model.generate(**ids, max_new_tokens=s.max_tokens, do_sample=False, pad_token_id=tok.eos_token_id)
        new = out[0, ids["input_ids"].shape[1] :]
        gen_tokens += int(new.shape[0])
        parsed += parse_tags(tok.decode(new, skip_special_tokens=True)).tags is not None
    dt = time.perf_counter() - t0
    return {
        "queries": len(queries),
        "seconds": dt,
        "generated_tokens": gen_tokens,
        "parsed": parsed,
        "peak_rss_mb": peak_mb(),
        "engine": "transformers fp32, sequential, no grammar",
    }


def run_stage(queries: list[str], settings: dict, threads: int) -> dict:
    """(b): the tagging stage's Tagger over the embedded backend (no LLM cache, so everything is computed)."""
    from dataclasses import replace

    from instag.llm.base import ChatRequest
    from instag.tagging import Counts, Item, Tagger, TaggingSettings

    s = TaggingSettings.from_dict({**settings, "cache_dir": None})
    tagger = Tagger(s, threads=threads)
    raw = tagger.job.raw_backend
    items = [Item(f"q{i}", "bench", 0, q) for i, q in enumerate(queries)]
    lengths: list[tuple[int, int]] = []  # (prompt, generated) tokens of every call, re-asks included
    generate = raw.generate

    def counting(requests, progress=None, on_response=None):  # count tokens as the stage makes them
        out = generate(requests, progress, on_response=on_response)
        lengths.extend((r.prompt_tokens, r.completion_tokens) for r in out)
        return out

    raw.generate = counting
    counts = Counts()
    t_load = time.perf_counter()
    raw.load()  # model load is reported apart from tagging speed
    load_s = time.perf_counter() - t_load
    warm = tagger.request("Say hello.")  # and so is a first call: grammar compilation, warm-up
    t_first = time.perf_counter()
    generate([ChatRequest(warm.messages, replace(warm.params, max_tokens=1))])
    first_s = time.perf_counter() - t_first
    t0 = time.perf_counter()
    lines = []
    for i in range(0, len(items), s.chunk_size):
        lines += tagger.tag(items[i : i + s.chunk_size], counts)
    dt = time.perf_counter() - t0
    tagger.close()
    return {
        "distinct_tags": distinct_tags(line.get("tags") for line in lines),
        "queries": len(items),
        "seconds": dt,
        "generated_tokens": sum(g for _p, g in lengths),
        "lengths": lengths,
        "parsed": counts.ok,
        "retried": counts.retried,
        "requests": tagger.stats["requests"],
        "peak_rss_mb": peak_mb(),
        "load_seconds": load_s,
        "first_call_seconds": first_s,
        "precision": raw.precision,
        "engine": f"{raw.name}/{raw.engine} ({raw.revision.split('+')[-1]})",
        "example": lines[0]["tags"] if lines else None,
    }


def q8_0_gguf(src: Path, dest: Path) -> Path:
    """``src`` with every matrix requantized to Q8_0 (int8 with a scale per 32 weights); vectors in f32."""
    import gguf
    import numpy as np

    out = dest / (src.name.split(".")[0] + ".Q8_0.gguf")
    reader = gguf.GGUFReader(str(src))
    writer = gguf.GGUFWriter(str(out), reader.fields["general.architecture"].contents())
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name in ("general.architecture", "general.file_type"):
            continue
        vtype = field.types[0]
        writer.add_key_value(
            name, field.contents(), vtype, sub_type=field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        )
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    for t in reader.tensors:
        w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        if w.ndim > 1:
            q8 = gguf.GGMLQuantizationType.Q8_0
            writer.add_tensor(t.name, gguf.quants.quantize(w, q8), raw_dtype=q8)
        else:
            writer.add_tensor(t.name, w)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def run_anchor(queries: list[str], settings: dict, threads: int) -> dict:
    """(c): OpenVINO GenAI int8, default precision, batches of 32, xgrammar on the unbounded tag schema."""
    import tempfile

    import openvino_genai as og

    from instag.llm.embedded import find_gguf
    from instag.tagging import TaggingSettings, load_schema, parse_tags

    s = TaggingSettings.from_dict(settings)
    schema = load_schema()
    schema.pop("maxItems", None)
    for prop in schema["items"]["properties"].values():
        prop.pop("maxLength", None)
    with tempfile.TemporaryDirectory(prefix="bench-anchor-") as tmp:
        gguf_path = q8_0_gguf(find_gguf(), Path(tmp))
        t_load = time.perf_counter()
        pipe = og.LLMPipeline(str(gguf_path), "CPU", INFERENCE_NUM_THREADS=threads, ENABLE_CPU_PINNING=False)
        load_s = time.perf_counter() - t_load
    tok = pipe.get_tokenizer()
    prompts = chat_prompts(tok, s, queries)
    cfg = pipe.get_generation_config()
    cfg.apply_chat_template, cfg.do_sample = False, False
    cfg.structured_output_config = og.StructuredOutputConfig(json_schema=json.dumps(schema))
    cfg.max_new_tokens = 1  # a first call (grammar compilation, warm-up), timed apart as in (b)
    t_first = time.perf_counter()
    pipe.generate(prompts[:1], cfg)
    first_s = time.perf_counter() - t_first
    cfg.max_new_tokens = s.max_tokens
    texts: list[str] = []
    t0 = time.perf_counter()
    for i in range(0, len(prompts), 32):
        texts += list(pipe.generate(prompts[i : i + 32], cfg).texts)
    dt = time.perf_counter() - t0
    parsed = [parse_tags(t).tags for t in texts]

    def token_ids(text: str) -> list[int]:
        return tok.encode(text, add_special_tokens=False).input_ids.data[0].tolist()

    ids = [token_ids(p) for p in prompts]
    lengths = [(len(i), len(token_ids(t))) for i, t in zip(ids, texts, strict=True)]
    shared = next((k for k, col in enumerate(zip(*ids, strict=False)) if len(set(col)) > 1), min(map(len, ids)))
    return {
        "shared_prefix_tokens": shared,
        "queries": len(queries),
        "seconds": dt,
        "generated_tokens": sum(g for _p, g in lengths),
        "lengths": lengths,
        "parsed": sum(p is not None for p in parsed),
        "distinct_tags": distinct_tags(parsed),
        "peak_rss_mb": peak_mb(),
        "load_seconds": load_s,
        "first_call_seconds": first_s,
        "precision": default_precision(),
        "engine": "anchor: OpenVINO GenAI int8 (Q8_0), default precision, batch 32, json_schema",
    }


def default_precision() -> str:
    """The precision OpenVINO's CPU plugin computes in without a hint (bf16 on CPUs with bf16 units)."""
    import openvino as ov

    hint = str(ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT"))
    return "bf16" if "bf" in hint else "f32"


def model_flops(gguf_path: Path) -> dict[str, int]:
    """Floating-point operations of one token through the model, from the GGUF's tensors and metadata:
    ``block`` (the transformer blocks' matrices), ``head`` (the output head: generated tokens only) and
    ``attention`` (scores and weighted values, per earlier position in the context)."""
    import gguf
    import numpy as np

    r = gguf.GGUFReader(str(gguf_path))
    arch = r.fields["general.architecture"].contents()

    def meta(key: str) -> int:
        return int(r.fields[f"{arch}.{key}"].contents())

    sizes = {t.name: int(np.prod(t.shape)) for t in r.tensors}
    block = sum(n for name, n in sizes.items() if name.startswith("blk.") and not name.endswith("norm.weight"))
    head = sizes.get("output.weight", sizes["token_embd.weight"])  # tied to the embedding when absent
    heads, width = meta("attention.head_count"), meta("embedding_length")
    return {"block": 2 * block, "head": 2 * head, "attention": 2 * 2 * meta("block_count") * heads * (width // heads)}


#: (rows, inner, columns) of the products matmul_rates times: the model's MLP up-projection over a 2048-token batch
MLP_SHAPE = (2048, 576, 1536)


def matmul_rates(_queries, _settings, threads: int) -> dict:
    """Best sustained GFLOP/s of a dense matrix product of the model's MLP shape, f32 and bf16, on ``threads``."""
    import torch

    torch.set_num_threads(threads)
    out = {}
    m, k, n = MLP_SHAPE
    for name, dtype in (("f32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
        best = 0.0
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(20):
                a @ b
            best = max(best, 20 * 2 * m * k * n / (time.perf_counter() - t0) / 1e9)
        out[name] = best
    return out


def compute_limit(lengths: list[tuple[int, int]], flops: dict[str, int], gflops: float, shared: int = 0) -> float:
    """Fewest seconds the matrix products of these calls can take at ``gflops``: every prompt token through the
    blocks, every generated token through the blocks and the head, attention over each token's context. With
    ``shared``, the first ``shared`` prompt tokens (the same in every prompt) go through the model once, as a
    prefix cache would allow."""
    total = shared * flops["block"] + flops["attention"] * shared * (shared - 1) // 2
    for prompt, generated in lengths:
        n = prompt + max(generated - 1, 0)  # the last generated token is never fed back
        s = min(shared, prompt)
        total += (n - s) * flops["block"] + generated * flops["head"]
        total += flops["attention"] * (n * (n - 1) - s * (s - 1)) // 2
    return total / (gflops * 1e9)


def _child(fn_name: str, queries, settings, threads, conn) -> None:
    try:
        conn.send(globals()[fn_name](queries, settings, threads))
    except BaseException as exc:  # report, do not hang the parent
        conn.send({"error": f"{type(exc).__name__}: {exc}"})
    finally:
        conn.close()


def in_process(fn_name: str, queries, settings, threads) -> dict:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_child, args=(fn_name, queries, settings, threads, child))
    p.start()
    result = parent.recv()
    p.join()
    if "error" in result:
        raise SystemExit(f"{fn_name} failed: {result['error']}")
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=64, help="queries (default 64)")
    ap.add_argument(
        "--sequential-limit",
        type=int,
        default=None,
        help="run (a) on only the first N queries (its rate is per query; default: all)",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt", default="tagging", help="template (default: the paper's prompt)")
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--backend-json", default='{"backend": "embedded"}', help="backend spec of part (b)")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--skip-sequential", action="store_true")
    ap.add_argument("--skip-anchor", action="store_true", help="do not re-run issue 16's anchor (c)")
    ap.add_argument(
        "--repeat", type=int, default=1, help="run (b) and (c) this many times, alternating; the median ratio"
    )
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    queries = real_queries(args.n, args.data)
    settings = {"prompt": args.prompt, "max_tokens": args.max_tokens, "backend": json.loads(args.backend_json)}
    print(
        f"{len(queries)} queries from {len(SOURCES)} datasets, {args.threads} threads, greedy, "
        f"max {args.max_tokens} new tokens, prompt {args.prompt!r}; load average before: {os.getloadavg()}",
        flush=True,
    )
    results: dict = {}
    if not args.skip_sequential:
        seq_q = queries[: args.sequential_limit] if args.sequential_limit else queries
        results["sequential"] = in_process("run_sequential", seq_q, settings, args.threads)
    runs = []
    for _ in range(args.repeat):  # alternating, so a busy spell of a shared machine falls on both
        run = {"stage": in_process("run_stage", queries, settings, args.threads)}
        if not args.skip_anchor:
            run["anchor"] = in_process("run_anchor", queries, settings, args.threads)
        runs.append(run)
    results["runs"] = runs
    rates = in_process("matmul_rates", [], {}, args.threads)
    from instag.llm.embedded import find_gguf

    flops = model_flops(find_gguf())
    print(f"load average after: {os.getloadavg()}")
    print(
        f"matrix products on {args.threads} threads: f32 {rates['f32']:.0f} GFLOP/s, bf16 {rates['bf16']:.0f} GFLOP/s "
        f"(torch, {MLP_SHAPE[0]}x{MLP_SHAPE[1]} @ {MLP_SHAPE[1]}x{MLP_SHAPE[2]}); model: {flops['block'] / 1e6:.0f} MFLOP per token in the blocks, "
        f"{flops['head'] / 1e6:.0f} in the head, {flops['attention'] / 1e3:.0f} KFLOP of attention per context token"
    )
    shared = runs[0].get("anchor", {}).get("shared_prefix_tokens", 0)  # the same prompts in (b) and (c)

    def describe(name: str, r: dict) -> None:
        r["queries_per_s"] = r["queries"] / r["seconds"]
        r["tokens_per_s"] = r["generated_tokens"] / r["seconds"]
        r["parse_rate"] = r["parsed"] / r["queries"]
        setup = (
            f", first call (grammar, warm-up) {r['first_call_seconds']:.1f} s apart"
            if "first_call_seconds" in r
            else ""
        )
        print(
            f"{name:10s} {r['engine']}: {r['queries']} queries in {r['seconds']:.1f} s = {r['queries_per_s']:.3f} q/s, "
            f"{r['tokens_per_s']:.1f} generated tok/s, parsed {r['parsed']}/{r['queries']} "
            f"({100 * r['parse_rate']:.0f}%), {r.get('distinct_tags', '-')} distinct tags, "
            f"peak RSS {r['peak_rss_mb']:.0f} MB{setup}"
        )
        if r.get("precision") in rates:  # (a) has no precision setting to bound
            lengths = r.pop("lengths")
            rate = rates[r["precision"]]
            r["prompt_tokens"] = sum(p for p, _g in lengths)
            r["limit_seconds"] = limit = compute_limit(lengths, flops, rate)
            r["limit_queries_per_s"] = r["queries"] / limit
            r["limit_queries_per_s_prefix"] = r["queries"] / compute_limit(lengths, flops, rate, shared)
            print(
                f"{'':10s} compute limit at {r['precision']} ({rate:.0f} GFLOP/s): {r['prompt_tokens']} prompt + "
                f"{r['generated_tokens']} generated tokens need >= {limit:.1f} s = <= {r['limit_queries_per_s']:.2f} "
                f"q/s (<= {r['limit_queries_per_s_prefix']:.2f} with the {shared}-token shared prompt prefix computed "
                f"once), <= {r['generated_tokens'] / limit:.0f} generated tok/s; "
                f"measured {100 * limit / r['seconds']:.0f}%"
            )

    if "sequential" in results:
        describe("sequential", results["sequential"])
        a, b = results["sequential"], runs[0]["stage"]
        describe("stage", b)
        results["ratio_queries_per_s"] = b["queries_per_s"] / a["queries_per_s"]
        results["ratio_tokens_per_s"] = b["tokens_per_s"] / a["tokens_per_s"]
        print(
            f"ratio stage/sequential: {results['ratio_queries_per_s']:.1f}x queries/s, "
            f"{results['ratio_tokens_per_s']:.1f}x generated tokens/s (goal: >= 20x queries/s, 100% parsed)"
        )
    ratios = []
    for k, run in enumerate(runs):
        if args.repeat > 1:
            print(f"-- repeat {k + 1} of {args.repeat}")
        for name, r in run.items():
            if "queries_per_s" not in r:
                describe(name, r)
        if "anchor" not in run:
            continue
        b, c = run["stage"], run["anchor"]
        run["ratio_to_anchor"] = b["queries_per_s"] / c["queries_per_s"]
        ratios.append(run["ratio_to_anchor"])
        print(
            f"ratio stage/anchor (same run): {run['ratio_to_anchor']:.2f}x queries/s, "
            f"{b['tokens_per_s'] / c['tokens_per_s']:.2f}x generated tokens/s; parsed {b['parsed']} vs {c['parsed']}, "
            f"distinct tags {b['distinct_tags']} vs {c['distinct_tags']} (goal: >= 2x, 100% parsed, as many tags)"
        )
        if "limit_queries_per_s" in b:
            run["limit_ratio_to_anchor"] = b["limit_queries_per_s_prefix"] / c["queries_per_s"]
            print(
                f"at most {run['limit_ratio_to_anchor']:.2f}x the anchor at the stage's precision "
                f"({b['precision']}): the stage's compute limit (shared prefix computed once) over the anchor's "
                f"measured rate; the stage reaches {100 * b['limit_seconds'] / b['seconds']:.0f}% of its limit, "
                f"the anchor {100 * c['limit_seconds'] / c['seconds']:.0f}% of its own"
            )
    if ratios:
        results["ratio_to_anchor"] = statistics.median(ratios)
        print(
            f"stage/anchor over {len(ratios)} alternating run(s): median {results['ratio_to_anchor']:.2f}x "
            f"(each: {', '.join(f'{x:.2f}' for x in ratios)})"
        )
    print(f"example tags: {runs[0]['stage'].get('example')}")
    results["matmul_gflops"], results["model_flops"] = rates, flops
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
