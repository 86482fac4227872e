"""The report package: claims, figures, planning, provenance, the explorer's data. No Snakemake, no browser."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import yaml

from instag.io import read_tsv, write_tsv
from instag.report import claims as claims_mod
from instag.report import explorer, figures, plan, provenance, style
from tests.conftest import REPO, SHARED

FIXTURE = REPO / "tests" / "data" / "report" / "results"
DEMO_CONFIG = yaml.safe_load((REPO / "config.yaml").read_text())

#: The claims of ../shared/paper_claims.tsv that this workflow produces (the others: human annotation,
#: other models' leaderboard rows, AlpacaEval, a longest-instruction run, a reading of a figure).
PRODUCED = (
    [f"C{i:02d}" for i in range(1, 18)]
    + [f"C{i:02d}" for i in range(26, 41) if i not in ()]
    + ["C56"]
    + [f"C{i:02d}" for i in range(58, 68)]
    + [f"C{i:02d}" for i in range(69, 79)]
)


@pytest.fixture
def results(tmp_path) -> Path:
    """A copy of the small results fixture (made from a configs/test.yaml run), free to modify."""
    dst = tmp_path / "results"
    shutil.copytree(FIXTURE, dst)
    return dst


def by_id(rows):
    return {r["id"]: r for r in rows}


# ------------------------------------------------------------------------------------------- claims file


def test_claims_file_has_every_produced_claim_of_the_shared_list():
    refs = {c.paper_ref for c in claims_mod.load_claims()}
    missing = [c for c in PRODUCED if c not in refs]
    assert not missing, f"claims the workflow produces but paper_claims.tsv lacks: {missing}"
    for c in claims_mod.load_claims():
        assert c.citation.strip(), c.id
        assert c.compare == "none" or c.measure in claims_mod.MEASURES


def test_claims_paper_values_equal_the_shared_list():
    shared = SHARED / "paper_claims.tsv"
    if not shared.is_file():
        pytest.skip(f"{shared} is missing (clone with ../shared beside the repo)")
    with open(shared, encoding="utf-8") as fh:
        ref = {r["id"]: r["value"] for r in csv.DictReader(fh, delimiter="\t")}
    assert {c.paper_ref for c in claims_mod.load_claims()} == set(ref), "every shared claim has one row"
    for c in claims_mod.load_claims():
        text = ref[c.paper_ref].lstrip(">~").replace(",", "")
        if text.endswith("K"):
            value = float(text[:-1]) * 1000
        elif " of " in text:  # "10 of 10" subsets: stored as the percentage
            a, b = text.split(" of ")
            value = 100 * float(a) / float(b)
        elif "-" in text and not text.startswith("2e"):
            value = float(text.split("-")[0])
        else:
            value = float(text)
        assert c.paper_value == pytest.approx(value), (c.id, c.paper_ref, text)


def test_claims_file_errors_name_the_line(tmp_path):
    path = tmp_path / "bad.tsv"
    header = (
        "id\tpaper_ref\tsection\tclaim\tpaper_value\tpaper_text\tunit\tcompare\ttolerance\tmeasure\tscope\tcitation"
    )
    path.write_text(header + "\nx\tC01\tt\tc\t1\t1\tu\teq\t0\tno.such.measure\t\tcite\n")
    with pytest.raises(Exception, match=r"line 2.*unknown measure|unknown measure.*line 2|:2"):
        claims_mod.load_claims(path)


# ------------------------------------------------------------------------------------------- verdicts


def test_claims_on_the_fixture(results):
    rows = by_id(claims_mod.build(results, DEMO_CONFIG, "config.yaml"))
    # the normalization counts come from a 135M demo tagger over a few queries: not comparable, said why
    r = rows["normalize.tags_frequency"]
    assert r["verdict"] == "not comparable"
    assert "not ChatGPT" in r["reason"] and "tagged queries" in r["reason"]
    assert r["reproduced"] == read_tsv(results / "tables" / "normalization_steps.tsv")[1]["tags"]
    # the pool is tiny: the reason names its size
    assert rows["sampling.pool_tags"]["verdict"] == "not comparable"
    assert rows["sampling.pool_tags"]["reason"].startswith("pool of ")
    # a setting: the demo's scaled alpha differs from 20, the paper's confidence matches
    assert rows["normalize.alpha"]["verdict"] == "differs"
    assert rows["normalize.min_confidence"]["verdict"] == "matches"
    # the scripted judge of the test config is no GPT-4
    assert "not GPT-4" in rows["quality.precision"]["reason"]
    # stages absent from the fixture
    assert rows["mtbench.taglm_v1"]["verdict"] == "not run"
    assert rows["finetune.epochs"]["verdict"] == "not run"
    assert rows["quality.human_precision"]["verdict"] == "out of scope"
    assert {r["config"] for r in rows.values() if r["reproduced"]} == {"config.yaml"}


def test_claims_match_and_differ_when_the_setup_is_the_papers(results):
    """A paper-like run (GPT-4 judge, LLaMA-13B, 6K) is comparable: a close score matches, a far one differs."""
    cfg = {**DEMO_CONFIG, "sampling": {**DEMO_CONFIG["sampling"], "size": 6000}}
    tables = results / "tables"
    common = {"seed": 0, "judge": "openai:gpt-4", "judge_reported": "gpt-4-0613", "repeats": 3}
    write_tsv(  # the mtbench stage's columns (instag.mtbench.score.MAIN_COLUMNS)
        tables / "mt_bench.tsv",
        [
            {"model": "size/n6000", "ablation": "size", "variant": "n6000", "overall": 6.47, "std": 0.03, **common},
            {"model": "random/n6000", "ablation": "random", "variant": "n6000", "overall": 5.1, "std": 0.05, **common},
        ],
    )
    write_tsv(tables / "finetune.tsv", [{"ablation": "size", "variant": "n6000", "seed": 0, "epochs": 5}])
    cfg["finetune"] = {"training": {"base_model": "huggyllama/llama-13b", "global_batch": 128, "learning_rate": 2e-5}}
    rows = by_id(claims_mod.build(results, cfg))
    assert rows["mtbench.taglm_v1"]["verdict"] == "matches", rows["mtbench.taglm_v1"]
    assert rows["mtbench.taglm_v1"]["reproduced"] == "6.47"
    assert rows["mtbench.judge_runs"]["verdict"] == "matches"
    assert rows["mtbench.random_anchor"]["verdict"] == "differs"
    assert rows["mtbench.taglm_v2"]["verdict"] == "not comparable"
    assert "LLaMA-2-13B" in rows["mtbench.taglm_v2"]["reason"]
    assert [rows[k]["verdict"] for k in ("finetune.epochs", "finetune.batch_size", "finetune.learning_rate")] == [
        "matches"
    ] * 3


def test_claims_read_the_instagger_table(results):
    """instagger.tsv's long rows (system, gold, measure, average, f1): the distilled model, micro, raw gold."""
    base = {"system": "distilled", "model": "SmolLM2-135M-Instruct (fine-tuned)", "queries": 48, "paper_f1": ""}
    write_tsv(
        results / "tables" / "instagger.tsv",
        [
            {**base, "gold": "raw", "measure": "exact", "match": "lowercased", "average": "micro", "f1": 12.5},
            {**base, "gold": "raw", "measure": "fuzzy", "match": "m cosine > 0.8", "average": "micro", "f1": 40.0},
            {**base, "gold": "raw", "measure": "fuzzy", "match": "m cosine > 0.8", "average": "macro", "f1": 39.0},
            {
                **base,
                "system": "teacher",
                "gold": "raw",
                "measure": "exact",
                "match": "x",
                "average": "micro",
                "f1": 90,
            },
        ],
    )
    rows = by_id(claims_mod.build(results, DEMO_CONFIG))
    assert rows["instagger.exact_f1"]["reproduced"] == "12.5"
    assert rows["instagger.fuzzy_f1"]["reproduced"] == "40"
    assert rows["instagger.fuzzy_f1"]["verdict"] == "not comparable"
    assert rows["instagger.fuzzy_threshold"]["verdict"] == "matches"
    assert rows["instagger.eval_samples"]["reproduced"] == "48"
    assert rows["instagger.base_params"]["reproduced"] == "0.135"


