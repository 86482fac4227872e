# Validation of the config, wildcard constraints, resources and input functions shared by the rule files.
# Definitions only, no rules. Planning (which variants, shards and runs exist) lives in the package.
import json
import os
import re
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

validate(config, "../schemas/config.schema.yaml")

# The `instag` console script sits beside the Python that runs Snakemake (a virtual environment's bin/).
# Put that folder first on PATH in every job so rules find it without an activated environment. Where
# Snakemake runs from an environment without instag (e.g. with --sdm conda), the job's env provides it.
if (Path(sys.executable).parent / "instag").exists():
    shell.prefix(
        f'export PATH={shlex.quote(str(Path(sys.executable).parent))}:"$PATH"; '
    )

from instag.errors import ConfigError
from instag.llm.openai_backend import is_loopback
from instag.sampling.plan import plan_variants
from instag.tagging import n_shards


# --- data ---
def dataset_path(name):
    """The source file of a configured dataset: absolute, or relative to `data_root`.

    A relative data_root is relative to the repository (the Snakefile's folder), so a run in its own
    directory (`--directory runs/<name>`) reads the same data as a run in the repository.
    """
    path = Path(config["datasets"][name]["path"])
    if path.is_absolute():
        return path
    root = Path(config["data_root"])
    return (root if root.is_absolute() else Path(workflow.basedir) / root) / path


DATASETS = [name for name, spec in config["datasets"].items() if spec["enabled"]]
if not DATASETS:
    raise WorkflowError("config key 'datasets': every dataset has enabled: false")


def check_inputs_exist():
    """Fail before any job when a configured data file is missing, naming the key."""
    for name in DATASETS:
        path = dataset_path(name)
        if not path.is_file():
            raise WorkflowError(
                f"config key 'datasets.{name}.path': file not found: {path} "
                f"(data_root is '{config['data_root']}', resolved from {workflow.basedir})"
            )


check_inputs_exist()


wildcard_constraints:
    dataset="|".join(map(re.escape, DATASETS)),
    shard=r"\d+",


def openai_specs(node, key=""):
    """(config key, spec) of every `openai` backend spec in the config, skipping sections with enabled: false."""
    if isinstance(node, dict):
        if node.get("enabled") is False:
            return
        if node.get("backend") == "openai":
            yield key, node
        for k, v in node.items():
            yield from openai_specs(v, f"{key}.{k}" if key else k)


def stages_to_run():
    """The stage words of the rules this run will execute (a rule's name starts with its stage's word)."""
    try:
        return {job.rule.name.split("_")[0] for job in workflow.dag.needrun_jobs()}
    except AttributeError:
        return None  # a Snakemake without this API: check every configured backend


def check_api_keys():
    """Name a missing API key before any job runs (from `onstart`, so a dry run, which calls nothing, passes).

    Only the stages this run executes are checked: their config section is named by the stage word.
    """
    running = stages_to_run()
    for key, spec in openai_specs(config):
        if running is not None and key.split(".")[0] not in running:
            continue
        env = spec.get("api_key_env", "OPENAI_API_KEY")
        if not os.environ.get(env) and not is_loopback(spec.get("base_url")):
            raise WorkflowError(
                f"config key '{key}': the openai backend reads its API key from the environment variable "
                f"{env}, which is not set (export it, or set `api_key_env` to the variable that holds it)"
            )


onstart:
    check_api_keys()


def threads_for(rule):
    """Threads for a rule: `threads.<rule>` in the config, else `threads.default`."""
    return config["threads"].get(rule, config["threads"]["default"])


def resources_for(rule):
    """Resources for a rule: `resources.default` updated with `resources.<rule>`."""
    res = dict(config["resources"]["default"])
    res.update(config["resources"].get(rule, {}))
    return res


def get_dataset_source(wildcards):
    return str(dataset_path(wildcards.dataset))


