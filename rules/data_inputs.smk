# Input functions of rules/data.smk (definitions only: Snakemake's linter wants rules and functions apart).
import json


def get_dataset_source(wildcards):
    return str(dataset_path(wildcards.dataset))


def get_dataset_option(key, default=None):
    """An input function returning one option of the dataset named by the wildcard (dicts as JSON)."""

    def fn(wildcards):
        value = config["datasets"][wildcards.dataset].get(key, default)
        return json.dumps(value, sort_keys=True) if isinstance(value, dict) else value

    return fn


def data_final_output():
    return ["results/tables/datasets.tsv"]
