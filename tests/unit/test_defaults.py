"""Defaults live once in code and once in the schema: every config key that a stage function takes has the
function's default as its schema default, and the derived command line shows the same default."""

from __future__ import annotations

import argparse
import inspect
import re

import pytest
import yaml

from instag import analysis, cli, data, finetune, instagger, report
from instag.normalize import actions as normalize
from instag.report import figures
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
    "finetune.nproc": (finetune.train, "nproc"),
    "instagger.nproc": (instagger.train, "nproc"),
    "report.explorer.examples": (report.write_explorer, "examples"),
    "report.explorer.max_chars": (report.write_explorer, "max_chars"),
}
#: keys whose default a second stage function also takes: (config key, stage function, its parameter)
ALSO = [
    ("analysis.score_name", report.draw_figure, "score_name"),
    ("analysis.score_name", figures.diversity_complexity, "score_name"),
]


def schema_node(key: str) -> dict:
    node = SCHEMA
    for part in key.split("."):
        node = node["additionalProperties"] if part == "*" else node["properties"][part]
    return node


@pytest.mark.parametrize(
    ("key", "func", "param"),
    [(key, *PAIRS[key]) for key in sorted(PAIRS)] + ALSO,
    ids=[*sorted(PAIRS), *(f"{k}-{f.__name__}" for k, f, _ in ALSO)],
)
def test_schema_default_is_the_functions_default(key, func, param):
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


def test_finetune_seed_default_is_the_schemas_seed():
    """finetune.seeds defaults to one seed, the one `instag finetune train` uses without --seed."""
    assert schema_node("finetune.seeds")["default"] == [inspect.signature(finetune.train).parameters["seed"].default]


def _defaults(func) -> dict:
    return {n: p.default for n, p in inspect.signature(func).parameters.items() if p.default is not p.empty}


def test_report_commands_pass_on_the_defaults_of_what_they_call():
    """A report command's option defaults are those of the function it calls (which keeps its own for Python
    callers), so `instag report ...` without the option does what a call without the argument does."""
    from instag.report import browser, claims, explorer

    for command, target in (
        (report.write_claims, claims.write),
        (report.write_explorer, explorer.write),
        (report.take_screenshot, browser.screenshot),
    ):
        mine, theirs = _defaults(command), _defaults(target)
        shared = set(mine) & set(theirs)
        assert shared, f"{command.__name__} and {target.__qualname__} share no defaulted parameter"
        assert {k: mine[k] for k in shared} == {k: theirs[k] for k in shared}, command.__name__


def _options(stage: str, action: str) -> set[str]:
    def choices(parser):
        return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices

    parser = choices(choices(cli.build_parser(stage))[stage])[action]
    return {o for a in parser._actions for o in a.option_strings}


@pytest.mark.parametrize("stage", ["finetune", "instagger", "report"])
def test_every_flag_a_rule_passes_is_an_option(stage):
    text = (REPO / "rules" / f"{stage}.smk").read_text()
    commands = re.findall(r'"instag -v (\w+) (\w+)(.*?)> /dev/null', text, re.S)
    assert commands, f"no instag command in rules/{stage}.smk"
    for cmd_stage, action, rest in commands:
        flags = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", rest))
        missing = flags - _options(cmd_stage, action)
        assert not missing, f"rules/{stage}.smk: instag {cmd_stage} {action} has no option {sorted(missing)}"
