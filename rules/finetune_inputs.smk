# Input functions of rules/finetune.smk (definitions only: Snakemake's linter wants rules and functions apart).
#
# One run per (sampled set, seed), planned by instag.finetune.plan_runs from `finetune.sets`, `seeds` and
# `seeds_per_set` over the sampling variants (unit-tested in the package).
import json
import re

from instag.finetune import plan_runs as finetune_plan_runs

FINETUNE = config["finetune"]
FINETUNE_RUNS = (
    checked(
        finetune_plan_runs,
        {a: [v.name for v in vs] for a, vs in SAMPLING_VARIANTS.items()},
        FINETUNE["sets"],
        FINETUNE["seeds"],
        FINETUNE["seeds_per_set"],
        SAMPLING["size"],
    )
    if FINETUNE["enabled"]
    else []
)
FINETUNE_RUN_DIR = "results/finetune/{ablation}/{variant}/seed{seed}"


def finetune_runs():
    """Every planned run as {"ablation", "variant", "seed"} (read by rules/mtbench_inputs.smk)."""
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


def finetune_files(pattern):
    """A path pattern of rule finetune_train's outputs, filled in for every planned run."""
    return [
        str(pattern).format(ablation=a, variant=v, seed=s) for a, v, s in FINETUNE_RUNS
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
        out += finetune_files(f"{FINETUNE_RUN_DIR}/model.gguf")
    return out
