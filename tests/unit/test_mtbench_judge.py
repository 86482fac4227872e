"""MT-Bench answering and judging through the LLM-job layer: against a real loopback OpenAI-compatible server
(tests/support/openai_server.py) and the scripted backend.

- the messages the server receives per category and turn are FastChat's (reference answers where it puts them);
- a judging process killed mid-way and rerun asks nothing twice; a third run asks nothing;
- malformed judgments are failures with their raw text, re-asked a bounded number of times, never scores;
- answers: both turns as one conversation, FastChat's per-category temperatures, the run's template sent raw.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from instag.mtbench import data as mdata
from instag.mtbench import judge as mjudge
from instag.mtbench.score import summarize
from instag.mtbench.template import VICUNA_V11
from tests.support.openai_server import OpenAIServer, last_user_message, openai_server_factory  # noqa: F401


def _answers_file(path, per_category=1, model="size/n60/seed1"):
    bench = mdata.load(per_category=per_category)
    head = {"kind": "header", "model": model, "source": "finetune", "ablation": "size", "variant": "n60", "seed": 1}
    recs = [head]
    for q in bench.questions:
        recs.append(
            {
                "question_id": q["question_id"],
                "answer_id": "x",
                "model_id": model,
                "category": q["category"],
                "choices": [{"index": 0, "turns": [f"A1 for {q['question_id']}", f"A2 for {q['question_id']}"]}],
            }
        )
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return bench


def _judge(server, **kw):
    return {
        "backend": "openai",
        "model": "gpt-4",
        "base_url": server.base_url,
        "concurrency": kw.pop("conc", 8),
        "max_retries": 0,
    }


def _fastchat_messages(bench, qid, turn):
    from tests.unit.test_mtbench import _fastchat_common

    common = _fastchat_common()
    captured = []

    def capture(model, conv, temperature, max_tokens, api_dict=None):
        captured.append(conv.to_openai_api_messages())
        return "[[1]]"

    orig = common.chat_completion_openai
    common.chat_completion_openai = capture
    try:
        q = bench.question(qid)
        prompts = common.load_judge_prompts(str(bench.folder / mdata.JUDGE_PROMPTS))
        ref_based = q["category"] in mdata.NEED_REF_CATS
        name = mjudge.prompt_name(q["category"], turn)
        judge = common.Judge("gpt-4", prompts[name], ref_based=ref_based, multi_turn=turn == 2)
        ref = None
        if ref_based:
            r = bench.references[qid]
            ref = {"choices": [{"turns": r["turns"]}]}
        ans = {"choices": [{"turns": [f"A1 for {qid}", f"A2 for {qid}"]}]}
        common.run_judge_single(q, ans, judge, ref, multi_turn=turn == 2)
    finally:
        common.chat_completion_openai = orig
    return captured[0]


@pytest.mark.slow  # imports FastChat (and with it transformers)
def test_judging_sends_fastchats_prompts_and_records_failures(tmp_path, openai_server_factory):  # noqa: F811
    def reply(body):
        text = last_user_message(body)
        if "A2 for 81" in text:  # turn 2 of the first writing question: never a score
            return "I would rate this answer highly."
        if "A1 for 81" in text:
            return "Fine.\n\nRating: [7]"  # FastChat's backup pattern
        return "Good answer.\n\nRating: [[8]]"

    server = openai_server_factory(reply=reply, served_model="gpt-4-0613")
    answers = tmp_path / "answers.jsonl"
    bench = _answers_file(answers)
    out = tmp_path / "judgments.jsonl"
    summary = mjudge.judge_model(
        answers, out, judge=_judge(server), per_category=1, repeats=1, max_retries=2, cache_dir=str(tmp_path / "cache")
    )
    assert summary["judgments"] == 16 and summary["failed"] == 1
    # what the server received, per category and turn, is FastChat's conversation for that judge prompt
    bodies = server.bodies
    for q in bench.questions:
        for turn in (1, 2):
            want = _fastchat_messages(bench, q["question_id"], turn)
            assert any(b["messages"] == want for b in bodies), (q["category"], turn)
            temps = sorted(b["temperature"] for b in bodies if b["messages"] == want)
            # asked greedily as FastChat does; only the unparseable one re-asked (at retry_temperature)
            assert temps == ([0, 0.7, 0.7] if (q["question_id"], turn) == (81, 2) else [0])
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    head, recs = lines[0], lines[1:]
    assert head["judge"]["reported_model"] == "gpt-4-0613"  # what the endpoint says it is
    assert head["data"]["reference_set"] == "gpt-4"
    bad = [r for r in recs if r["status"] == "failed"]
    assert len(bad) == 1 and bad[0]["score"] is None and bad[0]["raw"] == "I would rate this answer highly."
    assert bad[0]["attempts"] == 3  # asked, then re-asked twice (sampled at retry_temperature)
    assert next(r for r in recs if r["question_id"] == 81 and r["turn"] == 1)["score"] == 7.0
    main, _ = summarize([out], n_boot=50)
    row = main[0]
    assert row["failed"] == 1 and row["judged"] == 15
    assert row["judge_reported"] == "gpt-4-0613"


def _count_requests(server) -> int:
    return sum(server.stats(bodies=False)["counts"].values())


@pytest.mark.slow  # three `instag` processes
def test_killed_judging_rerun_asks_nothing_twice(tmp_path, openai_server_factory):  # noqa: F811
    server = openai_server_factory(delay=0.15, reply=lambda body: "Rating: [[6]]")
    answers = tmp_path / "answers.jsonl"
    _answers_file(answers, per_category=2)  # 16 questions x 2 turns = 32 judgments
    settings = json.dumps(
        {"questions_per_category": 2, "cache_dir": str(tmp_path / "cache"), "judge": {"repeats": 1, "max_retries": 0}}
    )
    judge = json.dumps(_judge(server, conc=2))
    cmd = [
        sys.executable,
        "-m",
        "instag",
        "-v",
        "mtbench",
        "judge",
        "--settings",
        settings,
        "--judge",
        judge,
        "--answers",
        str(answers),
        "--out",
        str(tmp_path / "j.jsonl"),
    ]
    env = {**os.environ, "OPENAI_API_KEY": "test"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 60
    while _count_requests(server) < 10 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # a killed job: no cleanup runs
    proc.wait()
    first = dict(server.stats(bodies=False)["counts"])
    assert 10 <= sum(first.values()) < 32, "the job should have been killed mid-way"
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    counts = server.stats(bodies=False)["counts"]
    # every judgment was asked; at most the requests in flight at the kill (concurrency 2) were asked again
    assert len(counts) == 32
    assert sum(counts.values()) <= 32 + 2
    recs = [json.loads(x) for x in (tmp_path / "j.jsonl").read_text().splitlines()[1:]]
    assert len(recs) == 32 and all(r["score"] == 6.0 for r in recs)
    before = sum(counts.values())
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0
    assert _count_requests(server) == before  # a rerun makes no call


def test_repeats_are_distinct_judgments_made_once(tmp_path):
    from instag.llm.scripted import ScriptedBackend

    answers = tmp_path / "answers.jsonl"
    _answers_file(answers, per_category=1)
    backend = ScriptedBackend(fn=lambda req: f"Rating: [[{3 + req.repeat // mjudge.REPEAT_STRIDE}]]")
    out = tmp_path / "j.jsonl"
    kw = dict(
        judge={"backend": "scripted"}, per_category=1, repeats=3, temperature=0.0, cache_dir=str(tmp_path / "cache")
    )
    mjudge.judge_model(answers, out, backend=backend, **kw)
    assert backend.n_calls == 48
    main, _ = summarize([out], n_boot=20)
    assert main[0]["overall"] == 4.0 and main[0]["std"] == pytest.approx(1.0) and main[0]["repeats"] == 3
    backend2 = ScriptedBackend(fn=lambda req: "never called")
    mjudge.judge_model(answers, tmp_path / "j2.jsonl", backend=backend2, **kw)
    assert backend2.n_calls == 0
    assert (tmp_path / "j2.jsonl").read_bytes() == out.read_bytes()


def test_answers_two_turns_fastchat_temperatures_raw_template(tmp_path):
    from instag.llm.scripted import ScriptedBackend
    from instag.mtbench.answer import answer_model

    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(
        json.dumps(
            {
                "template": "vicuna_v1.1",
                "system": VICUNA_V11["system"],
                "roles": ["USER", "ASSISTANT"],
                "sep": " ",
                "sep2": "</s>",
                "stop": ["</s>"],
            }
        )
    )
    (run / "model.gguf").write_bytes(b"")
    backend = ScriptedBackend(fn=lambda req: "  Sure.</s> USER: junk")
    out = tmp_path / "a.jsonl"
    summary = answer_model(
        out,
        model="size/n60/seed1",
        backend={"backend": "scripted"},
        run_dir=run,
        info={"ablation": "size", "variant": "n60", "seed": 1},
        per_category=1,
        max_new_tokens=32,
        cache_dir=str(tmp_path / "cache"),
        backend_obj=backend,
    )
    assert summary["answers"] == 8
    calls = backend.calls
    assert len(calls) == 16 and all(c.prompt is not None for c in calls)
    by_temp = {c.prompt.split("USER: ", 1)[1][:30]: c.params.temperature for c in calls if c.prompt.count("USER:") == 1}
    bench = mdata.load(per_category=1)
    for q in bench.questions:
        assert by_temp[q["turns"][0][:30]] == mdata.temperature_of(q["category"])
    turn2 = [c.prompt for c in calls if c.prompt.count("USER:") == 2]
    assert len(turn2) == 8 and all("ASSISTANT: Sure.</s>USER: " in p for p in turn2)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert lines[0]["template_mode"] == "raw" and lines[0]["template"]["name"] == "vicuna_v1.1"
    assert all(r["choices"][0]["turns"] == ["Sure.", "Sure."] for r in lines[1:])


def test_pretrained_base_answers_in_the_configured_fastchat_template(tmp_path):
    from instag.llm.scripted import ScriptedBackend
    from instag.mtbench.answer import answer_model

    backend = ScriptedBackend(fn=lambda req: "Fine.")
    answer_model(
        tmp_path / "a.jsonl",
        model="base",
        backend={"backend": "scripted"},
        template_name="vicuna_v1.1",
        per_category=1,
        categories=["math"],
        cache_dir=str(tmp_path / "c"),
        backend_obj=backend,
    )
    assert len(backend.calls) == 2
    assert backend.calls[0].prompt.startswith(VICUNA_V11["system"] + " USER: ")
    assert backend.calls[1].prompt.count("ASSISTANT: Fine.</s>USER: ") == 1
