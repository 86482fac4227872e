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