def test_claims_markdown_lists_every_claim(results, tmp_path):
    out = claims_mod.write(results, DEMO_CONFIG, tmp_path / "claims.tsv", tmp_path / "claims.md", "config.yaml")
    md = (tmp_path / "claims.md").read_text()
    for c in claims_mod.load_claims():
        assert f"({c.paper_ref})" in md
    assert out["claims"] == len(claims_mod.load_claims())
    assert sum(out[v] for v in claims_mod.VERDICTS) == out["claims"]
    assert "| claim | paper | reproduced |" in md


# --------------------------------------------------------------------------------------------- figures


@pytest.mark.parametrize("name", sorted(figures.FIGURES))
def test_every_figure_draws_byte_stable(name, results, tmp_path):
    table = results / figures.FIGURES[name][1]
    if name == "sweeps":
        provenance.sweeps_table(results, DEMO_CONFIG, table)
    if name == "mtbench_radar":
        write_tsv(
            table,
            [
                {"model": m, "category": c, "score": 3 + (i + len(m)) % 6}
                for m in ("size/n60", "random/n60")
                for i, c in enumerate(("writing", "roleplay", "math", "coding"))
            ],
        )
    a = figures.draw(name, table, tmp_path / "a" / name)
    b = figures.draw(name, table, tmp_path / "b" / name)
    assert [Path(p).suffix for p in a] == [".png", ".pdf"]
    for pa, pb in zip(a, b, strict=True):
        assert Path(pa).read_bytes() == Path(pb).read_bytes(), f"{pa} differs between two draws"
    assert b"CreationDate" not in Path(a[1]).read_bytes()


