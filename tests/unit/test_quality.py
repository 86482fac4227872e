"""Tag quality evaluation with a scripted judge: sampling, prompts, parsing, failures, caching, the table."""

import json

import pytest

from instag import quality
from instag.errors import InputError
from instag.io import iter_jsonl, read_tsv
from instag.llm.base import ChatResponse
from instag.llm.scripted import ScriptedBackend


class PaidScripted(ScriptedBackend):
    """Billed per token, like an API (a spend cap then needs a price)."""

    paid = True


def _data_record(rid, texts):
    turns = []
    for t in texts:
        turns += [{"role": "user", "content": t}, {"role": "assistant", "content": "ok"}]
    return {"id": rid, "dataset": "d", "source_line": 1, "source_id": None, "turns": turns}


@pytest.fixture
def files(tmp_path):
    data = [
        _data_record("r1", ["Write a Python function to sort a list."]),
        _data_record("r2", ["Fix this Python bug.", "Now add tests."]),
        _data_record("r3", ["Write a poem about the sea."]),
        _data_record("r4", ["Translate 'hello' to French."]),
        _data_record("r5", ["Tell me a story."]),
    ]
    norm = [
        {"id": "r1", "dataset": "d", "tags": ["coding", "python"], "queries": [["coding", "python"]], "status": "ok"},
        {
            "id": "r2",
            "dataset": "d",
            "tags": ["coding", "python", "testing"],
            "queries": [["coding", "python"], ["testing"]],
            "status": "ok",
        },
        {"id": "r3", "dataset": "d", "tags": ["poetry"], "queries": [["poetry"]], "status": "ok"},
        {"id": "r4", "dataset": "d", "tags": [], "queries": [[]], "status": "ok"},
        {"id": "r5", "dataset": "d", "tags": [], "queries": [None], "status": "untagged"},
    ]
    dpath, npath = tmp_path / "d.jsonl", tmp_path / "normalized.jsonl"
    dpath.write_text("".join(json.dumps(r) + "\n" for r in data))
    npath.write_text("".join(json.dumps(r) + "\n" for r in norm))
    return dpath, npath, norm


def test_sampling_uses_tagged_queries_and_tags_with_enough_instances(files):
    _, _, norm = files
    cases = quality.sample_cases(norm, n_precision=10, n_consistency=10, set_size=5, min_instances=2, seed=1)
    # 4 tagged queries with >= 1 tag: r1 q0, r2 q0, r2 q1, r3 q0 (r4 has no tag, r5 failed)
    assert cases["eligible"] == {"precision": 4, "consistency": 2}  # coding and python occur twice
    assert sorted((c["queries"][0]["id"], c["queries"][0]["turn"]) for c in cases["precision"]) == [
        ("r1", 0),
        ("r2", 0),
        ("r2", 1),
        ("r3", 0),
    ]
    assert sorted(c["tag"] for c in cases["consistency"]) == ["coding", "python"]
    assert all(len(c["queries"]) == 2 for c in cases["consistency"])  # fewer than set_size available
    again = quality.sample_cases(norm, n_precision=2, n_consistency=1, seed=1)
    assert again == quality.sample_cases(norm, n_precision=2, n_consistency=1, seed=1)


def test_parse_verdict_is_lenient_but_named():
    assert quality.parse_verdict('{"explanation": "fine", "verdict": "Yes"}') == ("yes", "fine", None)
    assert quality.parse_verdict('Sure! {"explanation": "x", "verdict": "no"} done')[0] == "no"
    assert quality.parse_verdict('{"verdict": "maybe"}')[2] == "verdict is 'maybe', not yes/no"
    assert quality.parse_verdict("no json")[2] == "no JSON object in the output"
    assert quality.parse_verdict("")[2] == "empty output"


def test_wilson_interval():
    lo, hi = quality.wilson(961, 1000)
    assert lo < 0.961 < hi and hi - lo < 0.03
    assert quality.wilson(0, 0)[0] != quality.wilson(0, 0)[0]  # NaN