def get_dataset_option(key, default=None):
    """An input function returning one option of the dataset named by the wildcard (dicts as JSON)."""

    def fn(wildcards):
        value = config["datasets"][wildcards.dataset].get(key, default)
        return json.dumps(value, sort_keys=True) if isinstance(value, dict) else value

    return fn


def get_records_files(wildcards=None):
    return [f"results/data/{dataset}.jsonl" for dataset in DATASETS]


def get_final_output():
    """Everything the default target builds: each stage's tables and figures."""
    return [
        "results/tables/datasets.tsv",
        *tagging_final_output(),
        *normalize_final_output(),
        *quality_final_output(),
        *analysis_final_output(),
        *sampling_final_output(),
        *finetune_final_output(),
        *mtbench_final_output(),
        *instagger_final_output(),
        *report_final_output(),
    ]


# --- tagging ---
# A dataset's shard count follows from its record count, known after its ingestion: rule data_ingest is a
# checkpoint, and these input functions read its statistics.
TAGGING = config["tagging"]


def get_tagging_settings_json(wildcards=None):
    """The tagging section (backend, prompt, decoding, retries, cache, prices) as one JSON string."""
    return json.dumps(
        {k: v for k, v in TAGGING.items() if k != "shard_size"}, sort_keys=True
    )


def tagging_shard_files(dataset, ext="jsonl"):
    """The tag files (or, with ext="summary.json", the summaries) of every shard of one dataset."""
    stats = checkpoints.data_ingest.get(dataset=dataset).output.stats
    with open(stats, encoding="utf-8") as fh:
        n = n_shards(json.load(fh)["selected"], TAGGING["shard_size"])
    return [f"results/tagging/{dataset}/shard-{k}.{ext}" for k in range(n)]


def get_tag_shards(wildcards=None):
    """Every tagging shard of every dataset, in config order."""
    return [path for dataset in DATASETS for path in tagging_shard_files(dataset)]


def get_tagging_summaries(wildcards=None):
    return [
        path
        for dataset in DATASETS
        for path in tagging_shard_files(dataset, "summary.json")
    ]


def tagging_final_output():
    return ["results/tables/cost_estimate.tsv", "results/tables/tagging.tsv"]


# --- normalize ---
NORMALIZE = config["normalize"]
NORMALIZE_STEPS = ("frequency", "lexical", "semantic", "association")


def normalize_step_file(step):
    return f"results/normalize/{step}.json"


def get_normalize_after(step):
    """The step files a normalization step replays: every step before it, in order."""
    return [
        normalize_step_file(s) for s in NORMALIZE_STEPS[: NORMALIZE_STEPS.index(step)]
    ]


def normalize_final_output():
    return [
        "results/tables/normalization_steps.tsv",
        "results/tables/tag_mapping.tsv",
    ]


# --- quality ---
QUALITY = config["quality"]


def get_quality_judge(wildcards=None):
    """The judge backend spec as one JSON string (quoted with :q in the rule)."""
    return json.dumps(QUALITY["judge"], sort_keys=True)


def get_quality_prices(wildcards=None):
    return json.dumps(QUALITY["prices"], sort_keys=True)


def quality_final_output():
    return ["results/tables/tag_quality.tsv"] if QUALITY["enabled"] else []


# --- analysis ---
ANALYSIS = config["analysis"]
ANALYSIS_FIGURES = (
    "diversity_complexity",
    "tag_long_tail",
    "top_tags",
    "coverage_heatmap",
)

for _name in ANALYSIS["scores"]:
    if _name not in config["datasets"]:
        raise WorkflowError(
            f"config key 'analysis.scores.{_name}': not a configured dataset "
            f"(datasets: {', '.join(config['datasets'])})"
        )


def get_analysis_names(wildcards=None):
    return json.dumps(
        {d: config["datasets"][d].get("paper_name", d) for d in DATASETS},
        sort_keys=True,
    )


def get_analysis_scores(wildcards=None):
    return json.dumps(
        {d: v for d, v in ANALYSIS["scores"].items() if d in DATASETS}, sort_keys=True
    )


