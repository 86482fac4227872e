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
    shell.prefix(f"export PATH={shlex.quote(str(Path(sys.executable).parent))}:\"$PATH\"; ")


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
        return json.dumps(value) if isinstance(value, dict) else value

    return fn


def limit_option(wildcards):
    limit = config["datasets"][wildcards.dataset].get("limit")
    return "" if limit is None else f"--limit {int(limit)}"


def get_final_output():
    """Everything the default target builds, i.e. each stage's tables and figures."""
    return ["results/tables/datasets.tsv"]
