"""The bad-input corpus (tests/data/bad/): every broken row gets a named error or a counted quarantine record.

Each file in the corpus is one kind of real-world breakage (see tests/data/bad/README.md). For files that
still hold usable rows, ingestion must account for every source row exactly once: ``rows_read == kept +
rejected``, every rejected row is in ``<dataset>.rejected.jsonl`` with its line and reason, and the lines of
kept and rejected rows together are exactly the rows of the file. For files that cannot be read at all,
ingestion raises :class:`InputError` naming the file and, where the fault has one, the line.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from instag import cli
from instag.data import ingest, queries
from instag.errors import InputError

BAD = Path(__file__).resolve().parents[1] / "data" / "bad"
QUERY_FIELDS = {"query": "Instruction", "id": "idx"}


def case(file, fmt, rows, rejected, fields=None, **kw):
    """A quarantine case: ``rejected`` maps source line -> reason (or a tuple of acceptable reasons)."""
    return pytest.param(file, fmt, rows, rejected, fields or {}, kw, id=file)


# file, format, rows in the file, {line: reason} expected in the quarantine file
QUARANTINE_CASES = [
    case("invalid_json_line.jsonl", "qa", 5, {2: "invalid_json", 4: "invalid_json"}),
    case("latin1.jsonl", "qa", 3, {2: "encoding"}),
    case("missing_fields.jsonl", "qa", 6, {2: "missing_field", 3: "missing_field", 4: "missing_field"}),
    case(
        "empty_queries.jsonl",
        "qa",
        7,
        {1: "empty_turn", 2: "empty_turn", 3: "empty_turn", 4: "bad_field", 5: "empty_turn"},
    ),
    case("huge_query.jsonl.gz", "query", 2, {1: "query_too_long"}, QUERY_FIELDS),
    case("unknown_roles.json", "sharegpt", 5, {3: "unknown_role", 4: "unknown_role", 5: "bad_field"}),
    case("duplicates.json", "sharegpt", 5, {4: "duplicate", 5: "duplicate"}),
    case("prompt_injection.jsonl", "query", 7, {}, QUERY_FIELDS),
    case("truncated_array.json", "sharegpt", 3, {4: "truncated_json"}),
    case("non_object_rows.json", "alpaca", 7, {n: "not_an_object" for n in (3, 4, 5, 6, 7)}),
    case("wrong_columns.tsv", "flan_tsv", 7, {2: "bad_columns", 3: "bad_columns", 5: "bad_columns"}),
    case("bom.jsonl", "qa", 2, {}),
    case("bom_array.json", "alpaca", 2, {}),
    case("oasst_deleted_root.jsonl", "oasst_tree", 5, {1: "deleted", 3: "missing_field", 5: "unknown_role"}),
    case("bad_history.json", "alpaca", 7, {3: "bad_field", 4: "bad_field", 5: "bad_field", 6: "bad_field"}),
    case(
        "sharegpt_irregular.json",
        "sharegpt",
        8,
        {2: "empty_conversation", 3: "no_query", 4: "missing_field", 5: "bad_field", 6: "bad_field", 7: "empty_turn"},
    ),
    case("lone_surrogate.jsonl", "qa", 3, {2: ("encoding", "invalid_json")}),
    case("deep_nesting.jsonl", "qa", 3, {2: ("invalid_json", "too_deep")}),
    case("crlf.jsonl", "qa", 2, {}),
    # JSON lines of one line: a record (here without the fields), not a wrapper (top_level_object.json is)
    case("top_level_object.jsonl", "qa", 1, {1: "missing_field"}),
    case(
        "invisible_queries.jsonl",
        "qa",
        6,
        {n: "no_visible_text" for n in (1, 2, 3, 4)},
        {"query": "problem", "response": "solution"},
    ),
]

# file, format, a text the error message must contain, the line it must name (None: no line, or any)
ERROR_CASES = [
    pytest.param("latin1_array.json", "alpaca", "UTF-8", 4, id="latin1_array.json"),
    pytest.param("empty.jsonl", "qa", "no records", None, id="empty.jsonl"),
    pytest.param("whitespace_only.jsonl", "qa", "no records", None, id="whitespace_only.jsonl"),
    pytest.param("empty_array.json", "alpaca", "no records", None, id="empty_array.json"),
    pytest.param("all_bad.jsonl", "qa", "5 of 5 rows rejected", None, id="all_bad.jsonl"),
    pytest.param(
        "top_level_object_pretty.json",
        "alpaca",
        "top level is a JSON object (keys: version, data); expected a list of records",
        None,
        id="top_level_object_pretty.json",
    ),
    pytest.param(
        "top_level_object.json",
        "qa",
        "top level is a JSON object (keys: data); expected a list of records",
        None,
        id="top_level_object.json",
    ),
    pytest.param(
        "top_level_object_alpaca.json",
        "alpaca",
        "top level is a JSON object (keys: version, data); expected a list of records",
        None,
        id="top_level_object_alpaca.json",
    ),
]

#: corpus files covered by tests other than the two tables above
OTHER_FILES = {"truncated_gzip.jsonl.gz", "tagger_outputs.jsonl", "README.md"}


def _ingest(tmp_path, file, fmt, fields, **kw):
    out, rej, stats = tmp_path / "out.jsonl", tmp_path / "out.rejected.jsonl", tmp_path / "out.stats.json"
    kw.setdefault("max_reject_fraction", 1.0)
    summary = ingest("bad", BAD / file, fmt, out, rej, stats, fields=fields, **kw)
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    rejected = [json.loads(line) for line in rej.read_text(encoding="utf-8").splitlines()]
    return summary, records, rejected


def test_corpus_has_at_least_15_kinds_and_every_file_is_tested():
    files = {p.name for p in BAD.iterdir()}
    tested = {p.values[0] for p in QUARANTINE_CASES + ERROR_CASES} | OTHER_FILES
    assert files - tested == set(), "corpus files without a test case"
    assert tested - files <= {"tagger_outputs.jsonl"}, "test cases without a corpus file"
    assert len(files - {"README.md"}) >= 15


@pytest.mark.parametrize(("file", "fmt", "rows", "expected", "fields", "kw"), QUARANTINE_CASES)
def test_every_row_is_kept_or_quarantined_with_its_line(tmp_path, file, fmt, rows, expected, fields, kw):
    summary, records, rejected = _ingest(tmp_path, file, fmt, fields, **kw)

    # counts add up, and the quarantine file holds every rejected row
    assert summary["rows_read"] == rows
    assert summary["rows_read"] == summary["kept"] + summary["rejected"]
    assert summary["selected"] == len(records) == summary["kept"]
    assert len(rejected) == summary["rejected"]
    assert summary["rejected_by_reason"] == dict(Counter(r["reason"] for r in rejected))

    # each rejected row: its line, a reason, a detail, and where the row had text, the start of it
    got = {r["line"]: r["reason"] for r in rejected}
    assert len(got) == len(rejected), "two quarantine records for one line"
    assert set(got) == set(expected), f"rejected lines {sorted(got)} != expected {sorted(expected)}: {rejected}"
    for line, reason in got.items():
        allowed = expected[line] if isinstance(expected[line], tuple) else (expected[line],)
        assert reason in allowed, f"line {line}: reason {reason!r}, expected one of {allowed}"
    for r in rejected:
        assert r["dataset"] == "bad" and r["detail"], r
        assert len(r["raw"]) <= 2000, "quarantine keeps only the start of a row"

    # kept and rejected lines together are every row, once
    kept_lines = [rec["source_line"] for rec in records]
    assert len(set(kept_lines)) == len(kept_lines)
    assert not set(kept_lines) & set(got)
    assert len(kept_lines) + len(got) == rows


def test_huge_query_is_quarantined_without_copying_a_megabyte(tmp_path):
    summary, records, rejected = _ingest(tmp_path, "huge_query.jsonl.gz", "query", QUERY_FIELDS)
    assert "1048576 characters" in rejected[0]["detail"]
    assert len(rejected[0]["raw"]) <= 2000
    assert [queries(r) for r in records] == [["A short query."]]
    # with the limit raised, the same query is kept whole
    summary, records, _ = _ingest(tmp_path, "huge_query.jsonl.gz", "query", QUERY_FIELDS, max_query_chars=1 << 21)
    assert summary["kept"] == 2 and max(len(queries(r)[0]) for r in records) == 1 << 20


def test_duplicates_keep_first_and_name_it(tmp_path):
    _, records, rejected = _ingest(tmp_path, "duplicates.json", "sharegpt", {})
    # same source id with different content: both kept, told apart by their content-derived record ids
    assert [r["source_id"] for r in records] == ["d1", "d1", "d3"]
    assert len({r["id"] for r in records}) == 3
    assert all(r["detail"] == "same content as line 2" for r in rejected)


def test_prompt_injection_is_kept_verbatim(tmp_path):
    _, records, _ = _ingest(tmp_path, "prompt_injection.jsonl", "query", QUERY_FIELDS)
    source = [json.loads(line)["Instruction"] for line in (BAD / "prompt_injection.jsonl").read_text().splitlines()]
    assert [queries(r)[0] for r in records] == source


def test_oasst_deleted_reply_is_skipped_and_lone_prompt_kept(tmp_path):
    _, records, _ = _ingest(tmp_path, "oasst_deleted_root.jsonl", "oasst_tree", {})
    by_tree = {r["source_id"]: [t["content"] for t in r["turns"]] for r in records}
    assert by_tree == {
        "tree-2": ["Root with a deleted best reply", "kept second reply"],
        "tree-4": ["A lone prompt with no reply"],
    }


def test_bom_and_crlf_do_not_leak_into_text(tmp_path):
    for file, fmt in [("bom.jsonl", "qa"), ("bom_array.json", "alpaca"), ("crlf.jsonl", "qa")]:
        _, records, _ = _ingest(tmp_path, file, fmt, {})
        for rec in records:
            for turn in rec["turns"]:
                assert "\ufeff" not in turn["content"] and "\r" not in turn["content"], (file, turn)


@pytest.mark.parametrize(("file", "fmt", "text", "line"), ERROR_CASES)
def test_unreadable_files_raise_a_named_error(tmp_path, file, fmt, text, line):
    with pytest.raises(InputError) as info:
        ingest("bad", BAD / file, fmt, tmp_path / "o.jsonl", tmp_path / "o.rejected.jsonl")
    err = info.value
    assert err.path.endswith(file) and file in str(err)
    assert text in str(err)
    if line is not None:
        assert err.line == line, f"error names line {err.line}, the fault is on line {line}: {err}"
    assert not (tmp_path / "o.jsonl").exists(), "no output that looks complete after a failed ingest"


def test_all_bad_rows_are_still_in_quarantine_after_the_error(tmp_path):
    rej = tmp_path / "o.rejected.jsonl"
    with pytest.raises(InputError, match=str(rej)):
        ingest("bad", BAD / "all_bad.jsonl", "qa", tmp_path / "o.jsonl", rej)
    rejected = [json.loads(line) for line in rej.read_text().splitlines()]
    assert [r["line"] for r in rejected] == [1, 2, 3, 4, 5]
    assert {r["reason"] for r in rejected} == {
        "invalid_json",
        "empty_turn",
        "missing_field",
        "not_an_object",
        "bad_field",
    }


def test_truncated_gzip_is_named_or_counted(tmp_path):
    """A gzip stream cut off mid-way: a named InputError, or the readable rows kept and the tail quarantined."""
    try:
        summary, records, rejected = _ingest(tmp_path, "truncated_gzip.jsonl.gz", "qa", {})
    except InputError as exc:
        assert "truncated_gzip.jsonl.gz" in str(exc)
        return
    assert summary["rows_read"] == summary["kept"] + summary["rejected"]
    assert any("trunc" in r["reason"] or "gzip" in r["reason"] for r in rejected), rejected


def test_cli_reports_bad_input_with_exit_status_2(tmp_path, capsys):
    argv = [
        "data",
        "ingest",
        "--dataset",
        "bad",
        "--format",
        "qa",
        "--out",
        str(tmp_path / "o.jsonl"),
        "--rejected",
        str(tmp_path / "r.jsonl"),
    ]
    assert cli.main([*argv, "--path", str(BAD / "all_bad.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "all_bad.jsonl" in err and "rows rejected" in err
    assert cli.main([*argv, "--path", str(BAD / "empty.jsonl")]) == 2
    assert "empty.jsonl" in capsys.readouterr().err


def test_reject_threshold_is_a_named_error_not_a_silent_pass(tmp_path):
    # 2 of 5 rows bad: passes at 0.5, fails at 0.3 naming the file and the counts
    ingest("bad", BAD / "invalid_json_line.jsonl", "qa", tmp_path / "a.jsonl", tmp_path / "a.rej.jsonl")
    with pytest.raises(InputError, match=r"invalid_json_line\.jsonl.*2 of 5 rows rejected"):
        ingest(
            "bad",
            BAD / "invalid_json_line.jsonl",
            "qa",
            tmp_path / "b.jsonl",
            tmp_path / "b.rej.jsonl",
            max_reject_fraction=0.3,
        )


def _injection_queries() -> list[str]:
    return [json.loads(line)["Instruction"] for line in (BAD / "prompt_injection.jsonl").read_text().splitlines()]


def test_judge_prompts_carry_injected_queries_verbatim():
    """A query that contains the judge templates' own placeholders ({tags}, {instruction}, ...) is data: it
    appears in the rendered prompt exactly as written, and the template's fields are filled once each."""
    quality = pytest.importorskip("instag.quality", reason="the quality stage is not there yet")
    precision, consistency = (quality.template(k) for k in ("precision", "consistency"))
    tags = ["translation", "pwned"]
    for q in _injection_queries():
        prompt = quality.render_precision(precision, q, tags, 10_000)
        assert q.strip() in prompt, f"the query was altered in the precision prompt: {q!r}"
        assert prompt.count(json.dumps(tags)) == 1, f"the tag list was pasted into the query: {q!r}"
        prompt = quality.render_consistency(consistency, "translation", [q, "Say hi."], 10_000)
        assert q.strip() in prompt, f"the query was altered in the consistency prompt: {q!r}"


