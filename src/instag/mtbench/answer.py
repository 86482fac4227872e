"""Answers to MT-Bench as FastChat's ``gen_model_answer`` makes them, batched and cached.

Per question (``fastchat/llm_judge/gen_model_answer.py: get_model_answers``): both turns in one conversation
(turn 2's prompt holds the model's own turn-1 answer), the category's temperature (``temperature_config``;
greedy below 1e-4), ``max_new_token`` new tokens, the decoded text cut at the template's stop strings, special
tokens removed and stripped. Where FastChat loops over questions one at a time with HF ``generate``, here all
turn-1 prompts of a model go to the backend as one batch (OpenVINO GenAI continuous batching on CPU, vLLM on
GPUs), then all turn-2 prompts, through the LLM-job layer: every answer is cached by content, so a rerun
makes no model call. Sampled categories use ``seed`` (FastChat seeds torch with the choice index).

The chat template of a fine-tuned model is the one its run recorded (:mod:`.template`); it is rendered here
and sent as a raw prompt when the backend takes raw prompts, else the backend's own rendering must equal it
(else a ConfigError shows both). The untuned base model and API models answer with their own template.
Output: one JSONL per model, a header line (model, source, template and how it was checked, backend identity,
data manifest with sha256 and reference set) then FastChat's answer records (``question_id``, ``answer_id``
(a content hash here, not a random uuid, so reruns are byte-identical), ``model_id``, ``choices``) with
tokens and finish reasons.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from ..errors import ConfigError, InputError
from ..records import ANSWER
from .data import load, temperature_of
from .template import ChatTemplate, check_against_fastchat, fastchat_reference, from_record

log = logging.getLogger(__name__)

#: gen_model_answer's --max-new-token default
FASTCHAT_MAX_NEW_TOKENS = 1024


def read_run(run_dir: str | Path) -> dict:
    path = Path(run_dir) / "run.json"
    if not path.is_file():
        raise InputError(path, "fine-tuning run record not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(path, f"not JSON: {exc.msg}", exc.lineno) from None


def answering_spec(backend: dict, run_dir: str | Path | None) -> dict:
    """The backend spec that answers with a fine-tuning run's model, as the backend loads one
    (:meth:`~instag.llm.base.Backend.spec_for_run`: the run's GGUF repack for the embedded backend
    (OpenVINO GenAI, f32), its HF folder for transformers and vllm)."""
    from ..llm import backend_class

    spec = dict(backend)
    if run_dir is None or spec.get("model"):
        return spec
    out = backend_class(spec["backend"]).spec_for_run(spec, Path(run_dir))
    if out is None:
        raise ConfigError("mtbench.answer.backend", f"backend {spec['backend']!r} cannot load a fine-tuned run's model")
    return out


def clean_answer(text: str | None, stops: tuple[str, ...]) -> str:
    """FastChat's post-processing: cut at the first stop string found after position 0, strip."""
    if text is None:
        return "ERROR"  # FastChat's own marker for a failed generation
    cuts = sorted(i for s in stops if (i := text.find(s)) > 0)
    if cuts:
        text = text[: cuts[0]]
    return text.strip()


def choose_mode(template: ChatTemplate | None, backend, mode: str = "auto") -> tuple[str, str]:
    """How prompts reach the backend: ``raw`` (rendered here) or ``messages`` (the backend's template);
    returns (mode, the check made). ``mode``: auto | raw | backend."""
    if template is None:
        return "messages", "no template record: the model's own chat template (base or API model)"
    probe = [("Hello?", None)]
    ours = template.render(probe)
    try:
        theirs = backend.render(template.messages(probe))
    except Exception as exc:  # noqa: BLE001 - a backend that cannot render says so
        theirs = f"<cannot render: {exc}>"
    same = theirs == ours
    if mode == "backend" or (mode == "auto" and same):
        if not same:
            raise ConfigError(
                "mtbench.answer.template_mode",
                f"the answering backend applies a different chat template than the run recorded "
                f"({template.name}):\n  run.json: {ours!r}\n  backend:  {theirs!r}",
            )
        return "messages", f"backend renders the recorded {template.name} template identically"
    if not backend.raw_prompts:
        raise ConfigError(
            "mtbench.answer.backend",
            f"backend {backend.name!r} renders {theirs!r} for the recorded {template.name} template "
            f"({ours!r}) and cannot take a raw prompt; answer with a backend that can (embedded, transformers, vllm)",
        )
    return "raw", (
        f"recorded {template.name} template rendered by instag and sent as a raw prompt "
        f"(the backend's own template renders {theirs[:60]!r}...)"
    )


