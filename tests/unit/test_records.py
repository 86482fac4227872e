"""The hand-off formats (instag.records) and the derived command line (instag.cli_args)."""

from __future__ import annotations

import argparse
import json

import pytest

from instag import records
from instag.cli_args import add_command, optional, parse_bool
from instag.errors import InputError


@pytest.mark.parametrize(
    ("text", "visible"),
    [
        ("\u200b\u200d\u2060", False),  # zero-width space, joiner, word joiner
        ("\ufeff\u200e\u200f", False),  # byte-order mark, direction marks
        ("\x00\x00", False),
        (" \u00a0\u2063\n\t", False),
        ("", False),
        ("a\u200b", True),
        ("\x00x", True),
        ("日本", True),
        ("🙂", True),
    ],
)
def test_visible_text(text, visible):
    assert records.has_visible_text(text) is visible


def test_reader_names_file_and_line(tmp_path):
    path = tmp_path / "n.jsonl"
    path.write_text('{"id": "a", "dataset": "d", "tags": ["x"]}\n\n{"id": "b", "dataset": "d", "tags": [1]}\n')
    with pytest.raises(InputError, match=r"n\.jsonl:3: not a normalized record line: 'tags' is not a list of strings"):
        list(records.NORMALIZED.read(path))
    path.write_text('{"id": "a", "dataset": "d"}\n')
    with pytest.raises(InputError, match=r"n\.jsonl:1: not a pool item line: has no 'tags' \(keys: id, dataset\)"):
        list(records.POOL_ITEM.read(path))
    path.write_text("[1, 2]\n")
    with pytest.raises(InputError, match=r":1: not a sample line: expected a JSON object, got list"):
        list(records.SAMPLE.read(path))


def test_writer_refuses_a_bad_row_and_leaves_no_file(tmp_path):
    path = tmp_path / "s.jsonl"
    good = {"id": "a", "dataset": "d", "tags": ["x"]}
    with pytest.raises(InputError, match=r"s\.jsonl:2: refusing to write a bad sample line: 'id' is int"):
        records.SAMPLE.write(path, [good, {"id": 3, "dataset": "d", "tags": []}])
    assert not path.exists()
    assert records.SAMPLE.write(path, [good, good]) == 2
    assert [json.loads(x) for x in path.read_text().splitlines()] == [good, good]


def test_tag_line_turn_and_status():
    line = {"id": "a", "dataset": "d", "turn": 0, "tags": [{"tag": "x", "explanation": "y"}], "status": "ok"}
    assert records.TAG_LINE.problem(line) is None
    assert "status 'ok' with no 'tags' list" in records.TAG_LINE.problem({**line, "tags": None})
    assert records.TAG_LINE.problem({**line, "tags": None, "status": "failed", "error": "boom"}) is None
    assert "query index >= 0" in records.TAG_LINE.problem({**line, "turn": -1})
    assert "'turn' is bool" in records.TAG_LINE.problem({**line, "turn": True})


def test_record_turns_are_checked():
    rec = {"id": "a", "dataset": "d", "turns": [{"role": "user", "content": "hi"}]}
    assert records.RECORD.problem(rec) is None
    assert "turn 0 is not" in records.RECORD.problem({**rec, "turns": [{"role": "user"}]})
    assert records.queries({**rec, "turns": [*rec["turns"], {"role": "assistant", "content": "yo"}]}) == ["hi"]


