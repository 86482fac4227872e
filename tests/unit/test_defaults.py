"""Defaults live once in code and once in the schema: every config key that a stage function takes has the
function's default as its schema default, and the derived command line shows the same default."""

from __future__ import annotations

import inspect

import pytest
import yaml

from instag import analysis, cli, data
from instag.normalize import actions as normalize
from instag.sampling import actions as sampling
from tests.conftest import REPO

SCHEMA = yaml.safe_load((REPO / "schemas" / "config.schema.yaml").read_text())

#: config key (``*`` = any dataset) -> (stage function, its parameter)
PAIRS = {
    "ingest.max_query_chars": (data.ingest, "max_query_chars"),
    "ingest.max_reject_fraction": (data.ingest, "max_reject_fraction"),
    "datasets.*.seed": (data.ingest, "seed"),
    "datasets.*.limit": (data.ingest, "limit"),
    "normalize.frequency.alpha": (normalize.frequency_step, "alpha"),
    "normalize.frequency.scale": (normalize.frequency_step, "scale"),
    "normalize.frequency.reference_queries": (normalize.frequency_step, "reference_queries"),
    "normalize.frequency.alpha_min": (normalize.frequency_step, "alpha_min"),
    "normalize.semantic.model": (normalize.semantic_step, "model"),
    "normalize.semantic.eps": (normalize.semantic_step, "eps"),
    "normalize.semantic.min_samples": (normalize.semantic_step, "min_samples"),
    "normalize.semantic.batch_size": (normalize.semantic_step, "batch_size"),
    "normalize.semantic.device": (normalize.semantic_step, "device"),
    "normalize.semantic.cache_dir": (normalize.semantic_step, "cache_dir"),
    "normalize.association.min_support": (normalize.association_step, "min_support"),
    "normalize.association.min_confidence": (normalize.association_step, "min_confidence"),
    "normalize.association.max_rounds": (normalize.association_step, "max_rounds"),
    "normalize.association.engine": (normalize.association_step, "engine"),
    "normalize.association.scale": (normalize.association_step, "scale"),
    "normalize.association.min_support_floor": (normalize.association_step, "min_support_floor"),
    "analysis.score_name": (analysis.tables, "score_name"),
    "analysis.top_k": (analysis.tables, "top_k"),
    "sampling.seed": (sampling.select, "seed"),
    "sampling.tolerance.coverage": (sampling.select, "tol_coverage"),
    "sampling.tolerance.avg_tags": (sampling.select, "tol_complexity"),
}


def schema_node(key: str) -> dict:
    node = SCHEMA
    for part in key.split("."):
        node = node["additionalProperties"] if part == "*" else node["properties"][part]
    return node


@pytest.mark.parametrize("key", sorted(PAIRS))
def test_schema_default_is_the_functions_default(key):
    func, param = PAIRS[key]
    node = schema_node(key)
    assert "default" in node, f"schema key {key} has no default"
    default = inspect.signature(func).parameters[param].default
    assert default is not inspect.Parameter.empty, f"{func.__qualname__}({param}) has no default"
    same = node["default"] == default and isinstance(node["default"], bool) == isinstance(default, bool)
    assert same, (
        f"{key}: schema default {node['default']!r} != {func.__module__}.{func.__qualname__}({param}={default!r})"
    )


def test_normalize_rule_passes_every_step_key(tmp_path):
    """Each step key of the schema is an option of its command, so no schema key is silently unused."""
    rules = (REPO / "rules" / "normalize.smk").read_text()
    for step in ("frequency", "semantic", "association"):
        for key in schema_node(f"normalize.{step}")["properties"]:
            assert f"--{key.replace('_', '-')} " in rules, f"normalize.{step}.{key} is not passed by its rule"


def test_cli_shows_the_functions_default(capsys):
    with pytest.raises(SystemExit):
        cli.main(["normalize", "association", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert f"(default: {normalize.association_step.__defaults__[0]})" in out
    assert "--engine {cooccurrence,mlxtend}" in out and "--scale {true,false}" in out