def answer_model(
    out: str | Path,
    *,
    model: str,
    backend: dict,
    run_dir: str | Path | None = None,
    info: dict | None = None,
    template_name: str | None = None,
    data_dir: str | None = None,
    reference_set: str = "gpt-4",
    per_category: int | None = None,
    categories: list[str] | None = None,
    check_sha256: bool = True,
    max_new_tokens: int = FASTCHAT_MAX_NEW_TOKENS,
    template_mode: str = "auto",
    seed: int = 0,
    cache_dir: str = "cache/llm",
    threads: int = 1,
    prices: dict | None = None,
    spend_cap_usd: float | None = None,
    backend_obj=None,
) -> dict:
    """Answer both turns of every question with one model; write its answers file; return a summary."""
    from ..llm import ChatRequest, GenerationParams
    from .jobs import make_job

    bench = load(
        data_dir,
        reference_set=reference_set,
        per_category=per_category,
        categories=categories,
        check_sha256=check_sha256,
    )
    run = read_run(run_dir) if run_dir else None
    template = from_record(run, str(Path(run_dir) / "run.json")) if run else None
    if template is None and template_name:  # a model with no chat template of its own (a pretrained base)
        ref = fastchat_reference(template_name)
        if ref is None:
            raise ConfigError("mtbench.base_template", f"FastChat has no conversation template {template_name!r}")
        template = from_record({**ref, "template": ref["name"], "stop": [ref["sep2"]] if ref["sep2"] else []})
    fastchat_check = check_against_fastchat(template) if template else None
    if fastchat_check and fastchat_check["differences"]:
        log.info(
            "template %s differs from FastChat's in %s (recorded by the run)",
            template.name,
            fastchat_check["differences"],
        )
    spec = answering_spec(backend, run_dir)
    job = make_job(
        spec,
        stage="mtbench_answer",
        namespace="mtbench:answer:v1",
        cache_dir=cache_dir,
        prices=prices,
        spend_cap_usd=spend_cap_usd,
        max_retries=0,
        threads=threads,
        backend=backend_obj,
    )
    stops = template.stop if template else ()
    try:
        mode, check = choose_mode(template, job.backend, template_mode)
        log.info("%s: %s", model, check)
        convs: dict[int, list[tuple[str, str | None]]] = {q["question_id"]: [] for q in bench.questions}
        got: dict[int, list[dict]] = {q["question_id"]: [] for q in bench.questions}
        n_turns = max(len(q["turns"]) for q in bench.questions)
        for t in range(n_turns):
            todo = [q for q in bench.questions if len(q["turns"]) > t]
            requests = []
            for q in todo:
                turns = [*convs[q["question_id"]], (q["turns"][t], None)]
                temp = temperature_of(q["category"])
                params = GenerationParams(
                    temperature=temp if temp >= 1e-4 else 0.0,
                    max_tokens=int(max_new_tokens),
                    seed=seed if temp >= 1e-4 else None,
                    stop=tuple(stops),
                )
                if mode == "raw":
                    req = ChatRequest([], params, prompt=template.render(turns), meta={"q": q["question_id"]})
                elif template is not None:
                    req = ChatRequest(template.messages(turns), params, meta={"q": q["question_id"]})
                else:
                    msgs = []
                    for u, a in turns:
                        msgs.append({"role": "user", "content": u})
                        if a is not None:
                            msgs.append({"role": "assistant", "content": a})
                    req = ChatRequest(msgs, params, meta={"q": q["question_id"]})
                requests.append(req)
            if t == 0:
                log.info("answer estimate: %s", job.estimate(requests))
            results = job.run(requests, desc=f"{model} turn {t + 1}")
            for q, r in zip(todo, results, strict=True):
                resp = r.response
                text = clean_answer(r.raw if r.ok else None, stops)
                convs[q["question_id"]].append((q["turns"][t], text))
                got[q["question_id"]].append(
                    {
                        "text": text,
                        "ok": r.ok,
                        "error": r.error,
                        "tokens": resp.completion_tokens if resp else None,
                        "finish": resp.finish_reason if resp else None,
                    }
                )
        info_b = job.backend_info
    finally:
        job.close()
    calls = job.stats()
    log.info("model calls: %d (cache hits: %d)", calls.get("calls", 0), calls.get("hits", 0))

    records = []
    for q in bench.questions:
        turns = [g["text"] for g in got[q["question_id"]]]
        body = json.dumps([model, q["question_id"], turns], ensure_ascii=False)
        records.append(
            {
                "question_id": q["question_id"],
                "answer_id": hashlib.sha256(body.encode("utf-8")).hexdigest()[:22],
                "model_id": model,
                "choices": [{"index": 0, "turns": turns}],
                "category": q["category"],
                "temperature": temperature_of(q["category"]),
                "tokens": [g["tokens"] for g in got[q["question_id"]]],
                "finish": [g["finish"] for g in got[q["question_id"]]],
                "errors": [g["error"] for g in got[q["question_id"]] if not g["ok"]],
            }
        )
    records.sort(key=lambda r: r["question_id"])
    header = {
        "kind": "header",
        "model": model,
        **(info or {}),
        "run_dir": str(run_dir) if run_dir else None,
        "template": template.record() if template else None,
        "template_mode": mode,
        "template_check": check,
        "template_vs_fastchat": fastchat_check,
        "backend": {**info_b, "spec": spec},
        "max_new_tokens": int(max_new_tokens),
        "sampling_seed": seed,
        "data": bench.manifest(),
    }
    ANSWER.write(out, records, header=header)
    n_err = sum(len(r["errors"]) for r in records)
    cut = sum(1 for r in records for f in r["finish"] if f == "length")
    summary = {
        "model": model,
        "answers": len(records),
        "turns_failed": n_err,
        "turns_cut_at_max_tokens": cut,
        "backend": info_b,
        "template_check": check,
        "calls": calls,
    }
    log.info("answered %s: %s", model, summary)
    return summary
