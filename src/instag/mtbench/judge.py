"""Single-answer grading as FastChat's ``gen_judgment --mode single`` does it, made once per answer and repeat.

Per question and turn (``fastchat/llm_judge/common.py: run_judge_single``): the judge prompt is
``single-v1`` for turn 1 and ``single-v1-multi-turn`` for turn 2, or their ``single-math-v1`` variants with
the reference answer (``ref_answer_1``, and ``ref_answer_2`` for turn 2) for the categories in
``NEED_REF_CATS``; the judge sees the prompt's system message and the filled template as one user message.
The score is the first ``[[n]]`` in the judgment, else the first ``[n]`` (no range check, as FastChat).

Where we differ on purpose: FastChat stores -1 for a judgment with no score and its ``show_result`` drops
those rows silently. Here such a judgment is a failure record (status, error, the raw text), asked again up
to ``max_retries`` times, and never becomes a number; tables count judged and failed. FastChat judges once
at temperature 0; the paper reports mean ± std of three judgings, so ``repeats`` judgings are made per
answer (``ChatRequest.repeat``), at the judge's temperature.

Each judgment is made exactly once: the cache key holds the judge prompt (question, answer text, reference,
prompt template), the judge backend and model, the decoding parameters and the repeat, so rerunning, or
judging a new model, never asks again for what was judged. The judge model id the endpoint reports is
recorded beside the configured one.

The demo judge (the embedded SmolLM2-135M) is grammar-constrained to output ``Rating: [[n]]`` only; its
scores say little and are labelled in every table and figure as not comparable to GPT-4's.
"""

from __future__ import annotations

import ast
import hashlib
import json
import logging
import re
from pathlib import Path

from ..errors import ConfigError
from ..records import ANSWER, JUDGMENT
from .data import JUDGE_PROMPT_NAMES, NEED_REF_CATS, BenchData

log = logging.getLogger(__name__)

#: fastchat.llm_judge.common.one_score_pattern / one_score_pattern_backup
ONE_SCORE = re.compile(r"\[\[(\d+\.?\d*)\]\]")
ONE_SCORE_BACKUP = re.compile(r"\[(\d+\.?\d*)\]")
#: FastChat's judge call: temperature 0, max_tokens 2048 (chat_completion_openai in run_judge_single)
FASTCHAT_JUDGE_MAX_TOKENS = 2048
#: The demo judge's output, constrained by a JSON schema to one string ``Rating: [[n]]``, n in 1..10 (an enum:
#: OpenVINO GenAI's bundled grammar compiler reads no regex pattern)
DEMO_SCHEMA = {
    "type": "object",
    "properties": {"rating": {"type": "string", "enum": [f"Rating: [[{n}]]" for n in range(1, 11)]}},
    "required": ["rating"],
    "additionalProperties": False,
}
DEMO_LABEL = "demo judge: not comparable to GPT-4"
#: repeat r of a judgment is asked with ChatRequest.repeat = r * REPEAT_STRIDE (its re-asks take the indices after)
REPEAT_STRIDE = 100


def prompt_name(category: str, turn: int) -> str:
    return JUDGE_PROMPT_NAMES[(category in NEED_REF_CATS, turn == 2)]


def answer_hash(turns: list[str]) -> str:
    return hashlib.sha256(json.dumps(turns, ensure_ascii=False).encode("utf-8")).hexdigest()[:16]


def user_prompt(question: dict, answer_turns: list[str], template: dict, reference: dict | None, turn: int) -> str:
    """The filled judge template exactly as ``run_judge_single`` builds it."""
    kwargs = {}
    if reference is not None:
        kwargs["ref_answer_1"] = reference["turns"][0]
        if turn == 2:
            kwargs["ref_answer_2"] = reference["turns"][1]
    if turn == 2:
        return template["prompt_template"].format(
            question_1=question["turns"][0],
            question_2=question["turns"][1],
            answer_1=answer_turns[0],
            answer_2=answer_turns[1],
            **kwargs,
        )
    return template["prompt_template"].format(question=question["turns"][0], answer=answer_turns[0], **kwargs)


