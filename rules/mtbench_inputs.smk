# Input functions of rules/mtbench.smk (definitions only: Snakemake's linter wants rules and functions apart).
#
# Which models answer MT-Bench (every fine-tuning run, the base model, configured backends) is planned in the
# package (instag.mtbench.plan); the fine-tuning runs are FINETUNE_RUNS (rules/finetune_inputs.smk).
import json

from instag.mtbench.plan import model_regex as _mtbench_model_regex
from instag.mtbench.plan import plan_models as _mtbench_plan_models
from instag.mtbench.plan import with_defaults as _mtbench_with_defaults

MTBENCH = _mtbench_with_defaults(config.get("mtbench"))
MTBENCH_FIGURES = ("complexity", "diversity", "size", "radar")


def mtbench_models():
    """Model key -> instag.mtbench.plan.Model: every fine-tuning run, the base model, configured backends."""
    return _mtbench_plan_models(MTBENCH, finetune_runs())


def mtbench_model_regex():
    return _mtbench_model_regex(mtbench_models())


def get_mtbench_settings_json():
    return json.dumps(MTBENCH, sort_keys=True)


def get_mtbench_judge_json():
    return json.dumps(MTBENCH["judge"]["backend"], sort_keys=True)


def get_mtbench_answer_env():
    """vLLM pins torch and transformers unlike ours: its answer jobs run in their own environment."""
    if MTBENCH["answer"]["backend"]["backend"] == "vllm":
        return "../envs/vllm.yaml"
    return "../envs/llm.yaml"


def get_mtbench_answer_input(wildcards):
    model = mtbench_models()[wildcards.model]
    out = {"manifest": "results/mtbench/data.json"}
    if model.run_dir:
        out["run"] = f"{model.run_dir}/run.json"
        if model.backend["backend"] == "embedded" and not model.backend.get("model"):
            out["gguf"] = f"{model.run_dir}/model.gguf"
    return out


def get_mtbench_run_dir_args(wildcards):
    """`--run-dir <folder>` as two arguments for a fine-tuned model, none for the base and API models."""
    run_dir = mtbench_models()[wildcards.model].run_dir
    return ["--run-dir", run_dir] if run_dir else []


def mtbench_files(kind):
    return [f"results/mtbench/{kind}/{key}.jsonl" for key in sorted(mtbench_models())]


def get_mtbench_sample_stats():
    """Sampling stats of the fine-tuned models' samples (coverage and tags per query in the table)."""
    pairs = {
        (m.ablation, m.variant)
        for m in mtbench_models().values()
        if m.kind == "finetuned"
    }
    return [f"results/sampling/{a}/{v}.stats.json" for a, v in sorted(pairs)]


def mtbench_figure_files():
    return [
        f"results/figures/mt_bench_{f}.{ext}"
        for f in MTBENCH_FIGURES
        for ext in ("png", "pdf")
    ]


def mtbench_final_output():
    if not MTBENCH["enabled"]:
        return []
    return [
        "results/tables/mt_bench.tsv",
        "results/tables/mt_bench_categories.tsv",
        *mtbench_figure_files(),
    ]
