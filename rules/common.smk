# Validation of the config and input functions shared by the rule files. Definitions only, no rules.
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


def dataset_path(name):
    """The source file of a configured dataset: absolute, or relative to `data_root`."""
    path = Path(config["datasets"][name]["path"])
    return path if path.is_absolute() else Path(config["data_root"]) / path


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
                f"(data_root is '{config['data_root']}', resolved from {os.getcwd()})"
            )


check_inputs_exist()


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
    """An input function returning one option of the dataset named by the wildcard."""

    def fn(wildcards):
        value = config["datasets"][wildcards.dataset].get(key, default)
        return json.dumps(value, sort_keys=True) if isinstance(value, dict) else value

    return fn


def limit_option(wildcards):
    limit = config["datasets"][wildcards.dataset].get("limit")
    return "" if limit is None else f"--limit {int(limit)}"


def get_final_output():
    """Everything the default target builds, i.e. each stage's tables and figures."""
    return [
        "results/tables/datasets.tsv",
        *tagging_final_output(),
        *normalize_final_output(),
        *sampling_final_output(),
        *report_final_output(),
    ]


# --- sampling ---
# The pool, Algorithm 1 and the decoupled ablations (rules/sampling.smk). Variants come from
# `sampling.ablations` in the config; each is one wildcard value of its ablation's rule.
SAMPLING = config["sampling"]
SAMPLING_ABLATIONS = ("complexity", "diversity", "size", "random")


def _sampling_levels(spec):
    """`steps` evenly spaced values from `min` to `max`, rounded to 4 decimals (just `min` when steps is 1)."""
    n, lo, hi = spec["steps"], spec["min"], spec["max"]
    if n > 1 and hi < lo:
        raise WorkflowError(
            f"config key 'sampling.ablations.*.levels': max {hi} is below min {lo}"
        )
    if n <= 1:
        return [lo] * n
    return [round(lo + i * (hi - lo) / (n - 1), 4) for i in range(n)]


def sampling_variants(ablation):
    """Variant name -> the `instag sampling select` target arguments, for one ablation."""
    spec = SAMPLING["ablations"][ablation]
    if ablation == "complexity":
        pairs = [
            (
                f"tags{k:g}",
                f"--size {spec['size']} --coverage {spec['coverage']} --complexity {k}",
            )
            for k in _sampling_levels(spec["levels"])
        ]
    elif ablation == "diversity":
        pairs = [
            (
                f"cov{round(100 * c, 2):g}",
                f"--size {spec['size']} --coverage {c} --complexity {spec['avg_tags']}",
            )
            for c in _sampling_levels(spec["levels"])
        ]
    else:
        sizes = set(spec["sizes"]) | (
            {SAMPLING["size"]} if ablation == "size" else set()
        )
        pairs = [(f"n{n}", f"--size {n}") for n in sorted(sizes)]
    variants = dict(pairs)
    if len(variants) != len(pairs):
        raise WorkflowError(
            f"config key 'sampling.ablations.{ablation}.levels': two levels give the same variant name"
        )
    return variants


SAMPLING_VARIANTS = {
    ablation: sampling_variants(ablation) for ablation in SAMPLING_ABLATIONS
}


def _check_sampling_pool():
    """Pool datasets must be configured; disabled ones are left out with a warning."""
    for name in SAMPLING["pool"]:
        if name not in config["datasets"]:
            raise WorkflowError(
                f"config key 'sampling.pool': '{name}' is not a configured dataset "
                f"(datasets: {', '.join(config['datasets'])})"
            )
    off = [name for name in SAMPLING["pool"] if name not in DATASETS]
    if off:
        print(
            f"Warning: sampling.pool datasets disabled and left out of the pool: {', '.join(off)}",
            file=sys.stderr,
        )
    if SAMPLING["pool"] and len(off) == len(SAMPLING["pool"]):
        raise WorkflowError(
            "config key 'sampling.pool': every pool dataset is disabled"
        )