def test_figure_of_an_empty_table_still_draws(tmp_path):
    table = tmp_path / "samples.tsv"
    table.write_text("ablation\tvariant\tcoverage\tavg_tags_per_query\n")
    assert len(figures.sampling_plane(table, tmp_path / "x")) == 2


def test_style_changes_the_figure(results, tmp_path):
    table = results / "tables" / "normalization_steps.tsv"
    a = figures.draw("normalization_funnel", table, tmp_path / "a")
    b = figures.draw("normalization_funnel", table, tmp_path / "b", {"theme": "darkgrid", "palette": "deep"})
    assert Path(a[0]).read_bytes() != Path(b[0]).read_bytes()


def test_labels_of_close_points_do_not_overlap():
    """Two points almost on top of each other (the demo's two datasets at the same place) keep their labels apart."""
    with style.figure_style(None) as (plt, sns, s):
        fig, ax = plt.subplots(figsize=(4, 3))
        xs, ys = [1.0, 1.0, 1.01, 2.0, 1.005], [50.0, 50.2, 50.1, 10.0, 50.0]
        ax.scatter(xs, ys)
        texts = style.annotate_points(ax, xs, ys, ["ShareGPT", "UltraChat", "WizardLM", "Dolly", "OpenAssistant"])
        fig.canvas.draw()
        assert not style.any_overlap(ax, texts)
        # without repelling they would overlap: the check can fail
        raw = [
            ax.annotate(t, (x, y), xytext=(4, 4), textcoords="offset points")
            for t, x, y in zip(["a" * 8] * 2, xs[:2], [50.0, 50.0], strict=True)
        ]
        fig.canvas.draw()
        assert style.any_overlap(ax, raw)


def test_diversity_labels_in_the_drawn_figure_do_not_overlap(results, tmp_path, monkeypatch):
    seen = {}
    real = style.annotate_points

    def spy(ax, *a, **k):
        texts = real(ax, *a, **k)
        ax.figure.canvas.draw()
        seen["overlap"] = style.any_overlap(ax, texts)
        seen["n"] = len(texts)
        return texts

    monkeypatch.setattr(figures, "annotate_points", spy)
    figures.draw("diversity_complexity", results / "tables" / "analysis_datasets.tsv", tmp_path / "d")
    assert seen["n"] >= 2 and seen["overlap"] is False


# -------------------------------------------------------------------------------------------- planning


def test_plan_follows_the_stages_present():
    outs = ["results/tables/normalization_steps.tsv", "results/tables/tag_mapping.tsv", "results/tables/samples.tsv"]
    assert list(plan.plan_figures(outs)) == ["normalization_funnel", "sampling_plane", "sweeps"]
    with_mt = outs + ["results/tables/mt_bench.tsv", "results/tables/mt_bench_categories.tsv"]
    assert "mtbench_radar" in plan.plan_figures(with_mt)
    assert plan.sweeps_sources(with_mt) == ["results/tables/samples.tsv", "results/tables/mt_bench.tsv"]
    files = plan.report_outputs(outs, screenshots=False)
    assert "results/report/explorer.html" in files and "results/report/explorer.png" not in files
    assert "results/report/explorer.png" in plan.report_outputs(outs, screenshots=True)
    assert plan.screenshots_enabled("auto", None) is False
    assert plan.screenshots_enabled("auto", "/usr/bin/chromium") is True
    assert plan.screenshots_enabled(False, "/usr/bin/chromium") is False
    with pytest.raises(ValueError, match="report.screenshots"):
        plan.screenshots_enabled("sometimes", None)


