"""Checks of a config that its schema cannot express, run by the workflow (rules/common.smk) before any job.

Snakemake's ``validate`` checks each key against ``schemas/config.schema.yaml`` (types, ranges, names) and fills
in defaults; these functions take that validated config and check what spans keys: data files that must exist,
names that must be configured datasets, API keys that must be set. Each raises a ConfigError naming the key;
what only deserves a warning is returned as text for the caller to print.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path

from .errors import ConfigError


def enabled_datasets(config: dict) -> list[str]:
    """The datasets with ``enabled: true``, in config order (at least one)."""
    names = [name for name, spec in config["datasets"].items() if spec["enabled"]]
    if not names:
        raise ConfigError("datasets", "every dataset has enabled: false")
    return names


def dataset_path(config: dict, name: str, basedir: str | Path) -> Path:
    """The source file of a configured dataset: absolute, or relative to ``data_root``.

    A relative data_root is relative to ``basedir`` (the repository: the Snakefile's folder), so a run in its own
    directory (``--directory runs/<name>``) reads the same data as a run in the repository.
    """
    path = Path(config["datasets"][name]["path"])
    if path.is_absolute():
        return path
    root = Path(config["data_root"])
    return (root if root.is_absolute() else Path(basedir) / root) / path


def check_inputs_exist(config: dict, names: list[str], basedir: str | Path) -> None:
    """Fail when the data file of one of the datasets ``names`` is missing, naming its key."""
    for name in names:
        path = dataset_path(config, name, basedir)
        if not path.is_file():
            raise ConfigError(
                f"datasets.{name}.path",
                f"file not found: {path} (data_root is '{config['data_root']}', resolved from {basedir})",
            )


def check_analysis_scores(config: dict) -> None:
    """Every dataset that ``analysis.scores`` gives a score is a configured one."""
    for name in config["analysis"]["scores"]:
        if name not in config["datasets"]:
            raise ConfigError(
                f"analysis.scores.{name}", f"not a configured dataset (datasets: {', '.join(config['datasets'])})"
            )


def sampling_pool(config: dict) -> tuple[list[str], list[str]]:
    """The enabled datasets of ``sampling.pool`` in its order, and warnings (its disabled datasets are left out).

    A name that is no configured dataset, or a pool whose every dataset is disabled, is an error.
    """
    pool = config["sampling"]["pool"]
    for name in pool:
        if name not in config["datasets"]:
            raise ConfigError(
                "sampling.pool", f"'{name}' is not a configured dataset (datasets: {', '.join(config['datasets'])})"
            )
    kept = [name for name in pool if config["datasets"][name]["enabled"]]
    if len(kept) == len(pool):
        return kept, []
    if not kept:
        raise ConfigError("sampling.pool", "every pool dataset is disabled")
    left_out = ", ".join(sorted(set(pool) - set(kept)))
    return kept, [f"sampling.pool datasets disabled and left out of the pool: {left_out}"]


def openai_specs(node, key: str = "") -> Iterator[tuple[str, dict]]:
    """(config key, spec) of every ``openai`` backend spec in the config, skipping sections with enabled: false."""
    if isinstance(node, dict):
        if node.get("enabled") is False:
            return
        if node.get("backend") == "openai":
            yield key, node
        for k, v in node.items():
            yield from openai_specs(v, f"{key}.{k}" if key else k)


def check_api_keys(config: dict, stages: set[str] | None = None, environ: Mapping[str, str] = os.environ) -> None:
    """Name the first ``openai`` backend whose API key variable is unset (a loopback server needs none).

    Only the sections of ``stages`` are checked (a config section is named by its stage word); None checks all.
    """
    from .llm.openai_backend import is_loopback

    for key, spec in openai_specs(config):
        if stages is not None and key.split(".")[0] not in stages:
            continue
        env = spec.get("api_key_env", "OPENAI_API_KEY")
        if not environ.get(env) and not is_loopback(spec.get("base_url")):
            raise ConfigError(
                key,
                f"the openai backend reads its API key from the environment variable {env}, which is not set "
                "(export it, or set `api_key_env` to the variable that holds it)",
            )
