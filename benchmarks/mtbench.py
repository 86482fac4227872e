"""MT-Bench speed: answering as FastChat's gen_model_answer does it vs as the mtbench stage does it; and judging
against a loopback OpenAI-compatible server that answers after 200 ms.

Answering: the same questions (default: 2 per category = 16 questions, both turns) with the same fine-tuned
model, greedy or sampled at FastChat's per-category temperatures, ``--max-new-tokens`` per turn,

(a) as ``fastchat/llm_judge/gen_model_answer.py: get_model_answers`` does: one question at a time, the Vicuna
    prompt rendered per turn, HF ``model.generate`` in float32 on the run's HF folder (``model/``), batch 1;
(b) as the stage does: :func:`instag.mtbench.answer.answer_model` over the ``embedded`` backend (OpenVINO GenAI,
    f32 precision hint, on the run's ``model.gguf``), all turn-1 prompts in one batch, then all turn-2 prompts;
    a fresh cache folder, so every answer is computed.

Each part runs in its own process. Prints answers/s (question = both turns), generated tokens/s and the
(b)/(a) ratio (target >= 10x on 2 cores), and how many greedy answers are the same text in both.

Judging: ``--judge-requests`` judgments (FastChat's prompts over hand-made answers) through
:func:`instag.mtbench.judge.judge_model` with the openai backend at ``--concurrency`` against the loopback
server (in its own process) with ``--delay``; prints judgments/s and the share of the ideal rate
concurrency / delay (target >= 90% at 64). By default the number of judgments is what the ideal rate makes in
``--judge-seconds`` (20 s: 6400 at 64 / 0.2 s), as benchmarks/api_client.py does, so that the first round's
connection set-up (~0.2 s for 64 new connections) does not decide the figure; ``--judge-requests`` sets it. The ``openai`` SDK and ``aiohttp`` are imported before the clock starts (a
one-time cost per process, ~1 s here, printed apart: it is not a rate). The load average is printed before and after.

    python benchmarks/mtbench.py --run-dir results/finetune/size/n60/seed42
    python benchmarks/mtbench.py --skip-answer                      # judging only, ~20 s at the ideal rate
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _load():
    return os.getloadavg()


def _questions(per_category: int):
    from instag.mtbench.data import load

    return load(per_category=per_category).questions


def fastchat_way(run_dir: str, per_category: int, max_new_tokens: int, threads: int, q):
    """gen_model_answer's loop, on CPU in float32."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from instag.mtbench.answer import read_run
    from instag.mtbench.data import temperature_of
    from instag.mtbench.template import from_record

    torch.set_num_threads(threads)
    tpl = from_record(read_run(run_dir))
    tok = AutoTokenizer.from_pretrained(Path(run_dir) / "model")
    model = AutoModelForCausalLM.from_pretrained(Path(run_dir) / "model", dtype=torch.float32).eval()
    questions = _questions(per_category)
    answers, tokens = {}, 0
    t0 = time.perf_counter()
    with torch.inference_mode():
        for question in questions:
            temperature = temperature_of(question["category"])
            torch.manual_seed(0)
            turns, conv = [], []
            for qs in question["turns"]:
                prompt = tpl.render([*conv, (qs, None)])
                input_ids = tok([prompt], add_special_tokens=False).input_ids
                do_sample = temperature >= 1e-4
                out = model.generate(
                    torch.as_tensor(input_ids),
                    do_sample=do_sample,
                    temperature=temperature if do_sample else None,
                    top_p=None,
                    top_k=None,
                    max_new_tokens=max_new_tokens,
                )
                ids = out[0][len(input_ids[0]) :]
                tokens += len(ids)
                text = tok.decode(ids, skip_special_tokens=True)
                cuts = sorted(i for s in tpl.stop if (i := text.find(s)) > 0)
                text = (text[: cuts[0]] if cuts else text).strip()
                conv.append((qs, text))
                turns.append(text)
            answers[question["question_id"]] = (question["category"], turns)
    q.put({"seconds": time.perf_counter() - t0, "tokens": tokens, "answers": answers})


def stage_way(run_dir: str, per_category: int, max_new_tokens: int, threads: int, q):
    from instag.mtbench.answer import answer_model

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "answers.jsonl"
        spec = {"backend": "embedded", "engine": "openvino", "precision": "f32", "batch_size": 32}
        # load the model once outside the timing (FastChat's load is outside too)
        from instag.llm import get_backend
        from instag.mtbench.answer import answering_spec

        backend = get_backend({**answering_spec(spec, run_dir), "threads": threads})
        if hasattr(backend, "load"):
            backend.load()
        t0 = time.perf_counter()
        answer_model(
            out,
            model="bench",
            backend=spec,
            run_dir=run_dir,
            per_category=per_category,
            max_new_tokens=max_new_tokens,
            cache_dir=str(Path(tmp) / "cache"),
            threads=threads,
            backend_obj=backend,
        )
        seconds = time.perf_counter() - t0
        lines = [json.loads(x) for x in out.read_text().splitlines()[1:]]
    tokens = sum(t or 0 for r in lines for t in r["tokens"])
    answers = {r["question_id"]: (r["category"], r["choices"][0]["turns"]) for r in lines}
    q.put({"seconds": seconds, "tokens": tokens, "answers": answers})


def _run(fn, *args):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=fn, args=(*args, q))
    p.start()
    res = q.get()
    p.join()
    return res