def judge_messages(system_prompt: str, prompt: str) -> list[dict[str, str]]:
    """FastChat's ``conv.to_openai_api_messages()`` for the judge: system (when non-empty), then the prompt."""
    out = [{"role": "system", "content": system_prompt}] if system_prompt else []
    out.append({"role": "user", "content": prompt})
    return out


def parse_score(text: str | None) -> tuple[float | None, str | None]:
    """FastChat's score extraction: ``[[n]]``, else ``[n]``; (score, None) or (None, error). Never -1."""
    if not text:
        return None, "empty judgment"
    m = ONE_SCORE.search(text) or ONE_SCORE_BACKUP.search(text)
    if not m:
        return None, "no [[rating]] in the judgment"
    value = ast.literal_eval(m.group(1))
    return float(value), None


def prompt_version(bench: BenchData) -> str:
    """A hash of the four judge prompts used (their text is FastChat's; a changed file is a new version)."""
    used = {n: bench.judge_prompts[n] for n in sorted(set(JUDGE_PROMPT_NAMES.values()))}
    return hashlib.sha256(json.dumps(used, sort_keys=True).encode("utf-8")).hexdigest()[:12]


def read_answers(path: str | Path) -> tuple[dict, list[dict]]:
    """An answers file written by :mod:`instag.mtbench.answer`: (its header, the answer records)."""
    return ANSWER.read_headed(path, need_header=True)  # type: ignore[return-value]


def build_cases(bench: BenchData, answers: list[dict], repeats: int) -> list[dict]:
    """One case per (question, turn, repeat) of an answers file, with FastChat's prompt for it."""
    cases = []
    by_id = {q["question_id"]: q for q in bench.questions}
    for ans in answers:
        q = by_id.get(ans["question_id"])
        if q is None:
            continue  # an answer to a question outside the configured subset
        turns = ans["choices"][0]["turns"]
        ref = bench.references.get(q["question_id"]) if q["category"] in NEED_REF_CATS else None
        for turn in (1, 2)[: len(q["turns"])]:
            name = prompt_name(q["category"], turn)
            tpl = bench.judge_prompts[name]
            text = user_prompt(q, turns, tpl, ref, turn)
            for r in range(repeats):
                cases.append(
                    {
                        "question_id": q["question_id"],
                        "category": q["category"],
                        "turn": turn,
                        "repeat": r,
                        "prompt_name": name,
                        "system_prompt": tpl["system_prompt"],
                        "user_prompt": text,
                        "answer_hash": answer_hash(turns[:turn]),
                    }
                )
    return cases


