"""The distilled InsTagger as a tagger: train two steps on a handful of teacher answers with the shared trainer,
then tag queries with it through the tagging stage's own code, as `tagging.backend: {backend: instagger}`."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("transformers")
pytest.importorskip("fastchat")
pytest.importorskip("xgrammar")

from instag.instagger import conversations, train  # noqa: E402

pytestmark = pytest.mark.slow

QUERIES = [
    ("Write a haiku about autumn leaves.", [("Poetry", "writing a short poem"), ("Nature", "about autumn")]),
    ("Fix the bug in my Python loop that never ends.", [("Debugging", "finding an error"), ("Python", "code")]),
    ("What is 17 times 23?", [("Arithmetic", "multiplication")]),
    ("Translate 'good morning' into French.", [("Translation", "English to French")]),
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("instagger")
    rows = [
        {
            "id": f"t{i}#0",
            "query": q,
            "tags": [{"tag": t, "explanation": e} for t, e in tags],
            "gold": [t for t, _ in tags],
        }
        for i, (q, tags) in enumerate(QUERIES)
    ]
    (d / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    settings = {
        "max_length": 256,
        "global_batch": 2,
        "per_device_batch": 2,
        "max_steps": 2,
        "learning_rate": 1e-4,
        "save_steps": 100,
    }
    out = train(str(d / "train.jsonl"), str(d / "run"), settings, threads=2, seed=0)
    assert out["steps"] == 2
    return d / "run"


def test_inference_prompt_is_the_training_prompt(run_dir):
    """The backend renders a tagging request exactly as the trainer rendered the training sample up to its answer."""
    from instag.llm import get_backend
    from instag.train.template import TemplateParams, render

    run = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    params = TemplateParams.from_dict(run["rendering"])
    conv = conversations([{"id": "x", "query": QUERIES[0][0], "tags": [{"tag": "Poetry", "explanation": "e"}]}])[0]
    text, spans = render(conv, params)
    backend = get_backend({"backend": "instagger", "model": str(run_dir)})
    tagging_turn = f"Below is an instruction:\n[begin]\n{QUERIES[0][0]}\n[end]\nPlease provide tags."
    assert (
        backend.render([{"role": "system", "content": "ignored"}, {"role": "user", "content": tagging_turn}])
        == (text[: spans[0][0]])
    )
    assert backend.revision.startswith("dir:")


def test_distilled_model_tags_as_tagging_backend(run_dir, tmp_path):
    """A config's `tagging.backend: {backend: instagger, model: <run>}` tags queries with the default prompt."""
    from instag.tagging import tag_file

    src = tmp_path / "queries.jsonl"
    src.write_text(
        "".join(json.dumps({"id": f"q{i}", "query": q}) + "\n" for i, (q, _) in enumerate(QUERIES[:3])),
        encoding="utf-8",
    )
    settings = {
        "backend": {"backend": "instagger", "model": str(run_dir), "batch_size": 4},
        "prompt": "tagging_no_examples",
        "max_tokens": 256,
        "max_retries": 0,
        "cache_dir": str(tmp_path / "cache"),
    }
    summary = tag_file(src, tmp_path / "tags.jsonl", settings, threads=2)
    lines = [json.loads(x) for x in (tmp_path / "tags.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 3
    assert summary["ok"] == 3, [x.get("error") for x in lines]  # the grammar makes every answer a tag list
    assert all(x["backend"] == "instagger" and x["tags"] for x in lines)
    # a rerun answers from the cache
    again = tag_file(src, tmp_path / "tags2.jsonl", settings, threads=2)
    assert again["calls"] == 0