def _lines(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


HEAD = {"kind": "header", "model": "m"}
ANSWER = {"question_id": 81, "answer_id": "a", "model_id": "m", "choices": [{"index": 0, "turns": ["x", "y"]}]}
JUDGMENT = {"question_id": 81, "model": "m", "judge": ["j", "single-v1"], "score": 5.0, "turn": 1}


def test_answer_file_has_a_header_and_names_a_bad_line(tmp_path):
    path = _lines(tmp_path / "a.jsonl", [HEAD, ANSWER, {**ANSWER, "choices": [{"turns": [1]}]}])
    with pytest.raises(
        InputError, match=r"a\.jsonl:3: not an answer line: choices\[0\]\.turns is not a list of strings"
    ):
        records.ANSWER.read_headed(path)
    _lines(path, [HEAD, ANSWER, {"question_id": "81", "choices": []}])
    with pytest.raises(InputError, match=r"a\.jsonl:3: not an answer line: 'question_id' is str"):
        records.ANSWER.read_headed(path)
    _lines(path, [ANSWER])  # FastChat's own answer files (reference answers) have no header
    assert records.ANSWER.read_headed(path) == (None, [ANSWER])
    with pytest.raises(InputError, match=r"a\.jsonl: no header line"):
        records.ANSWER.read_headed(path, need_header=True)
    _lines(path, [{**HEAD, "model": None}, ANSWER])
    with pytest.raises(InputError, match=r"a\.jsonl:1: not a header line: 'model' is NoneType"):
        records.ANSWER.read_headed(path)


def test_headed_writer_writes_the_header_first_and_counts_it_in_line_numbers(tmp_path):
    path = tmp_path / "j.jsonl"
    assert records.JUDGMENT.write(path, [JUDGMENT, {**JUDGMENT, "turn": 2}], header=HEAD) == 2
    assert records.JUDGMENT.read_headed(path, need_header=True) == (HEAD, [JUDGMENT, {**JUDGMENT, "turn": 2}])
    assert path.read_text().splitlines()[0] == '{"kind":"header","model":"m"}'
    with pytest.raises(InputError, match=r"j\.jsonl:3: refusing to write a bad judgment line: 'score' is str"):
        records.JUDGMENT.write(path, [JUDGMENT, {**JUDGMENT, "score": "5"}], header=HEAD)
    with pytest.raises(InputError, match=r"j\.jsonl:1: refusing to write a bad judgment header: 'kind' is 'x'"):
        records.JUDGMENT.write(path, [JUDGMENT], header={**HEAD, "kind": "x"})
    with pytest.raises(InputError, match="this format has no header"):
        records.SAMPLE.write(tmp_path / "s.jsonl", [], header=HEAD)


def test_judgment_lines_take_fastchat_scores_and_turns():
    assert records.JUDGMENT.problem({**JUDGMENT, "score": -1, "tstamp": 0.0}) is None  # FastChat's failure
    assert records.JUDGMENT.problem({**JUDGMENT, "score": None}) is None  # ours
    assert "'score' is bool" in records.JUDGMENT.problem({**JUDGMENT, "score": True})
    assert "1 or more" in records.JUDGMENT.problem({**JUDGMENT, "turn": 0})


def test_prediction_and_split_lines_name_file_and_line(tmp_path):
    pred = {
        "id": "r#0",
        "dataset": "d",
        "turn": 0,
        "tags": [{"tag": "x"}],
        "status": "ok",
        "backend": "b",
        "model": "m",
    }
    path = _lines(tmp_path / "p.jsonl", [pred, {**pred, "tags": None}])
    with pytest.raises(InputError, match=r"p\.jsonl:2: not a prediction line: status 'ok' with no 'tags' list"):
        list(records.PREDICTION.rows(path))
    _lines(path, [pred, {**pred, "model": 3}])
    with pytest.raises(InputError, match=r"p\.jsonl:2: not a prediction line: 'model' is int"):
        list(records.PREDICTION.rows(path))
    line = {"id": "r#0", "record_id": "r", "dataset": "d", "turn": 0, "query": "q", "tags": [], "gold": ["x"]}
    path = _lines(tmp_path / "t.jsonl", [line, {**line, "gold": [{"tag": "x"}]}])
    with pytest.raises(InputError, match=r"t\.jsonl:2: not an InsTagger split line: 'gold' is not a list of strings"):
        list(records.SPLIT_LINE.rows(path))


def _demo(
    path: str,
    items: list[str],
    size: int = 3,
    ratio: float | None = None,
    scale: bool = True,
    spec: dict | None = None,
    names: list[str] = (),  # type: ignore[assignment]
) -> dict:
    """Demo action.

    Args:
        path: a file
        items: several files
        size: how many
        ratio: a share, or none
        scale: whether to scale
        spec: a JSON object
        names: names
    """
    return {"path": path, "items": items, "size": size, "ratio": ratio, "scale": scale, "spec": spec, "names": names}


def test_options_derived_from_signature_and_docstring(capsys):
    parser = argparse.ArgumentParser()
    add_command(parser.add_subparsers(dest="action"), "demo", _demo, positional=("items",), flags={"path": "--in"})
    args = parser.parse_args(["demo", "a", "b", "--in", "p", "--ratio", "None", "--scale", "false", "--spec", "{}"])
    assert args.func(args) == {
        "path": "p",
        "items": ["a", "b"],
        "size": 3,
        "ratio": None,
        "scale": False,
        "spec": {},
        "names": (),
    }
    args = parser.parse_args(["demo", "a", "--in", "p", "--ratio", "0.5", "--size", "4", "--names", "x", "y"])
    assert args.func(args)["ratio"] == 0.5 and args.size == 4 and args.names == ["x", "y"]
    with pytest.raises(SystemExit):
        parser.parse_args(["demo", "a"])  # --in is required: it has no default
    with pytest.raises(SystemExit):
        parser.parse_args(["demo", "a", "--in", "p", "--spec", "[1]"])  # a JSON object is expected
    capsys.readouterr()
    with pytest.raises(SystemExit):
        parser.parse_args(["demo", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "how many (default: 3)" in out and "whether to scale (default: true)" in out and "Demo action." in out


def test_value_parsers():
    assert optional(int)("null") is None and optional(int)("7") == 7
    assert parse_bool("True") is True and parse_bool("0") is False
    with pytest.raises(argparse.ArgumentTypeError):
        parse_bool("maybe")
