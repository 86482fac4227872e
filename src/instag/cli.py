"""The ``instag`` command: ``instag <stage> <action> [options]``; one subcommand per workflow stage.

A stage's actions are plain functions; :data:`COMMANDS` lists them and :mod:`instag.cli_args` derives each
action's options from the function's signature and docstring (so a stage module holds no argparse). A stage
module may instead expose ``add_cli(subparsers)``. This file only parses, sets up logging on stderr, calls
the stage function and prints its returned summary as JSON on stdout.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys

from . import __version__
from .cli_args import add_command, stage_parser
from .errors import InstagError

#: Stages whose CLI is derived: stage -> (help, [(action, "module:function", add_command options)]).
COMMANDS = {
    "data": (
        "ingest SFT datasets into one record format",
        [
            ("ingest", "data:ingest", {"flags": {"fmt": "--format"}, "choices": {"fmt": "data:READERS"}}),
            ("summarize", "data:summarize", {"positional": ("stats_files",), "result": len}),
        ],
    ),
    "normalize": (
        "normalize raw tags (frequency, lexical, semantic, association), each step its own command and file",
        [
            ("collect", "normalize.actions:collect", {}),
            ("frequency", "normalize.actions:frequency_step", {}),
            ("lexical", "normalize.actions:lexical_step", {}),
            ("semantic", "normalize.actions:semantic_step", {}),
            (
                "association",
                "normalize.actions:association_step",
                {"choices": {"engine": "normalize.association:ENGINES"}},
            ),
            ("finalize", "normalize.actions:finalize_step", {}),
        ],
    ),
    "analysis": (
        "per-dataset diversity and complexity, tag frequencies, Figure 2",
        [("tables", "analysis:tables", {}), ("figures", "analysis:figures", {})],
    ),
    "sampling": (
        "complexity-first diverse sampling (Algorithm 1) and the decoupled ablations",
        [
            ("pool", "sampling:build_pool", {}),
            (
                "select",
                "sampling:select",
                {"flags": {"pool_path": "--pool"}, "choices": {"ablation": "sampling:ABLATIONS"}},
            ),
            ("summarize", "sampling:summarize", {"positional": ("stats_files",), "result": len}),
            ("plot", "sampling:plot", {}),
        ],
    ),
}


def _resolve(ref: str):
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(f"instag.{module}"), name)


def _add_derived(sub, stage: str) -> None:
    help, actions = COMMANDS[stage]
    acts = stage_parser(sub, stage, help)
    for action, ref, options in actions:
        options = dict(options)
        if "choices" in options:
            options["choices"] = {k: sorted(_resolve(v)) for k, v in options["choices"].items()}
        if options.get("result") is len:
            options["result"] = lambda rows: {"rows": len(rows)}
        add_command(acts, action, _resolve(ref), **options)


#: Subcommand -> module, in workflow order. A module that is not there (yet) is skipped.
STAGES = {
    "data": "data",
    "tagging": "tagging",
    "normalize": "normalize",
    "analysis": "analysis",
    "quality": "quality",
    "sampling": "sampling",
    "finetune": "finetune",
    "mtbench": "mtbench",
    "instagger": "instagger",
    "report": "report",
    "cache": "llm.cache_cli",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; with ``only`` (a subcommand name) just that stage's module is imported."""
    parser = argparse.ArgumentParser(
        prog="instag",
        description="InsTag reproduction: tag, normalize, analyse and sample SFT data; fine-tune and evaluate. "
        "Each stage is also a rule of the Snakemake workflow; the commands here run one step by hand.",
    )
    parser.add_argument("--version", action="version", version=f"instag {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for stage, name in STAGES.items():
        if only is not None and stage != only:
            continue
        if stage in COMMANDS:
            _add_derived(sub, stage)
            continue
        try:
            module = importlib.import_module(f"instag.{name}")
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("instag"):
                continue
            raise
        module.add_cli(sub)
    return parser


def _requested_stage(argv: list[str]) -> str | None:
    for arg in argv:
        if not arg.startswith("-"):
            return arg if arg in STAGES else None
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(_requested_stage(argv))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose + 1, 2),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        result = args.func(args)
    except InstagError as exc:
        logging.getLogger("instag").error("%s", exc)
        print(f"instag: error: {exc}", file=sys.stderr)
        return 2
    if result is not None:
        print(json.dumps(result, ensure_ascii=False, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