def get_figure_dir(wildcards, output):
    """The folder of a rule's first output (figures are written there by name)."""
    return os.path.dirname(output[0])


def analysis_figure_files():
    return [
        f"results/figures/analysis_{name}.{ext}"
        for name in ANALYSIS_FIGURES
        for ext in ("png", "pdf")
    ]


def analysis_final_output():
    return [
        "results/tables/analysis_datasets.tsv",
        "results/tables/analysis_correlation.tsv",
        *analysis_figure_files(),
    ]


# --- sampling ---
# Variants come from `sampling.ablations` through instag.sampling.plan_variants; each is one wildcard value
# (the stepped number) of its ablation's rule.
SAMPLING = config["sampling"]
try:
    SAMPLING_VARIANTS = plan_variants(SAMPLING)
except ConfigError as exc:
    raise WorkflowError(str(exc))

for _name in SAMPLING["pool"]:
    if _name not in config["datasets"]:
        raise WorkflowError(
            f"config key 'sampling.pool': '{_name}' is not a configured dataset "
            f"(datasets: {', '.join(config['datasets'])})"
        )
SAMPLING_POOL = [name for name in SAMPLING["pool"] if name in DATASETS]
if len(SAMPLING_POOL) < len(SAMPLING["pool"]):
    if not SAMPLING_POOL:
        raise WorkflowError(
            "config key 'sampling.pool': every pool dataset is disabled"
        )
    print(
        "Warning: sampling.pool datasets disabled and left out of the pool: "
        + ", ".join(sorted(set(SAMPLING["pool"]) - set(SAMPLING_POOL))),
        file=sys.stderr,
    )


def sampling_values(ablation):
    """Wildcard constraint of an ablation's rule: exactly its configured values."""
    values = [v.value for v in SAMPLING_VARIANTS[ablation]]
    return "|".join(map(re.escape, values)) if values else "(?!x)x"


def sampling_files(ablation, ext="jsonl"):
    return [
        f"results/sampling/{ablation}/{v.name}.{ext}"
        for v in SAMPLING_VARIANTS[ablation]
    ]


def get_ablation_samples(ablation):
    """Every sample file and statistics file of one ablation (the input of its target rule)."""
    return sampling_files(ablation) + sampling_files(ablation, "stats.json")


def get_sampling_stats(wildcards=None):
    return [
        path
        for ablation in SAMPLING_VARIANTS
        for path in sampling_files(ablation, "stats.json")
    ]


def sampling_final_output():
    return [
        "results/tables/pool.tsv",
        "results/tables/samples.tsv",
        "results/figures/sampling_coverage_complexity.png",
        "results/figures/sampling_coverage_complexity.pdf",
    ]


# --- instagger ---
# The distilled tagger (rules/instagger.smk). Which systems are scored and the tagging settings each is asked
# with are planned in the package (instag.instagger.plan, unit-tested).
from instag.instagger.plan import predict_settings as instagger_predict_settings
from instag.instagger.plan import systems as instagger_systems

INSTAGGER = config["instagger"]
INSTAGGER_SYSTEMS = instagger_systems(INSTAGGER)
INSTAGGER_RUN = "results/instagger/train"


def get_instagger_training_json(wildcards=None):
    return json.dumps(INSTAGGER["training"], sort_keys=True)


def get_instagger_run_dir(wildcards, output):
    """The training run folder: where the train rule's run.json is written."""
    return os.path.dirname(output.run)


def get_instagger_launcher(wildcards=None):
    """`instag -v`, or with resources.instagger_train.gpu > 1 the same under torchrun (a process per GPU, one job)."""
    n = int(resources_for("instagger_train").get("gpu", 0))
    if n <= 1:
        return "instag -v"
    return f"torchrun --standalone --nproc_per_node {n} -m instag -v"


def get_instagger_predict_model(wildcards):
    return [f"{INSTAGGER_RUN}/run.json"] if wildcards.system == "distilled" else []


