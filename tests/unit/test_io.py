import gzip

import pytest

from instag.errors import InputError
from instag.io import JsonlBadLine, atomic_write, iter_jsonl, read_tsv, write_tsv


def test_iter_jsonl_strict_names_line(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"a": 1}\n\n{bad\n')
    with pytest.raises(InputError, match=r"x.jsonl:3: invalid JSON"):
        list(iter_jsonl(p))


def test_iter_jsonl_lenient_keeps_bad_lines_and_reads_gzip(tmp_path):
    p = tmp_path / "x.jsonl.gz"
    p.write_bytes(gzip.compress(b'{"a": 1}\n\xff\xfe\n[1]\n'))
    rows = list(iter_jsonl(p, strict=False))
    assert rows[0] == (1, {"a": 1}) and rows[2] == (3, [1])
    assert isinstance(rows[1][1], JsonlBadLine) and rows[1][1].reason == "encoding"


def test_atomic_write_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic_write(target) as fh:
            fh.write("partial")
            raise RuntimeError("killed")
    assert not target.exists() and not list(tmp_path.iterdir())


def test_tsv_roundtrip(tmp_path):
    write_tsv(tmp_path / "t.tsv", [{"a": 1, "b": "x\ty"}, {"a": 0.5}])
    assert read_tsv(tmp_path / "t.tsv") == [{"a": "1", "b": "x y"}, {"a": "0.5", "b": ""}]
