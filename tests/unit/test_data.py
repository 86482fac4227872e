"""Each reader on good and bad rows; validation, de-duplication, limits, fail-loud and statistics."""

import gzip
import json

import pytest

from instag.data import READERS, ingest, queries, record_id, summarize
from instag.errors import InputError
from instag.io import read_tsv


def run(tmp_path, fmt, text, name="ds", **kw):
    src = tmp_path / f"src.{fmt}"
    src.write_text(text, encoding="utf-8")
    out, rej = tmp_path / "out.jsonl", tmp_path / "rej.jsonl"
    stats = ingest(name, src, fmt, out, rej, kw.pop("stats", None), **kw)
    kept = [json.loads(x) for x in out.read_text().splitlines()]
    rejected = [json.loads(x) for x in rej.read_text().splitlines()]
    return stats, kept, rejected


def test_sharegpt_roles_multiturn_and_rejections(tmp_path):
    rows = [
        {
            "id": "a",
            "conversations": [
                {"from": "human", "value": "Hi?"},
                {"from": "gpt", "value": "Hello"},
                {"from": "human", "value": "More?"},
                {"from": "gpt", "value": "Yes"},
            ],
        },
        {"id": "b", "conversations": []},
        {"id": "c", "conversations": [{"from": "wizard", "value": "x"}]},
        {"id": "d", "conversations": [{"from": "gpt", "value": "only an answer"}]},
        {"id": "e", "conversations": [{"from": "human", "value": "  "}, {"from": "gpt", "value": "x"}]},
        {
            "id": "f",
            "conversations": [
                {"from": "human", "value": "Hi?"},
                {"from": "gpt", "value": "Hello"},
                {"from": "human", "value": "More?"},
                {"from": "gpt", "value": "Yes"},
            ],
        },
        {
            "id": "g",
            "conversations": [
                {"from": "system", "value": "Be kind"},
                {"from": "user", "value": "Q"},
                {"from": "chatgpt", "value": "A"},
            ],
        },
    ]
    stats, kept, rejected = run(tmp_path, "sharegpt", json.dumps(rows, indent=1), max_reject_fraction=0.9)
    assert [r["source_id"] for r in kept] == ["a", "g"]
    assert queries(kept[0]) == ["Hi?", "More?"]
    assert [t["role"] for t in kept[1]["turns"]] == ["system", "user", "assistant"]
    assert {r["reason"] for r in rejected} == {
        "empty_conversation",
        "unknown_role",
        "no_query",
        "empty_turn",
        "duplicate",
    }
    assert stats["rows_read"] == 7 == stats["kept"] + stats["rejected"]
    assert stats["multi_turn_records"] == 1


def test_sharegpt_truncated_array_and_gzip(tmp_path):
    rows = [{"id": str(i), "conversations": [{"from": "human", "value": f"q{i}"}]} for i in range(3)]
    text = json.dumps(rows, indent=2)
    cut = text[: text.rindex('"q2"') + 2]  # breaks off inside the last record, no closing bracket
    src = tmp_path / "cut.json.gz"
    src.write_bytes(gzip.compress(cut.encode()))
    stats = ingest("sg", src, "sharegpt", tmp_path / "o.jsonl", tmp_path / "r.jsonl")
    assert stats["kept"] == 2 and stats["rejected_by_reason"] == {"truncated_json": 1}
    (rej,) = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert rej["line"] == text[: text.index('"2"')].count("\n")  # the line the broken record starts on


def test_json_array_line_numbers(tmp_path):
    rows = [{"instruction": f"do {i}", "input": "", "output": "ok"} for i in range(3)]
    _, kept, _ = run(tmp_path, "alpaca", json.dumps(rows, indent=2))
    text = json.dumps(rows, indent=2).splitlines()
    for rec in kept:
        assert text[rec["source_line"] - 1].strip() == "{"
        assert json.dumps(rows[0], indent=2)  # sanity


def test_alpaca_input_history_and_empty_output(tmp_path):
    rows = [
        {"instruction": "Translate", "input": "Bonjour", "output": "Hello"},
        {"instruction": "Continue", "input": "", "output": "Done", "history": [["first q", "first a"]]},
        {"instruction": "Chart this", "input": "", "output": ""},
        {"instruction": 5, "input": "", "output": "x"},
        {"input": "", "output": "x"},
    ]
    stats, kept, rejected = run(tmp_path, "alpaca", json.dumps(rows), max_reject_fraction=0.9)
    assert queries(kept[0]) == ["Translate\n\nBonjour"]
    assert queries(kept[1]) == ["first q", "Continue"]
    assert [r["reason"] for r in rejected] == ["empty_turn", "bad_field", "missing_field"]
    assert "instruction" in rejected[2]["detail"]


def test_dolly_original_keys(tmp_path):
    rows = [{"instruction": "Who?", "context": "Some text", "response": "Him", "category": "closed_qa"}]
    _, kept, _ = run(tmp_path, "dolly", "\n".join(map(json.dumps, rows)))
    assert queries(kept[0]) == ["Who?\n\nSome text"]


def test_qa_jsonl_fields_and_invalid_line(tmp_path):
    lines = [json.dumps({"problem": "1+1?", "solution": "2", "idx": 7}), "{not json", json.dumps({"problem": "2+2?"})]
    stats, kept, rejected = run(
        tmp_path,
        "qa",
        "\n".join(lines),
        fields={"query": "problem", "response": "solution", "id": "idx"},
        max_reject_fraction=0.9,
    )
    assert kept[0]["source_id"] == "7" and kept[0]["source_line"] == 1
    assert [(r["line"], r["reason"]) for r in rejected] == [(2, "invalid_json"), (3, "missing_field")]


