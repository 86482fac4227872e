"""Where the embedded tagger's time goes: OpenVINO GenAI on the tagging prompts, one setting changed at a time.

The stage (benchmarks/tagging.py part (b)) runs OpenVINO GenAI with continuous batching, f32, dense weights and
the tag grammar. This script runs the same 64 real queries and prompts straight through ``LLMPipeline`` with one
knob changed, to measure the levers of issue 16 apart:

- ``--grammar bounded`` (the stage's: the tag schema with its length bounds), ``unbounded`` (no ``maxLength``:
  outputs can run to the token limit), ``none`` (free text);
- ``--precision f32|bf16`` (OpenVINO's ``INFERENCE_PRECISION_HINT``) and ``--weights dense|file`` (the F16 copy
  the stage's f32 uses, or the GGUF's own 4-bit weights);
- ``--batch`` (sequences decoded together), ``--static`` (the pipeline without a scheduler: padded batches),
  ``--prefix-cache`` (the scheduler's prefix caching), ``--prompt-lookup K`` (speculative prompt-lookup
  decoding, K tokens proposed).

Each run makes a first 1-token call with the grammar (compilation and warm-up, its time printed apart), times a
prefill-only pass (1 new token, no grammar; skipped with ``--prefix-cache``, whose cache it would fill with the
whole prompts), then the full generation, and prints queries/s, generated tokens/s, decode tokens/s (generated
tokens over the generation's time less the prefill pass's), parsed outputs and distinct tags.

    python benchmarks/tagging_engine.py                                  # the stage's settings
    python benchmarks/tagging_engine.py --grammar none --batch 64
    python benchmarks/tagging_engine.py --precision bf16 --weights dense
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tagging import DATA, chat_prompts, distinct_tags, real_queries  # noqa: E402  (the same queries as benchmarks/tagging.py)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=64, help="queries (default 64)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt", default="tagging_no_examples")
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--grammar", choices=("bounded", "unbounded", "none"), default="bounded")
    ap.add_argument("--precision", choices=("f32", "bf16"), default="f32")
    ap.add_argument("--weights", choices=("dense", "file"), default="dense")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--static", action="store_true", help="no scheduler: padded batches of --batch prompts")
    ap.add_argument("--prefix-cache", action="store_true")
    ap.add_argument("--prompt-lookup", type=int, default=0, metavar="K")
    ap.add_argument("--kv-cache-precision", default=None, help="OpenVINO's KV_CACHE_PRECISION (default: its own)")
    ap.add_argument("--save", type=Path, default=None, help="write the generated texts here (JSON list)")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import openvino_genai as og

    from instag.llm.embedded import _OpenVINOEngine, ebnf_of, find_gguf
    from instag.llm.local import file_sha256, model_cache_root
    from instag.tagging import TaggingSettings, load_schema, parse_tags

    gguf = find_gguf()
    # the IR the stage builds: dense F16 for f32, the file's own weights otherwise (built once in the model cache)
    ir = _OpenVINOEngine(
        gguf, file_sha256(gguf), model_cache_root(None), args.threads, args.batch,
        precision="f32" if args.weights == "dense" else "bf16",
    ).ir_dir  # fmt: skip
    props = {"INFERENCE_PRECISION_HINT": args.precision, "INFERENCE_NUM_THREADS": args.threads}
    props["ENABLE_CPU_PINNING"] = False
    if args.prompt_lookup:
        props["prompt_lookup"] = True
    if args.kv_cache_precision:
        props["KV_CACHE_PRECISION"] = args.kv_cache_precision
    if not args.static:
        sc = og.SchedulerConfig()
        sc.cache_size, sc.max_num_seqs, sc.max_num_batched_tokens = 2, args.batch, 8192
        sc.dynamic_split_fuse, sc.enable_prefix_caching = True, args.prefix_cache
        props["scheduler_config"] = sc
    pipe = og.LLMPipeline(str(ir), "CPU", **props)
    tok = pipe.get_tokenizer()

    s = TaggingSettings.from_dict({"prompt": args.prompt})
    prompts = chat_prompts(tok, s, real_queries(args.n, args.data))
    schema = load_schema()
    if args.grammar == "unbounded":
        for prop in schema["items"]["properties"].values():
            prop.pop("maxLength", None)
    cfg = pipe.get_generation_config()
    cfg.apply_chat_template, cfg.do_sample = False, False
    if args.prompt_lookup:
        cfg.num_assistant_tokens, cfg.max_ngram_size = args.prompt_lookup, 3

    ebnf = ebnf_of(schema) if args.grammar != "none" else None

    def generate(batch: list[str], max_tokens: int, grammar: bool) -> list[list[int]]:
        cfg.max_new_tokens = max_tokens
        cfg.structured_output_config = og.StructuredOutputConfig(grammar=ebnf) if grammar and ebnf else None
        step = args.batch if args.static else len(batch)
        out: list[list[int]] = []
        for i in range(0, len(batch), step):
            out += [
                list(t) for t in pipe.generate(tok.encode(batch[i : i + step], add_special_tokens=False), cfg).tokens
            ]
        return out

    print(f"{vars(args)}; IR {ir}; load average before: {os.getloadavg()}", flush=True)
    t0 = time.perf_counter()
    generate(chat_prompts(tok, s, ["Say hello."]), 1, grammar=True)  # grammar compilation, warm-up
    compile_s = time.perf_counter() - t0
    prefill_s = float("nan")
    if not args.prefix_cache:
        t0 = time.perf_counter()
        generate(prompts, 1, grammar=False)
        prefill_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    outs = generate(prompts, args.max_tokens, grammar=True)
    seconds = time.perf_counter() - t0
    generated = sum(map(len, outs))
    texts = [tok.decode(t, skip_special_tokens=True) for t in outs]
    parsed = [parse_tags(t).tags for t in texts]
    prompt_tokens = sum(int(tok.encode(p, add_special_tokens=False).input_ids.shape[1]) for p in prompts)
    r = {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "first_call_seconds": compile_s,
        "prefill_seconds": prefill_s,
        "prompt_tokens": prompt_tokens,
        "seconds": seconds,
        "queries_per_s": len(prompts) / seconds,
        "generated_tokens": generated,
        "tokens_per_s": generated / seconds,
        "decode_tokens_per_s": generated / (seconds - prefill_s),
        "parsed": sum(p is not None for p in parsed),
        "distinct_tags": distinct_tags(parsed),
        "load_after": os.getloadavg(),
    }
    print(
        f"first call (grammar compilation, warm-up) {compile_s:.1f} s; "
        f"prefill of {prompt_tokens} prompt tokens {prefill_s:.1f} s "
        f"({prompt_tokens / prefill_s:.0f} tok/s); generation {seconds:.1f} s = {r['queries_per_s']:.2f} q/s, "
        f"{r['tokens_per_s']:.0f} generated tok/s ({r['decode_tokens_per_s']:.0f} after the prefill's share), "
        f"{generated} tokens, parsed {r['parsed']}/{len(prompts)}, {r['distinct_tags']} distinct tags; "
        f"load average after: {r['load_after']}"
    )
    if args.json:
        args.json.write_text(json.dumps(r, indent=2))
    if args.save:
        args.save.write_text(json.dumps(texts, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