_check_sampling_pool()


def sampling_variant_regex(ablation):
    """Wildcard constraint of an ablation's rule: exactly its configured variant names."""
    names = list(SAMPLING_VARIANTS[ablation])
    return "|".join(map(re.escape, names)) if names else "(?!x)x"


def get_sampling_pool_option(wildcards):
    pooled = [name for name in SAMPLING["pool"] if name in DATASETS]
    return "--datasets " + " ".join(pooled) if pooled else ""


def get_sampling_targets(ablation):
    """Input function: the target arguments of the variant named by the wildcard."""

    def fn(wildcards):
        return SAMPLING_VARIANTS[ablation][wildcards.variant]

    return fn


def get_sampling_tolerance():
    tol = SAMPLING["tolerance"]
    return f"--tol-coverage {tol['coverage']} --tol-complexity {tol['avg_tags']}"


def get_ablation_samples(ablation):
    """Every sample file and statistics file of one ablation (the input of its target rule)."""
    return [
        f"results/sampling/{ablation}/{variant}.{ext}"
        for variant in SAMPLING_VARIANTS[ablation]
        for ext in ("jsonl", "stats.json")
    ]


def get_sampling_stats(wildcards=None):
    return [
        f"results/sampling/{ablation}/{variant}.stats.json"
        for ablation in SAMPLING_ABLATIONS
        for variant in SAMPLING_VARIANTS[ablation]
    ]


def get_main_sample():
    """Algorithm 1's selection at N = `sampling.size`: the TagLM training set."""
    return f"results/sampling/size/n{SAMPLING['size']}.jsonl"


def sampling_final_output():
    return [
        "results/tables/pool.tsv",
        "results/tables/samples.tsv",
        "results/figures/sampling_coverage_complexity.png",
        "results/figures/sampling_coverage_complexity.pdf",
    ]


# --- normalize/analysis ---
# Tag normalization (rules/normalize.smk), tag quality and the preliminary analysis (rules/analysis.smk).
NORMALIZE = config["normalize"]
QUALITY = config["quality"]
ANALYSIS = config["analysis"]
NORMALIZE_STEPS = ("frequency", "lexical", "semantic", "association")
ANALYSIS_FIGURES = (
    "diversity_complexity",
    "tag_long_tail",
    "top_tags",
    "coverage_heatmap",
)


def get_tag_shards(wildcards=None):
    """Every tagging shard of every dataset, in config order.

    The tagging section names them through `tagging_shard_files(dataset)`; until it exists, one shard per
    dataset (results/tagging/<dataset>/shard-0.jsonl, or `tagging.shards` of them) is assumed.
    """
    named = globals().get("tagging_shard_files")
    if named is not None:
        return [path for dataset in DATASETS for path in named(dataset)]
    n = int(config.get("tagging", {}).get("shards", 1))
    return [
        f"results/tagging/{dataset}/shard-{k}.jsonl"
        for dataset in DATASETS
        for k in range(n)
    ]


def get_records_files(wildcards=None):
    return [f"results/data/{dataset}.jsonl" for dataset in DATASETS]


def normalize_step_file(step):
    return f"results/normalize/{step}.json"


def get_normalize_after(step):
    """The step files a normalization step replays: every step before it, in order."""
    return [
        normalize_step_file(s) for s in NORMALIZE_STEPS[: NORMALIZE_STEPS.index(step)]
    ]


def get_normalize_frequency_args(wildcards=None):
    f = NORMALIZE["frequency"]
    return (
        f"--alpha {f['alpha']} --scale {str(f['scale']).lower()}"
        f" --reference-queries {f['reference_queries']} --alpha-min {f['alpha_min']}"
    )


def get_normalize_semantic_args(wildcards=None):
    s = NORMALIZE["semantic"]
    return f"--eps {s['eps']} --min-samples {s['min_samples']} --batch-size {s['batch_size']}"


