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

Each part runs in its own process (peak memory per part). Prints queries/s, generated tokens/s, the (b)/(a)
ratios, peak RSS and the parse-success rate; the goal (issue 4) is (b) >= 20x (a) in queries/s and 100% parsed;
issue 16's is (b) >= 2x (c) in queries/s, 100% parsed, with as many distinct valid tags as (c) or more.
Other processes share the CPU on a busy machine: the load average is printed before and after.

    python benchmarks/tagging.py                     # 64 queries, 2 threads, greedy, 256 new tokens
    python benchmarks/tagging.py --sequential-limit 16 --threads 2 --json out.json
    python benchmarks/tagging.py --skip-sequential --prompt tagging_no_examples      # stage vs anchor (issue 16)
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
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
    from instag.tagging import Counts, Item, Tagger, TaggingSettings

    s = TaggingSettings.from_dict({**settings, "cache_dir": None})
    tagger = Tagger(s, threads=threads)
    raw = tagger.job.raw_backend
    items = [Item(f"q{i}", "bench", 0, q) for i, q in enumerate(queries)]
    tokens = {"n": 0}
    generate = raw.generate

    def counting(requests, progress=None, on_response=None):  # count generated tokens as the stage makes them
        out = generate(requests, progress, on_response=on_response)
        tokens["n"] += sum(r.completion_tokens for r in out)
        return out

    raw.generate = counting
    counts = Counts()
    t_load = time.perf_counter()
    raw.load()  # model load is reported apart from tagging speed
    load_s = time.perf_counter() - t_load
    t0 = time.perf_counter()
    lines = []
    for i in range(0, len(items), s.chunk_size):
        lines += tagger.tag(items[i : i + s.chunk_size], counts)
    dt = time.perf_counter() - t0
    tagger.close()
    distinct = {t["tag"].strip().lower() for line in lines if line.get("tags") for t in line["tags"]}
    return {
        "distinct_tags": len(distinct),
        "queries": len(items),
        "seconds": dt,
        "generated_tokens": tokens["n"],
        "parsed": counts.ok,
        "retried": counts.retried,
        "requests": tagger.stats["requests"],
        "peak_rss_mb": peak_mb(),
        "load_seconds": load_s,
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
    from instag.tagging import TaggingSettings, load_schema, load_template, parse_tags, render_prompt

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
    template = load_template(s.prompt)
    prompts = [
        tok.apply_chat_template(
            ([{"role": "system", "content": s.system}] if s.system else [])
            + [{"role": "user", "content": render_prompt(template, q)}],
            add_generation_prompt=True,
        )
        for q in queries
    ]
    cfg = pipe.get_generation_config()
    cfg.max_new_tokens, cfg.apply_chat_template, cfg.do_sample = s.max_tokens, False, False
    cfg.structured_output_config = og.StructuredOutputConfig(json_schema=json.dumps(schema))
    texts: list[str] = []
    t0 = time.perf_counter()
    for i in range(0, len(prompts), 32):
        texts += list(pipe.generate(prompts[i : i + 32], cfg).texts)
    dt = time.perf_counter() - t0
    parsed = [parse_tags(t).tags for t in texts]
    return {
        "queries": len(queries),
        "seconds": dt,
        "generated_tokens": sum(len(tok.encode(t, add_special_tokens=False).input_ids.data[0]) for t in texts),
        "parsed": sum(p is not None for p in parsed),
        "distinct_tags": len({x["tag"].strip().lower() for p in parsed if p for x in p}),
        "peak_rss_mb": peak_mb(),
        "load_seconds": load_s,
        "engine": "anchor: OpenVINO GenAI int8 (Q8_0), default precision, batch 32, json_schema",
    }


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
    results = {}
    if not args.skip_sequential:
        seq_q = queries[: args.sequential_limit] if args.sequential_limit else queries
        results["sequential"] = in_process("run_sequential", seq_q, settings, args.threads)
    results["stage"] = in_process("run_stage", queries, settings, args.threads)
    if not args.skip_anchor:
        results["anchor"] = in_process("run_anchor", queries, settings, args.threads)
    print(f"load average after: {os.getloadavg()}")
    rows = []
    for name, r in results.items():
        r["queries_per_s"] = r["queries"] / r["seconds"]
        r["tokens_per_s"] = r["generated_tokens"] / r["seconds"]
        r["parse_rate"] = r["parsed"] / r["queries"]
        rows.append(name)
        print(
            f"{name:10s} {r['engine']}: {r['queries']} queries in {r['seconds']:.1f} s = {r['queries_per_s']:.3f} q/s, "
            f"{r['tokens_per_s']:.1f} generated tok/s, parsed {r['parsed']}/{r['queries']} "
            f"({100 * r['parse_rate']:.0f}%), {r.get('distinct_tags', '-')} distinct tags, "
            f"peak RSS {r['peak_rss_mb']:.0f} MB"
        )
    if "sequential" in results:
        a, b = results["sequential"], results["stage"]
        results["ratio_queries_per_s"] = b["queries_per_s"] / a["queries_per_s"]
        results["ratio_tokens_per_s"] = b["tokens_per_s"] / a["tokens_per_s"]
        print(
            f"ratio stage/sequential: {results['ratio_queries_per_s']:.1f}x queries/s, "
            f"{results['ratio_tokens_per_s']:.1f}x generated tokens/s (goal: >= 20x queries/s, 100% parsed)"
        )
    if "anchor" in results:
        b, c = results["stage"], results["anchor"]
        results["ratio_to_anchor"] = b["queries_per_s"] / c["queries_per_s"]
        print(
            f"ratio stage/anchor (same run): {results['ratio_to_anchor']:.2f}x queries/s, "
            f"{b['tokens_per_s'] / c['tokens_per_s']:.2f}x generated tokens/s; parsed {b['parsed']} vs {c['parsed']}, "
            f"distinct tags {b['distinct_tags']} vs {c['distinct_tags']} (goal: >= 2x, 100% parsed, as many tags)"
        )
    print(f"example tags: {results['stage'].get('example')}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
