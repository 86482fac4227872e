"""The reproduction report: paper against reproduction, figures, provenance and the tag explorer.

Reads only ``results/`` (the flat tables under ``results/tables/`` and a few statistics files) and writes
``results/tables/claims.tsv``, ``results/report/claims.md``, ``results/tables/sweeps.tsv``, the report figures
``results/figures/report_<name>.png|pdf``, ``results/provenance.json`` and ``results/report/explorer.html``.

Submodules: :mod:`.claims` (the paper's numbers, package data ``paper_claims.tsv``), :mod:`.figures` (one
function per figure, one table each), :mod:`.style` (theme, byte-stable saving, label repel),
:mod:`.provenance` (and the sweeps join), :mod:`.explorer` (the static tag explorer), :mod:`.browser`
(headless Chromium screenshots).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from ..errors import InputError


def _json_arg(value: dict | str, what: str) -> dict:
    """A JSON object given as a dict, as JSON text or as ``@file.json``."""
    if isinstance(value, dict):
        return value
    text = value
    if text.startswith("@"):
        text = Path(text[1:]).read_text(encoding="utf-8")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(what, f"not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise InputError(what, "must be a JSON object")
    return value


def write_claims(
    out_tsv: str, out_md: str, results: str = "results", config: dict | str = "{}", config_label: str = ""
) -> dict:
    """The paper's numbers beside the reproduced ones (TSV and Markdown).

    Args:
        out_tsv: claims table to write (results/tables/claims.tsv).
        out_md: rendered Markdown to write (results/report/claims.md).
        results: the results folder.
        config: the run's config as JSON (or @file.json).
        config_label: how the table names the config (e.g. its file and hash).
    """
    from .claims import write

    return write(results, _json_arg(config, "--config"), out_tsv, out_md, config_label)


def write_sweeps(out: str, results: str = "results", config: dict | str = "{}") -> dict:
    """Join samples.tsv with the MT-Bench scores (results/tables/sweeps.tsv).

    Args:
        out: the table to write (results/tables/sweeps.tsv).
        results: the results folder.
        config: the run's config as JSON (or @file.json); sampling.size marks the main sets.
    """
    from .provenance import sweeps_table

    rows = sweeps_table(results, _json_arg(config, "--config"), out)
    return {"rows": len(rows), "with_mt_bench": sum(1 for r in rows if r["mt_bench"] != "")}


def draw_figure(name: str, table: str, out: str, style: dict | str = "{}", score_name: str = "AlpacaEval") -> dict:
    """Draw one figure (PNG and PDF) from its table.

    Args:
        name: which figure.
        table: the table it is drawn from.
        out: output path without extension (.png and .pdf are written).
        style: report.style as JSON (or @file.json): theme, context, palette, font_scale, dpi, ...
        score_name: colour-bar label of diversity_complexity (the config's analysis.score_name).
    """
    from .figures import draw

    kwargs = {"score_name": score_name} if name == "diversity_complexity" else {}
    paths = draw(name, table, out, _json_arg(style, "--style"), **kwargs)
    return {"figure": name, "files": paths}


def write_provenance(
    out: str, results: str = "results", config: dict | str = "{}", repo: str = ".", datasets: Sequence[str] = ()
) -> dict:
    """results/provenance.json: code, config, data, models, packages, spend.

    Args:
        out: the file to write (results/provenance.json).
        results: the results folder.
        config: the run's config as JSON (or @file.json).
        repo: the workflow's git work tree.
        datasets: the source data files to hash, each as NAME=PATH.
    """
    from .provenance import write

    named = {}
    for item in datasets:
        name, sep, path = item.partition("=")
        if not sep:
            raise InputError("--datasets", f"expected NAME=PATH, got {item!r}")
        named[name] = path
    return write(results, _json_arg(config, "--config"), repo, named, out)


def write_explorer(
    mapping: str,
    normalized: str,
    out: str,
    records: Sequence[str] = (),
    examples: int = 3,
    max_chars: int = 240,
    title: str = "InsTag tag explorer",
) -> dict:
    """The static tag explorer (one HTML file).

    Args:
        mapping: the tag mapping (results/tables/tag_mapping.tsv).
        normalized: the normalized tags (results/normalize/normalized.jsonl).
        out: the HTML file to write (results/report/explorer.html).
        records: ingested record files (results/data/<dataset>.jsonl) for the example texts.
        examples: example queries shown per tag.
        max_chars: an example query is cut to this many characters.
        title: the page's title.
    """
    from .explorer import write

    return write(mapping, normalized, records, out, examples=examples, max_chars=max_chars, title=title)


def take_screenshot(
    html: str, png: str, fragment: str = "", width: int = 1280, height: int = 900, timeout: float = 60.0
) -> dict:
    """A PNG of an HTML file in headless Chromium (e.g. the explorer).

    Args:
        html: the HTML file.
        png: the PNG to write.
        fragment: URL fragment, e.g. 'tag=Math' selects a tag in the explorer.
        width: viewport width in pixels.
        height: viewport height in pixels.
        timeout: seconds before the browser is stopped.
    """
    from .browser import screenshot

    return screenshot(html, png, fragment=fragment, width=width, height=height, timeout=timeout)


def add_cli(sub) -> None:
    from ..cli_args import add_command, stage_parser
    from .figures import FIGURES

    acts = stage_parser(
        sub,
        "report",
        "claims table, figures, provenance and tag explorer from results/",
        "The reproduction report (reads only results/): the paper's numbers beside this run's, the paper's "
        "figures, provenance.json and a static tag explorer.",
    )
    add_command(acts, "claims", write_claims, help="the paper's numbers beside the reproduced ones (TSV and Markdown)")
    add_command(acts, "sweeps", write_sweeps, help="join samples.tsv with MT-Bench scores (results/tables/sweeps.tsv)")
    add_command(
        acts,
        "figure",
        draw_figure,
        help="draw one figure (PNG and PDF) from its table",
        choices={"name": sorted(FIGURES)},
    )
    add_command(
        acts,
        "provenance",
        write_provenance,
        help="results/provenance.json: code, config, data, models, packages, spend",
    )
    add_command(acts, "explorer", write_explorer, help="the static tag explorer (one HTML file)")
    add_command(
        acts, "screenshot", take_screenshot, help="a PNG of an HTML file in headless Chromium (e.g. the explorer)"
    )