def get_normalize_association_args(wildcards=None):
    a = NORMALIZE["association"]
    return (
        f"--min-support {a['min_support']} --min-confidence {a['min_confidence']} --engine {a['engine']}"
        f" --scale {str(a['scale']).lower()} --min-support-floor {a['min_support_floor']}"
        f" --max-rounds {a['max_rounds']} --reference-queries {NORMALIZE['frequency']['reference_queries']}"
    )


def get_quality_judge(wildcards=None):
    """The judge backend spec as one JSON string (quoted with :q in the rule)."""
    return json.dumps(QUALITY["judge"], sort_keys=True)


def get_quality_args(wildcards=None):
    q = QUALITY
    return (
        f"--n-precision {q['n_precision']} --n-consistency {q['n_consistency']} --set-size {q['set_size']}"
        f" --min-instances {q['min_instances']} --seed {q['seed']} --max-query-chars {q['max_query_chars']}"
        f" --max-tokens {q['max_tokens']} --prices {shlex.quote(json.dumps(q['prices'], sort_keys=True))}"
        + ("" if q["spend_cap_usd"] is None else f" --spend-cap-usd {q['spend_cap_usd']}")
    )


def get_analysis_names(wildcards=None):
    return json.dumps(
        {d: config["datasets"][d].get("paper_name", d) for d in DATASETS},
        sort_keys=True,
    )


def _check_analysis_scores():
    for name in ANALYSIS["scores"]:
        if name not in config["datasets"]:
            raise WorkflowError(
                f"config key 'analysis.scores.{name}': not a configured dataset (datasets: {', '.join(config['datasets'])})"
            )


_check_analysis_scores()


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


def normalize_final_output():
    """The normalization, analysis and (when enabled) tag quality tables and figures.

    Empty while no tagging section defines `tagging_shard_files` (nothing would produce the shards yet), so
    `all` keeps building without the tagging stage; the stage targets work on hand-made shards regardless.
    """
    if "tagging_shard_files" not in globals():
        return []
    out = [
        "results/tables/normalization_steps.tsv",
        "results/tables/tag_mapping.tsv",
        "results/tables/analysis_datasets.tsv",
        "results/tables/analysis_correlation.tsv",
        *analysis_figure_files(),
    ]
    if QUALITY["enabled"]:
        out.append("results/tables/tag_quality.tsv")
    return out


# --- tagging ---
# LLM tagging (rules/tagging.smk). A dataset's shard count follows from its record count, known after its
# ingestion: rule data_ingest is a checkpoint, and these input functions read its output.
TAGGING = config["tagging"]


def get_tagging_settings_json(wildcards=None):
    """The tagging section (backend, prompt, decoding, retries, cache, prices) as one JSON string."""
    return json.dumps(
        {k: v for k, v in TAGGING.items() if k != "shard_size"}, sort_keys=True
    )


def get_tagging_records(wildcards=None):
    return [f"results/data/{dataset}.jsonl" for dataset in DATASETS]


def tagging_n_shards(dataset):
    """Shards of an ingested dataset: ceil(records / shard_size), at least one (waits for its ingestion)."""
    records = checkpoints.data_ingest.get(dataset=dataset).output.records
    with open(records, encoding="utf-8") as fh:
        n = sum(1 for line in fh if line.strip())
    return max(1, -(-n // TAGGING["shard_size"]))


def tagging_shard_files(dataset, ext="jsonl"):
    """The tag files (or, with ext="summary.json", the summaries) of every shard of one dataset."""
    return [
        f"results/tagging/{dataset}/shard-{k}.{ext}"
        for k in range(tagging_n_shards(dataset))
    ]


def get_tagging_summaries(wildcards=None):
    return [
        path
        for dataset in DATASETS
        for path in tagging_shard_files(dataset, "summary.json")
    ]


def tagging_final_output():
    return ["results/tables/cost_estimate.tsv", "results/tables/tagging.tsv"]


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
    files = [str(f) for f in workflow.config_settings.configfiles] or ["config.yaml"]
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