def judge_fn(request):
    prompt = request.messages[-1]["content"]
    assert request.params.json_schema == quality.judge_schema()
    if 'The tag "python"' in prompt:
        return '{"explanation": "shifts", "verdict": "no"}'
    if "Tell me" in prompt or "poem" in prompt and "Tags:" in prompt:
        return "I cannot answer"  # unparseable: a counted failure
    if "Tags:" in prompt:
        return '{"explanation": "all fit", "verdict": "yes"}'
    return '{"explanation": "same", "verdict": "yes"}'


def test_evaluate_writes_judgments_and_rates(tmp_path, files):
    dpath, npath, _ = files
    backend = ScriptedBackend(fn=judge_fn)
    out, table = tmp_path / "j.jsonl", tmp_path / "q.tsv"
    summary = quality.evaluate(
        npath,
        [dpath],
        out,
        table,
        judge={"backend": "scripted"},
        cache_dir=tmp_path / "c",
        n_precision=10,
        n_consistency=10,
        seed=0,
        backend=backend,
    )
    lines = [x for _, x in iter_jsonl(out)]
    assert len(lines) == 6 and backend.n_calls == 6 + 2  # the unparseable verdict is asked again twice
    prec = [x for x in lines if x["kind"] == "precision"]
    failed = [x for x in prec if x["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["queries"] == [{"id": "r3", "turn": 0}]
    assert failed[0]["raw"] == "I cannot answer"
    assert failed[0]["error"] == "no JSON object in the output (after 3 attempts)" and failed[0]["attempts"] == 3
    # re-asks are new samples: repeat index 1, 2 at the retry temperature
    assert sorted((c.repeat, c.params.temperature) for c in backend.calls)[-2:] == [(1, 0.7), (2, 0.7)]
    rows = {r["metric"]: r for r in read_tsv(table)}
    assert rows["precision"]["cases"] == "4" and rows["precision"]["judged"] == "3" and rows["precision"]["rate"] == "1"
    assert rows["consistency"]["positive"] == "1" and float(rows["consistency"]["rate"]) == 0.5
    assert rows["precision"]["paper_gpt4"] == "0.961" and rows["precision"]["judge"] == "scripted:scripted"
    # the prompt carries the instruction text and the tags
    prompts = [c.messages[-1]["content"] for c in backend.calls]
    assert any("Fix this Python bug." in p and '["coding", "python"]' in p for p in prompts)
    assert summary["precision"]["failed"] == 1

    # a rerun is served from the cache (an unparseable answer is a completed call, and so are its re-asks:
    # no attempt is made again)
    again = ScriptedBackend(fn=judge_fn)
    quality.evaluate(
        npath,
        [dpath],
        out,
        table,
        judge={},
        cache_dir=tmp_path / "c",
        n_precision=10,
        n_consistency=10,
        seed=0,
        backend=again,
    )
    assert again.n_calls == 0
    # judgments lines do not say whether they came from the cache, so a resumed run writes the same file
    assert [x for _, x in iter_jsonl(out)] == lines


def test_failed_calls_are_kept_and_counted(tmp_path, files):
    dpath, npath, _ = files
    backend = ScriptedBackend(fn=lambda r: ChatResponse(text=None, error="timeout"))
    quality.evaluate(
        npath,
        [dpath],
        tmp_path / "j.jsonl",
        tmp_path / "q.tsv",
        judge={},
        cache_dir=tmp_path / "c",
        n_precision=2,
        n_consistency=0,
        backend=backend,
    )
    rows = read_tsv(tmp_path / "q.tsv")
    assert rows[0]["failed"] == "2" and rows[0]["rate"] == "nan"
    assert rows[1]["cases"] == "0" and rows[1]["note"] == "no case requested"
    assert [x["error"] for _, x in iter_jsonl(tmp_path / "j.jsonl")] == ["backend: timeout (after 3 attempts)"] * 2
    assert backend.n_calls == 2 * 3  # failed calls are asked again, never cached


def test_missing_query_text_is_named(tmp_path, files):
    _, npath, _ = files
    empty = tmp_path / "none.jsonl"
    empty.write_text("")
    with pytest.raises(InputError, match="is in no records file"):
        quality.evaluate(
            npath,
            [empty],
            tmp_path / "j.jsonl",
            tmp_path / "q.tsv",
            judge={},
            cache_dir=tmp_path / "c",
            n_precision=1,
            n_consistency=0,
            backend=ScriptedBackend(),
        )


def test_prompts_are_package_data():
    for kind in quality.KINDS:
        text = quality.template(kind)
        assert "verdict" in text
    assert quality.judge_schema()["properties"]["verdict"]["enum"] == ["yes", "no"]
    assert "$comment" not in quality.judge_schema()  # comments are not sent to the model
    p = quality.render_consistency(quality.template("consistency"), "math", ["a" * 50, "b"], 10)
    assert '"math"' in p and "[1] aaaaaaaaaa [...]" in p and "[2] b" in p


def test_judge_writes_cost_estimate_and_stops_at_the_spend_cap(tmp_path, files):
    from instag.llm.cost import SpendCapExceeded

    dpath, npath, _ = files
    prices = {"scripted": {"prompt": 1000.0, "completion": 1000.0}}  # USD per 1M tokens: dear on purpose
    backend = PaidScripted(fn=judge_fn)
    with pytest.raises(SpendCapExceeded):
        quality.evaluate(
            npath,
            [dpath],
            tmp_path / "j.jsonl",
            tmp_path / "t.tsv",
            judge={"backend": "scripted"},
            cache_dir=tmp_path / "c",
            n_precision=10,
            n_consistency=10,
            seed=0,
            backend=backend,
            spend_cap_usd=0.5,
            prices=prices,
            cost_estimate=tmp_path / "cost.tsv",
        )
    (row,) = read_tsv(tmp_path / "cost.tsv")
    assert row["stage"] == "quality" and row["requests"] == "6" and float(row["usd"]) > 0.5
    assert 0 < backend.n_calls < 6  # stopped before judging everything
    again = PaidScripted(fn=judge_fn)  # what was answered is in the cache: a rerun without cap pays the rest only
    quality.evaluate(
        npath,
        [dpath],
        tmp_path / "j.jsonl",
        tmp_path / "t.tsv",
        judge={"backend": "scripted"},
        cache_dir=tmp_path / "c",
        n_precision=10,
        n_consistency=10,
        seed=0,
        backend=again,
        prices=prices,
    )
    assert again.n_calls == 8 - backend.n_calls  # 6 cases, one of them asked 3 times


def test_judge_without_prices_leaves_the_cost_blank_unless_capped(tmp_path, files):
    from instag.errors import ConfigError

    dpath, npath, _ = files
    backend = PaidScripted(fn=judge_fn)  # a paid API, e.g. a self-hosted OpenAI-compatible server with no price list
    kw = dict(judge={"backend": "scripted"}, cache_dir=tmp_path / "c", n_precision=10, n_consistency=10, seed=0)
    with pytest.raises(ConfigError, match="prices"):
        quality.evaluate(
            npath,
            [dpath],
            tmp_path / "j.jsonl",
            tmp_path / "t.tsv",
            backend=backend,
            spend_cap_usd=1.0,
            cost_estimate=tmp_path / "cost.tsv",
            **kw,
        )
    assert backend.n_calls == 0
    quality.evaluate(
        npath,
        [dpath],
        tmp_path / "j.jsonl",
        tmp_path / "t.tsv",
        backend=backend,
        cost_estimate=tmp_path / "cost.tsv",
        **kw,
    )
    (row,) = read_tsv(tmp_path / "cost.tsv")
    assert row["usd"] == "" and int(row["prompt_tokens"]) > 0 and backend.n_calls == 8


def test_evaluate_defaults_are_the_schemas():
    """Every quality key the judge function takes has the function's default as its schema default."""
    import inspect

    import yaml

    from tests.conftest import REPO

    schema = yaml.safe_load((REPO / "schemas" / "config.schema.yaml").read_text())
    props = schema["properties"]["quality"]["properties"]
    params = inspect.signature(quality.evaluate).parameters
    shared = sorted(set(props) & set(params) - {"judge", "prices"})  # prices: None in code, {} in config
    assert {"n_precision", "n_consistency", "set_size", "max_tokens", "cache_dir", "spend_cap_usd"} <= set(shared)
    for key in shared:
        assert props[key]["default"] == params[key].default, f"quality.{key}"
