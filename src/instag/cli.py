"""The ``instag`` command: ``instag <stage> <action> [options]``; one subcommand per workflow stage.

Each stage module exposes ``add_cli(subparsers)``; this file only parses, sets up logging on stderr, calls
the stage function and prints its returned summary as JSON on stdout.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys

from . import __version__
from .errors import InstagError

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