def get_instagger_predict_settings(wildcards):
    """The tagging settings of the system named by the wildcard, as one JSON string."""
    try:
        settings = instagger_predict_settings(
            wildcards.system, INSTAGGER, TAGGING, INSTAGGER_RUN
        )
    except ConfigError as exc:
        raise WorkflowError(str(exc)) from None
    return json.dumps(settings, sort_keys=True)


def get_instagger_predictions(wildcards=None):
    return [f"results/instagger/predict/{s}.jsonl" for s in INSTAGGER_SYSTEMS]


def get_instagger_prediction_pairs(wildcards=None):
    return [f"{s}=results/instagger/predict/{s}.jsonl" for s in INSTAGGER_SYSTEMS]


def instagger_final_output():
    return ["results/tables/instagger.tsv"] if INSTAGGER["enabled"] else []


# --- finetune ---
# TagLM fine-tuning (rules/finetune.smk): one run per (sampled set, seed), planned by instag.finetune.plan_runs
# from `finetune.sets`, `seeds` and `seeds_per_set` over the sampling variants (unit-tested in the package).
from instag.finetune import plan_runs as finetune_plan_runs

FINETUNE = config["finetune"]
try:
    FINETUNE_RUNS = (
        finetune_plan_runs(
            {a: [v.name for v in vs] for a, vs in SAMPLING_VARIANTS.items()},
            FINETUNE["sets"],
            FINETUNE["seeds"],
            FINETUNE["seeds_per_set"],
            SAMPLING["size"],
        )
        if FINETUNE["enabled"]
        else []
    )
except ConfigError as exc:
    raise WorkflowError(str(exc)) from None
FINETUNE_RUN_DIR = "results/finetune/{ablation}/{variant}/seed{seed}"


def finetune_runs():
    """Every planned run as {"ablation", "variant", "seed"} (read by the mtbench section)."""
    return [{"ablation": a, "variant": v, "seed": s} for a, v, s in FINETUNE_RUNS]


def finetune_ablation_regex():
    return "|".join(map(re.escape, SAMPLING_VARIANTS))


def finetune_train_outputs():
    """The outputs of one run (model.gguf only when `finetune.training.export_gguf`)."""
    out = {
        "model": directory(f"{FINETUNE_RUN_DIR}/model"),
        "run": f"{FINETUNE_RUN_DIR}/run.json",
        "loss": f"{FINETUNE_RUN_DIR}/loss.tsv",
        "figure": f"{FINETUNE_RUN_DIR}/loss.png",
        "rejected": f"{FINETUNE_RUN_DIR}/rejected.jsonl",
        "timing": "results/benchmarks/finetune/train/{ablation}/{variant}/seed{seed}.steps.tsv",
    }
    if FINETUNE["training"]["export_gguf"]:
        out["gguf"] = f"{FINETUNE_RUN_DIR}/model.gguf"
    return out


def get_finetune_run_dir(wildcards):
    return FINETUNE_RUN_DIR.format(**wildcards)


def get_finetune_settings_json():
    return json.dumps(FINETUNE["training"], sort_keys=True)


def finetune_nproc():
    """Processes per run: the rule's `gpu` resource (one per GPU) if set, else `finetune.nproc`."""
    return int(resources_for("finetune_train").get("gpu", 0)) or FINETUNE["nproc"]


def finetune_files(name):
    """One file of every planned run, e.g. finetune_files("run.json")."""
    return [
        f"{FINETUNE_RUN_DIR}/{name}".format(ablation=a, variant=v, seed=s)
        for a, v, s in FINETUNE_RUNS
    ]


def finetune_timing_files():
    return [
        f"results/benchmarks/finetune/train/{a}/{v}/seed{s}.steps.tsv"
        for a, v, s in FINETUNE_RUNS
    ]


def finetune_final_output():
    if not FINETUNE_RUNS:
        return []
    out = [
        "results/tables/finetune.tsv",
        "results/figures/finetune_loss.png",
        "results/figures/finetune_loss.pdf",
    ]
    if FINETUNE["training"]["export_gguf"]:
        out += finetune_files("model.gguf")
    return out


