# Input functions of rules/instagger.smk (definitions only: Snakemake's linter wants rules and functions apart).
#
# Which systems are scored and the tagging settings each is asked with are planned in the package
# (instag.instagger.plan, unit-tested).
import json
import os

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


def instagger_nproc():
    """Training processes: the rule's `gpu` resource (one per GPU) if set, else `instagger.nproc`."""
    return int(resources_for("instagger_train").get("gpu", 0)) or INSTAGGER["nproc"]


def get_instagger_predict_model(wildcards):
    return [f"{INSTAGGER_RUN}/run.json"] if wildcards.system == "distilled" else []


def get_instagger_predict_settings(wildcards):
    """The tagging settings of the system named by the wildcard, as one JSON string."""
    settings = checked(
        instagger_predict_settings, wildcards.system, INSTAGGER, TAGGING, INSTAGGER_RUN
    )
    return json.dumps(settings, sort_keys=True)


def get_instagger_predictions(wildcards=None):
    return [f"results/instagger/predict/{s}.jsonl" for s in INSTAGGER_SYSTEMS]


def get_instagger_prediction_pairs(wildcards=None):
    return [f"{s}=results/instagger/predict/{s}.jsonl" for s in INSTAGGER_SYSTEMS]


def instagger_final_output():
    return ["results/tables/instagger.tsv"] if INSTAGGER["enabled"] else []
