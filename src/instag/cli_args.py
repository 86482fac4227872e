"""Command-line options derived from a stage function's signature and docstring (one place for each knob).

A stage action is a plain function; its keyword defaults are the package's defaults (the config schema holds
the only other copy, and a test keeps the two equal). :func:`add_command` turns such a function into an
``argparse`` subcommand:

* every parameter becomes ``--name-with-dashes`` (``positional`` names become positional arguments);
* the type comes from the annotation: ``int``, ``float``, ``str``/``Path``, ``bool`` (given as ``true`` or
  ``false``), ``dict`` (given as JSON), lists/sequences (several values), and ``X | None`` (``none`` or
  ``null`` also accepted, so a rule can pass a config value that may be null as is);
* a parameter without a default is required; the default is shown in ``--help``;
* a ``bool`` parameter may instead be a bare switch (``switches``: ``--no-progress`` sets it to the opposite
  of its default);
* the help of each option is its line in the docstring's ``Args:`` section, the command's description is
  the docstring's first paragraph.

The function's return value (a JSON-able summary) is what ``instag`` prints on stdout.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import re
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

NONE_WORDS = ("none", "null")


def parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("true", "yes", "1"):
        return True
    if low in ("false", "no", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def parse_json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON ({exc.msg}): {text[:80]!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {type(value).__name__}")
    return value


def optional(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """A parser that also takes ``none``/``null`` (for settings whose config value may be null)."""

    def fn(text: str) -> Any:
        return None if text.strip().lower() in NONE_WORDS else parse(text)

    fn.__name__ = getattr(parse, "__name__", "value")
    return fn


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """``(base type, may be None)`` of an annotation such as ``int | None`` or ``str | Path``."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        nullable = len(args) < len(typing.get_args(annotation))
        if all(a in (str, Path, os.PathLike) or typing.get_origin(a) is os.PathLike for a in args):
            return str, nullable
        if len(args) == 1:
            return args[0], nullable
        return str, nullable
    return annotation, False


def _option_spec(annotation: Any, default: Any) -> dict:
    base, nullable = _unwrap(annotation)
    origin = typing.get_origin(base)
    spec: dict = {}
    if origin in (list, tuple, Sequence, typing.Sequence) or base in (list, tuple):
        inner = typing.get_args(base)[:1] or (str,)
        item, _ = _unwrap(inner[0])
        spec["nargs"] = "*" if default is not inspect.Parameter.empty else "+"
        spec["type"] = {int: int, float: float}.get(item, str)
        return spec
    if base is bool:
        parse: Callable[[str], Any] = parse_bool
        spec["metavar"] = "{true,false}"
    elif base is int or base is float:
        parse = base
    elif base is dict or origin is dict:
        parse = parse_json_object
        spec["metavar"] = "JSON"
    else:
        parse = str
    spec["type"] = optional(parse) if nullable else parse
    return spec


def doc_parts(func: Callable) -> tuple[str, dict[str, str]]:
    """The first paragraph of a docstring and the ``Args:`` lines (``name: text``, continued by indentation)."""
    doc = inspect.getdoc(func) or ""
    first = doc.split("\n\n", 1)[0].replace("\n", " ").strip()
    helps: dict[str, str] = {}
    m = re.search(r"^Args:\s*$(.*?)(?=^\S|\Z)", doc, re.M | re.S)
    if m:
        name = None
        for line in m.group(1).splitlines():
            item = re.match(r"^\s{2,4}(\w+)(?:\s*\([^)]*\))?:\s*(.*)$", line)
            if item:
                name = item.group(1)
                helps[name] = item.group(2).strip()
            elif name and line.strip():
                helps[name] += " " + line.strip()
    return first, helps


def add_command(
    actions,
    name: str,
    func: Callable,
    *,
    help: str | None = None,
    positional: Sequence[str] = (),
    flags: dict[str, str] | None = None,
    choices: dict[str, Sequence] | None = None,
    hide: Sequence[str] = (),
    switches: dict[str, str] | None = None,
    result: Callable[[Any], Any] | None = None,
) -> argparse.ArgumentParser:
    """Add subcommand ``name`` calling ``func`` with options derived from its signature.

    ``flags`` renames an option (parameter -> ``--flag``), ``choices`` restricts values, ``hide`` leaves
    parameters out (they keep their defaults), ``switches`` makes a ``bool`` parameter a bare switch that takes
    no value and sets the opposite of its default (parameter -> ``--switch``), ``result`` maps the return
    value to what is printed.
    """
    description, helps = doc_parts(func)
    parser = actions.add_parser(
        name,
        help=help or description,
        description=description,
    )
    hints = typing.get_type_hints(func)
    params = [
        p
        for p in inspect.signature(func).parameters.values()
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name not in hide
    ]
    for p in params:
        help_text = helps.get(p.name, p.name.replace("_", " "))
        if switches and p.name in switches:
            if not isinstance(p.default, bool):
                raise TypeError(f"{func.__qualname__}({p.name}): a switch needs a bool default")
            action = "store_false" if p.default else "store_true"
            help_text += f" (this switch turns it {'off' if p.default else 'on'})"
            parser.add_argument(switches[p.name], dest=p.name, action=action, help=help_text)
            continue
        spec = _option_spec(hints.get(p.name, str), p.default)
        spec["help"] = help_text
        if choices and p.name in choices:
            spec["choices"] = list(choices[p.name])
            spec.pop("metavar", None)
        if p.name in positional:
            if p.default is not p.empty:
                spec.setdefault("nargs", "?")
                spec["default"] = p.default
            parser.add_argument(p.name, **spec)
            continue
        flag = (flags or {}).get(p.name, "--" + p.name.replace("_", "-"))
        if p.default is p.empty:
            spec["required"] = True
        else:
            spec["default"] = p.default
            if p.default is not None and p.default != () and p.default != "":
                shown = str(p.default).lower() if isinstance(p.default, bool) else p.default
                spec["help"] += f" (default: {shown})"
        parser.add_argument(flag, dest=p.name, **spec)
    names = [p.name for p in params]

    def run(args: argparse.Namespace) -> Any:
        value = func(**{n: getattr(args, n) for n in names})
        return result(value) if result is not None else value

    parser.set_defaults(func=run)
    return parser


def stage_parser(sub, name: str, help: str, description: str | None = None):
    """The ``instag <stage>`` parser and its subparsers for actions."""
    p = sub.add_parser(name, help=help, description=description or help)
    return p.add_subparsers(dest="action", required=True, metavar="ACTION")