# --- mtbench ---
# Which models answer MT-Bench (every fine-tuning run, the base model, configured backends) is planned in the
# package (instag.mtbench.plan); the fine-tuning runs are FINETUNE_RUNS (finetune section).
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


def get_mtbench_run_dir_option(wildcards):
    run_dir = mtbench_models()[wildcards.model].run_dir
    return f"--run-dir {shlex.quote(run_dir)}" if run_dir else ""


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


# --- report ---
# The reproduction report (rules/report.smk) reads only results/. Which figures it draws follows from the
# other stages' final outputs (instag.report.plan), so a stage left out of the run leaves its figures out.
from instag.report.browser import find_chromium
from instag.report.claims import config_digest
from instag.report.plan import (
    REPORT_DEFAULTS,
    plan_figures,
    report_outputs,
    screenshots_enabled,
    source_tables,
    sweeps_sources,
)

REPORT = config.get("report", {})
REPORT_STYLE = {**REPORT_DEFAULTS["style"], **REPORT.get("style", {})}
REPORT_EXPLORER = {**REPORT_DEFAULTS["explorer"], **REPORT.get("explorer", {})}
try:
    REPORT_SCREENSHOTS = screenshots_enabled(
        REPORT.get("screenshots", REPORT_DEFAULTS["screenshots"]), find_chromium()
    )
except ValueError as exc:
    raise WorkflowError(f"config key 'report.screenshots': {exc}")


def report_stage_outputs():
    """The final outputs of every stage before the report (what it may read)."""
    outs = ["results/tables/datasets.tsv"]
    for stage in (
        "tagging",
        "normalize",
        "quality",
        "analysis",
        "sampling",
        "finetune",
        "mtbench",
        "instagger",
    ):
        fn = globals().get(f"{stage}_final_output")
        if fn is not None:
            outs += [str(p) for p in fn()]
    return outs


def report_figures():
    return plan_figures(report_stage_outputs())


def get_report_tables(wildcards=None):
    return source_tables(report_stage_outputs())


def get_report_sweeps_sources(wildcards=None):
    return sweeps_sources(report_stage_outputs())


def get_report_figure_table(wildcards):
    return report_figures()[wildcards.figure]


def get_report_style(wildcards=None):
    return json.dumps(REPORT_STYLE, sort_keys=True)


def get_report_config(wildcards=None):
    """The config without its report section (what produced the numbers), as JSON."""
    return json.dumps(
        {k: v for k, v in config.items() if k != "report"}, sort_keys=True, default=str
    )


def get_report_config_label(wildcards=None):
    # file names only: the same config run in another folder gives the same tables
    files = [Path(f).name for f in workflow.config_settings.configfiles]
    files = files or ["config.yaml"]
    return f"{', '.join(files)} (sha256:{config_digest(config)[:12]})"


def get_report_datasets(wildcards=None):
    return " ".join(shlex.quote(f"{name}={dataset_path(name)}") for name in DATASETS)


def get_report_records(wildcards=None):
    return [f"results/data/{dataset}.jsonl" for dataset in DATASETS]


def report_figure_regex():
    return "|".join(map(re.escape, report_figures())) or "(?!x)x"


def report_final_output():
    return report_outputs(report_stage_outputs(), REPORT_SCREENSHOTS)


def get_report_sources(wildcards=None):
    """The configured source data files (hashed into provenance.json)."""
    return [str(dataset_path(name)) for name in DATASETS]


def report_files(files, caption, category):
    """report() on the PNG files of a list of figures (the PDF beside each stays a plain output)."""
    # imported under another name: `report(` opening a line is the report: keyword
    from snakemake.io import report as report_item

    return [
        (
            report_item(
                f,
                caption=f"../report/{caption}.rst",
                category=category,
                subcategory="figures",
            )
            if str(f).endswith(".png")
            else f
        )
        for f in files
    ]