def test_query_only(tmp_path):
    lines = [json.dumps({"class": " Vicuna ", "data": "Write a poem."})]
    _, kept, _ = run(tmp_path, "query", "[" + ",".join(lines) + "]", fields={"query": "data"})
    assert kept[0]["turns"] == [{"role": "user", "content": "Write a poem."}]


def test_flan_tsv_no_quoting_and_literal_newlines(tmp_path):
    text = '"Quoted" claim\\nOptions:\\n- yes\\n- no\tyes\tBecause.\nbad line with two\tfields\n'
    stats, kept, rejected = run(tmp_path, "flan_tsv", text, max_reject_fraction=0.9)
    assert queries(kept[0]) == ['"Quoted" claim\nOptions:\n- yes\n- no']
    assert kept[0]["turns"][1]["content"] == "Because. So the answer is yes."
    assert rejected[0]["reason"] == "bad_columns" and rejected[0]["line"] == 2


def test_oasst_tree_best_ranked_path_and_deleted(tmp_path):
    tree = {
        "message_tree_id": "t1",
        "prompt": {
            "role": "prompter",
            "text": "Q",
            "deleted": False,
            "replies": [
                {"role": "assistant", "text": "worse", "rank": 1, "replies": []},
                {
                    "role": "assistant",
                    "text": "best",
                    "rank": 0,
                    "deleted": False,
                    "replies": [{"role": "prompter", "text": "follow-up", "replies": []}],
                },
                {"role": "assistant", "text": "gone", "rank": None, "deleted": True, "replies": []},
            ],
        },
    }
    lone = {"message_tree_id": "t2", "prompt": {"role": "prompter", "text": "Alone", "replies": []}}
    deleted = {"message_tree_id": "t3", "prompt": {"role": "prompter", "text": "x", "deleted": True}}
    stats, kept, rejected = run(
        tmp_path, "oasst_tree", "\n".join(map(json.dumps, [tree, lone, deleted])), max_reject_fraction=0.9
    )
    assert [t["content"] for t in kept[0]["turns"]] == ["Q", "best", "follow-up"]
    assert queries(kept[1]) == ["Alone"]
    assert rejected[0]["reason"] == "deleted"


def test_query_too_long(tmp_path):
    rows = [{"instruction": "x" * 50, "input": "", "output": "y"}, {"instruction": "ok", "input": "", "output": "y"}]
    stats, kept, rejected = run(tmp_path, "alpaca", json.dumps(rows), max_query_chars=20, max_reject_fraction=0.9)
    assert len(kept) == 1 and rejected[0]["reason"] == "query_too_long"


def test_mostly_bad_dataset_fails_loudly(tmp_path):
    rows = [{"instruction": "", "input": "", "output": ""}] * 3 + [{"instruction": "ok", "input": "", "output": "y"}]
    with pytest.raises(InputError, match=r"3 of 4 rows rejected"):
        run(tmp_path, "alpaca", json.dumps(rows))


def test_empty_file_fails(tmp_path):
    with pytest.raises(InputError, match="no records"):
        run(tmp_path, "qa", "")


def test_limit_is_seeded_and_order_independent(tmp_path):
    rows = [{"instruction": f"task {i}", "input": "", "output": "y"} for i in range(50)]
    _, a, _ = run(tmp_path, "alpaca", json.dumps(rows), limit=10, seed=1)
    _, b, _ = run(tmp_path, "alpaca", json.dumps(rows[::-1]), limit=10, seed=1)
    _, c, _ = run(tmp_path, "alpaca", json.dumps(rows), limit=10, seed=2)
    assert len(a) == 10 and {r["id"] for r in a} == {r["id"] for r in b} != {r["id"] for r in c}
    assert [r["source_line"] for r in a] == sorted(r["source_line"] for r in a)


def test_record_id_is_stable_and_dataset_scoped():
    turns = [{"role": "user", "content": "q"}]
    assert record_id("a", turns) == record_id("a", [dict(t) for t in turns]) != record_id("b", turns)


def test_unknown_format_named(tmp_path):
    (tmp_path / "x.json").write_text("[]")
    with pytest.raises(InputError, match="unknown format 'csv'"):
        ingest("x", tmp_path / "x.json", "csv", tmp_path / "o", tmp_path / "r")


def test_summarize_columns(tmp_path):
    paths = []
    for name, reasons in [("a", {"duplicate": 2}), ("b", {"empty_turn": 1})]:
        src = tmp_path / f"{name}.json"
        src.write_text(json.dumps([{"instruction": "q", "input": "", "output": "y"}]))
        p = tmp_path / f"{name}.stats.json"
        ingest(name, src, "alpaca", tmp_path / f"{name}.jsonl", tmp_path / f"{name}.rej", p)
        d = json.loads(p.read_text())
        d["rejected_by_reason"] = reasons
        p.write_text(json.dumps(d))
        paths.append(p)
    summarize(paths, tmp_path / "t.tsv")
    rows = read_tsv(tmp_path / "t.tsv")
    assert rows[0]["rejected_duplicate"] == "2" and rows[0]["rejected_empty_turn"] == "0"
    assert list(rows[0])[:3] == ["dataset", "format", "rows_read"]


def test_every_format_has_a_reader():
    assert set(READERS) == {"sharegpt", "alpaca", "dolly", "qa", "query", "flan_tsv", "oasst_tree"}