def test_schema_defaults_equal_code_defaults():
    schema = yaml.safe_load((REPO / "schemas" / "config.schema.yaml").read_text())
    rep = schema["properties"]["report"]["properties"]
    assert {k: v["default"] for k, v in rep["style"]["properties"].items()} == plan.REPORT_DEFAULTS["style"]
    assert {k: v["default"] for k, v in rep["explorer"]["properties"].items()} == plan.REPORT_DEFAULTS["explorer"]
    assert rep["screenshots"]["default"] == plan.REPORT_DEFAULTS["screenshots"]
    for section in (rep["style"], rep["explorer"]):
        for key, spec in section["properties"].items():
            assert spec.get("description") and "type" in spec, key


# ------------------------------------------------------------------------------------------ provenance


def test_provenance_is_byte_stable_and_complete(results, tmp_path):
    data = tmp_path / "d.json"
    data.write_text("[1, 2]\n")
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    provenance.write(results, DEMO_CONFIG, REPO, {"toy": str(data)}, a)
    provenance.write(results, DEMO_CONFIG, REPO, {"toy": str(data)}, b)
    assert a.read_bytes() == b.read_bytes()
    prov = json.loads(a.read_text())
    assert set(prov) == {"code", "config", "datasets", "models", "endpoints", "packages", "cache", "spend"}
    assert prov["datasets"]["toy"]["bytes"] == 7
    assert len(prov["config"]["sha256_without_report"]) == 64
    assert prov["packages"]["instag-workflow"]
    assert "tagging" in prov["cache"] and 0 <= prov["cache"]["tagging"]["hit_rate"] <= 1
    assert "tagging" in prov["endpoints"]
    # the report section does not change the hash of what produced the numbers
    other = {**DEMO_CONFIG, "report": {"style": {"theme": "dark"}}}
    assert claims_mod.config_digest(other) == claims_mod.config_digest(DEMO_CONFIG)


def test_sweeps_table_joins_mt_bench(results, tmp_path):
    rows = read_tsv(results / "tables" / "samples.tsv")
    first = rows[0]
    write_tsv(
        results / "tables" / "mt_bench.tsv",
        [{"ablation": first["ablation"], "variant": first["variant"], "seed": s, "score": 4 + s} for s in (0, 1)],
    )
    out = provenance.sweeps_table(results, DEMO_CONFIG, tmp_path / "sweeps.tsv")
    hit = [r for r in out if r["ablation"] == first["ablation"] and r["variant"] == first["variant"]][0]
    assert hit["mt_bench"] == 4.5 and hit["mt_bench_std"] == 0.5 and hit["seeds"] == 2
    assert sum(1 for r in out if r["mt_bench"] != "") == 1


# -------------------------------------------------------------------------------------------- explorer


def test_explorer_data(results):
    records = sorted((results / "data").glob("*.jsonl"))
    data = explorer.build_data(
        results / "tables" / "tag_mapping.tsv", results / "normalize" / "normalized.jsonl", records, examples=2
    )
    mapping = read_tsv(results / "tables" / "tag_mapping.tsv")
    canon = {r["canonical"] for r in mapping if r["canonical"]}
    names = [t[0] for t in data["tags"]]
    assert set(names) <= canon and names
    totals = [sum(t[1]) for t in data["tags"]]
    assert totals == sorted(totals, reverse=True)
    merged = [r for r in mapping if r["status"] == "merged"]
    if merged:
        r = merged[0]
        entry = next(t for t in data["tags"] if t[0] == r["canonical"]) if r["canonical"] in names else None
        if entry is not None:
            assert r["raw_tag"] in [m[0] for m in entry[2]]
    assert all(len(t[3]) <= 2 for t in data["tags"])
    assert any(t[3] for t in data["tags"]), "no example query found"
    assert data["dropped"] == sum(1 for r in mapping if not r["canonical"])
    html = explorer.render({**data, "queries": data["queries"] + ["</script><script>alert(1)</script>"]})
    assert "</script><script>alert" not in html