def test_tagging_prompt_carries_injected_queries_as_data():
    """The query fills the template's one slot, inside its [begin]/[end] block; the system message and the rest
    of the template are untouched, whatever the query says; a query cannot close the block itself."""
    tagging = pytest.importorskip("instag.tagging", reason="the tagging stage is not there yet")
    tagger = tagging.Tagger(tagging.TaggingSettings(backend={"backend": "scripted"}, cache_dir=None))
    template = tagger.template
    for q in _injection_queries():
        req = tagger.request(q, 0)
        assert [m["role"] for m in req.messages] == ["system", "user"]
        assert req.messages[0]["content"] == tagging.DEFAULT_SYSTEM
        prompt = req.messages[1]["content"]
        fenced = tagging.fence_query(q)
        assert prompt.count(fenced) == 1 and prompt.replace(fenced, tagging.PLACEHOLDER) == template, q
        # the only change to a query is its own [begin]/[end] markers, neutralised
        if "[end]" not in q.lower() and "[begin]" not in q.lower():
            assert fenced == q
        else:
            assert "[end]" not in fenced.lower() and "[begin]" not in fenced.lower()
            block = prompt.split("[begin]", 1)[1] if "[begin]" in template else prompt
            assert fenced in block


def test_tagger_output_corpus():
    """Model outputs with tags that are not strings, truncated JSON, prose, ...: a failure, or only clean tags."""
    tagging = pytest.importorskip("instag.tagging", reason="the tagging stage is not there yet")
    cases = [json.loads(line) for line in (BAD / "tagger_outputs.jsonl").read_text().splitlines()]
    assert len(cases) >= 20
    for c in cases:
        parsed = tagging.parse_tags(c["raw"])
        got = None if parsed.tags is None else [t["tag"] for t in parsed.tags]
        if parsed.tags is None:
            assert parsed.error, c["name"]
        else:
            assert all(isinstance(t["tag"], str) and t["tag"].strip() for t in parsed.tags), c["name"]
            assert all(isinstance(t["explanation"], str) for t in parsed.tags), c["name"]
        if c["expect"] == "invalid":
            assert got is None, f"{c['name']}: accepted {got}"
        elif c["expect"] == "valid":
            assert got == c["tags"], f"{c['name']}: {got}, {parsed.error}"
        elif c["expect"] == "invalid_or_valid_subset":
            assert got is None or got == c["tags"], f"{c['name']}: {got}"


def test_rejected_rows_outlive_a_failed_dataset(tmp_path):
    """A dataset that stops for too many rejected rows copies its quarantine where the error says."""
    out, rej, keep = tmp_path / "o.jsonl", tmp_path / "o.rejected.jsonl", tmp_path / "logs" / "o.rejected.jsonl"
    with pytest.raises(InputError, match="5 of 5 rows rejected") as err:
        ingest("bad", BAD / "all_bad.jsonl", "qa", out, rej, rejected_on_failure=keep)
    assert str(keep) in str(err.value)
    rej.unlink()  # what Snakemake does with a failed job's outputs
    assert len(keep.read_text(encoding="utf-8").splitlines()) == 5