def judge_model(
    answers_file: str | Path,
    out: str | Path,
    *,
    judge: dict,
    data_dir: str | None = None,
    reference_set: str = "gpt-4",
    per_category: int | None = None,
    categories: list[str] | None = None,
    check_sha256: bool = True,
    repeats: int = 3,
    temperature: float = 0.0,
    max_tokens: int = FASTCHAT_JUDGE_MAX_TOKENS,
    constrained: bool = False,
    demo: bool = False,
    max_retries: int = 2,
    retry_temperature: float = 0.7,
    cache_dir: str = "cache/llm",
    prices: dict | None = None,
    spend_cap_usd: float | None = None,
    cost_estimate: str | Path | None = None,
    threads: int = 1,
    backend=None,
) -> dict:
    """Judge every answer of one model's answers file; write the judgment records; return a summary."""
    from ..io import write_json
    from ..llm import ChatRequest, GenerationParams
    from .data import load
    from .jobs import make_job

    if repeats < 1:
        raise ConfigError("mtbench.judge.repeats", "must be >= 1")
    if max_retries >= REPEAT_STRIDE:
        raise ConfigError("mtbench.judge.max_retries", f"must be < {REPEAT_STRIDE}")
    bench = load(
        data_dir,
        reference_set=reference_set,
        per_category=per_category,
        categories=categories,
        check_sha256=check_sha256,
    )
    header, answers = read_answers(answers_file)
    cases = build_cases(bench, answers, repeats)
    version = prompt_version(bench)
    params = GenerationParams(
        temperature=float(temperature), max_tokens=int(max_tokens), json_schema=DEMO_SCHEMA if constrained else None
    )
    # A re-ask of attempt k is asked with repeat index + k (instag.llm.job), so repeats are spaced by
    # REPEAT_STRIDE: judging repeat 0's re-asks never reuse repeat 1's answer.
    requests = [
        ChatRequest(
            judge_messages(c["system_prompt"], c["user_prompt"]),
            params,
            repeat=c["repeat"] * REPEAT_STRIDE,
            meta={"case": i},
        )
        for i, c in enumerate(cases)
    ]
    job = make_job(
        judge,
        stage="mtbench_judge",
        namespace=f"mtbench:judge:{version}",
        cache_dir=cache_dir,
        prices=prices,
        spend_cap_usd=spend_cap_usd,
        max_retries=max_retries,
        retry_temperature=retry_temperature,
        threads=threads,
        backend=backend,
    )
    try:
        est = job.estimate(requests)
        log.info("judge cost estimate (completion = max_tokens, an upper bound): %s", est)
        if cost_estimate is not None:
            write_json(
                cost_estimate,
                {
                    "stage": "mtbench_judge",
                    "model": header["model"],
                    "judge": judge,
                    "requests": len(requests),
                    "estimate": est,
                    "spend_cap_usd": spend_cap_usd,
                },
            )
        results = job.run(requests, parse=parse_score, desc=f"judging {header['model']}")
        info = job.backend_info
    finally:
        job.close()

    judge_id = info.get("model") or judge.get("model") or judge["backend"]
    records = []
    for c, r in zip(cases, results, strict=True):
        records.append(
            {
                # FastChat's judgment-file fields
                "question_id": c["question_id"],
                "model": header["model"],
                "judge": [judge_id, c["prompt_name"]],
                "user_prompt": c["user_prompt"],
                "judgment": r.raw if r.ok else None,
                "score": r.value if r.ok else None,  # never -1: a failure has no score
                "turn": c["turn"],
                # ours
                "category": c["category"],
                "repeat": c["repeat"],
                "answer_hash": c["answer_hash"],
                "status": "ok" if r.ok else "failed",
                "error": None if r.ok else r.error,
                "raw": r.raw,
                "attempts": r.attempts,
                "judge_backend": info.get("backend"),
                "judge_reported": info.get("reported_model"),
                "prompt_version": version,
                "demo_judge": bool(demo),
            }
        )
    records.sort(key=lambda x: (x["question_id"], x["turn"], x["repeat"]))
    head = {
        "kind": "header",
        "model": header["model"],
        "model_info": {k: header.get(k) for k in ("ablation", "variant", "seed", "source", "run_dir")},
        "judge": {
            **info,
            "spec": judge,
            "temperature": temperature,
            "repeats": repeats,
            "max_tokens": max_tokens,
            "constrained": constrained,
            "demo": bool(demo),
            "label": DEMO_LABEL if demo else "",
        },
        "prompt_version": version,
        "data": bench.manifest(),
        "answers": {"file": str(answers_file), "sha256": _sha(answers_file)},
    }
    JUDGMENT.write(out, records, header=head)
    failed = sum(1 for x in records if x["status"] != "ok")
    summary = {
        "model": header["model"],
        "judgments": len(records),
        "failed": failed,
        "judge": info,
        "calls": job.stats(),
    }
    log.info("judged %s: %d judgments, %d failed", header["model"], len(records), failed)
    log.info("model calls: %d (cache hits: %d)", summary["calls"].get("calls", 0), summary["calls"].get("hits", 0))
    return summary


def _sha(path) -> str:
    from .data import sha256_file

    return sha256_file(path)