def bench_answer(a) -> dict:
    print(f"load before answering: {_load()}", flush=True)
    n_q = len(_questions(a.per_category))
    rows = {}
    for name, fn in (("fastchat", fastchat_way), ("stage", stage_way)):
        r = _run(fn, a.run_dir, a.per_category, a.max_new_tokens, a.threads)
        rows[name] = r
        print(
            f"({'a' if name == 'fastchat' else 'b'}) {name:8s}: {n_q} questions x 2 turns in {r['seconds']:.1f} s: "
            f"{n_q / r['seconds']:.3f} answers/s, {r['tokens'] / r['seconds']:.1f} generated tokens/s",
            flush=True,
        )
    fa, st = rows["fastchat"], rows["stage"]
    ratio = fa["seconds"] / st["seconds"]
    greedy = [qid for qid, (cat, _) in fa["answers"].items() if cat in ("extraction", "math", "coding", "reasoning")]
    same = sum(1 for qid in greedy if fa["answers"][qid][1] == st["answers"][qid][1])
    print(
        f"ratio (b)/(a) answers/s: {ratio:.1f}x (target >= 10x); greedy questions with identical text in both: "
        f"{same}/{len(greedy)}"
    )
    print(f"load after answering: {_load()}", flush=True)
    return {
        "questions": n_q,
        "fastchat_s": fa["seconds"],
        "stage_s": st["seconds"],
        "ratio": ratio,
        "fastchat_tok_s": fa["tokens"] / fa["seconds"],
        "stage_tok_s": st["tokens"] / st["seconds"],
        "greedy_same": same,
        "greedy": len(greedy),
    }


def rating_reply(body: dict) -> str:
    """The loopback judge's answer: a short judgment with a FastChat rating."""
    return "The answer is relevant and correct.\n\nRating: [[6]]"


def bench_judge(a) -> dict:
    sys.path.insert(0, str(REPO))
    import importlib

    # the server process imports its reply function by module name: this file's, as the module `mtbench`
    reply = importlib.import_module(Path(__file__).stem).rating_reply
    from instag.mtbench.data import load
    from instag.mtbench.judge import judge_model
    from tests.support.openai_server import OpenAIServer

    bench = load()
    wanted = a.judge_requests or math.ceil(a.judge_seconds * a.concurrency / a.delay)
    repeats = max(1, -(-wanted // (2 * len(bench.questions))))
    t_import = time.perf_counter()
    import aiohttp  # noqa: F401  (the loopback transport's)
    import openai  # noqa: F401  (the backend's one-time imports, kept out of the rate)

    print(f"openai SDK and aiohttp imports (once per process, not timed below): {time.perf_counter() - t_import:.2f} s")
    print(f"load before judging: {_load()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp, OpenAIServer(delay=a.delay, mode="process", reply=reply) as server:
        answers = Path(tmp) / "answers.jsonl"
        recs = [{"kind": "header", "model": "bench"}]
        recs += [
            {"question_id": q["question_id"], "model_id": "bench", "choices": [{"turns": ["An answer.", "More."]}]}
            for q in bench.questions
        ]
        answers.write_text("".join(json.dumps(r) + "\n" for r in recs))
        judge = {
            "backend": "openai",
            "model": "gpt-4",
            "base_url": server.base_url,
            "concurrency": a.concurrency,
            "max_retries": 0,
        }
        t0 = time.perf_counter()
        s = judge_model(
            answers,
            Path(tmp) / "j.jsonl",
            judge=judge,
            repeats=repeats,
            max_retries=0,
            cache_dir=str(Path(tmp) / "cache"),
        )
        seconds = time.perf_counter() - t0
    n = s["judgments"]
    rate = n / seconds
    ideal = a.concurrency / a.delay
    print(
        f"judging: {n} judgments in {seconds:.2f} s = {rate:.1f}/s; ideal {ideal:.0f}/s "
        f"(concurrency {a.concurrency} / {a.delay} s): {100 * rate / ideal:.1f}% (target >= 90%); "
        f"failed {s['failed']}"
    )
    print(f"load after judging: {_load()}", flush=True)
    return {"judgments": n, "seconds": seconds, "rate": rate, "ideal": ideal, "share": rate / ideal}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run-dir", default=None, help="a fine-tuning run (run.json, model/, model.gguf)")
    p.add_argument("--per-category", type=int, default=2)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--judge-seconds",
        type=float,
        default=20.0,
        help="judge for this many seconds at the ideal rate (default 20; judgments = seconds x concurrency / delay)",
    )
    p.add_argument("--judge-requests", type=int, default=None, help="judgments to make (overrides --judge-seconds)")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--delay", type=float, default=0.2)
    p.add_argument("--skip-answer", action="store_true")
    p.add_argument("--skip-judge", action="store_true")
    p.add_argument("--json", default=None, help="write the figures to this file")
    a = p.parse_args(argv)
    out = {}
    if not a.skip_answer:
        if not a.run_dir:
            found = sorted(REPO.glob("results/finetune/*/*/seed*/model.gguf"))
            if not found:
                p.error("no fine-tuning run found under results/finetune; pass --run-dir")
            a.run_dir = str(found[0].parent)
        print(f"run: {a.run_dir}", flush=True)
        out["answer"] = bench_answer(a)
    if not a.skip_judge:
        out["judge"] = bench_judge(a)
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
