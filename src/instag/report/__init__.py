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
from pathlib import Path

from ..errors import InputError


def _json_arg(text: str, what: str) -> dict:
    if text.startswith("@"):
        text = Path(text[1:]).read_text(encoding="utf-8")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(what, f"not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise InputError(what, "must be a JSON object")
    return value


def _claims(a):
    from .claims import write

    return write(a.results, _json_arg(a.config, "--config"), a.out_tsv, a.out_md, a.config_label)


def _sweeps(a):
    from .provenance import sweeps_table

    rows = sweeps_table(a.results, _json_arg(a.config, "--config"), a.out)
    return {"rows": len(rows), "with_mt_bench": sum(1 for r in rows if r["mt_bench"] != "")}


def _figure(a):
    from .figures import draw

    kwargs = {"score_name": a.score_name} if a.name == "diversity_complexity" else {}
    paths = draw(a.name, a.table, a.out, _json_arg(a.style, "--style"), **kwargs)
    return {"figure": a.name, "files": paths}


def _provenance(a):
    from .provenance import write

    datasets = {}
    for item in a.datasets or []:
        name, sep, path = item.partition("=")
        if not sep:
            raise InputError("--datasets", f"expected NAME=PATH, got {item!r}")
        datasets[name] = path
    return write(a.results, _json_arg(a.config, "--config"), a.repo, datasets, a.out)


def _explorer(a):
    from .explorer import write

    return write(a.mapping, a.normalized, a.records, a.out, examples=a.examples, max_chars=a.max_chars, title=a.title)


def _screenshot(a):
    from .browser import screenshot

    return screenshot(a.html, a.png, fragment=a.fragment, width=a.width, height=a.height, timeout=a.timeout)


def add_cli(sub) -> None:
    p = sub.add_parser(
        "report",
        help="claims table, figures, provenance and tag explorer from results/",
        description="The reproduction report (reads only results/): the paper's numbers beside this run's, the "
        "paper's figures, provenance.json and a static tag explorer.",
    )
    acts = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    c = acts.add_parser("claims", help="the paper's numbers beside the reproduced ones (TSV and Markdown)")
    c.add_argument("--results", default="results", help="the results folder (default: results)")
    c.add_argument("--config", default="{}", help="the run's config as JSON (or @file.json)")
    c.add_argument("--config-label", default="", help="how the table names the config (e.g. its file and hash)")
    c.add_argument("--out-tsv", required=True, help="claims table to write (results/tables/claims.tsv)")
    c.add_argument("--out-md", required=True, help="rendered Markdown (results/report/claims.md)")
    c.set_defaults(func=_claims)

    s = acts.add_parser("sweeps", help="join samples.tsv with MT-Bench scores (results/tables/sweeps.tsv)")
    s.add_argument("--results", default="results")
    s.add_argument("--config", default="{}", help="the run's config as JSON (sampling.size marks the main sets)")
    s.add_argument("--out", required=True)
    s.set_defaults(func=_sweeps)

    from .figures import FIGURES

    f = acts.add_parser("figure", help="draw one figure (PNG and PDF) from its table")
    f.add_argument("--name", required=True, choices=sorted(FIGURES), help="which figure")
    f.add_argument("--table", required=True, help="the table it is drawn from")
    f.add_argument("--out", required=True, help="output path without extension (.png and .pdf are written)")
    f.add_argument("--style", default="{}", help="report.style as JSON: theme, context, palette, font_scale, dpi, ...")
    f.add_argument("--score-name", default="score", help="colour-bar label of diversity_complexity")
    f.set_defaults(func=_figure)

    v = acts.add_parser("provenance", help="results/provenance.json: code, config, data, models, packages, spend")
    v.add_argument("--results", default="results")
    v.add_argument("--config", default="{}", help="the run's config as JSON (or @file.json)")
    v.add_argument("--repo", default=".", help="the workflow's git work tree")
    v.add_argument("--datasets", nargs="*", default=[], metavar="NAME=PATH", help="the source data files to hash")
    v.add_argument("--out", required=True)
    v.set_defaults(func=_provenance)

    e = acts.add_parser("explorer", help="the static tag explorer (one HTML file)")
    e.add_argument("--mapping", required=True, help="results/tables/tag_mapping.tsv")
    e.add_argument("--normalized", required=True, help="results/normalize/normalized.jsonl")
    e.add_argument("--records", nargs="*", default=[], help="results/data/<dataset>.jsonl files (example texts)")
    e.add_argument("--examples", type=int, default=3, help="example queries per tag")
    e.add_argument("--max-chars", type=int, default=240, help="an example query is cut to this many characters")
    e.add_argument("--title", default="InsTag tag explorer")
    e.add_argument("--out", required=True)
    e.set_defaults(func=_explorer)

    g = acts.add_parser("screenshot", help="a PNG of an HTML file in headless Chromium (e.g. the explorer)")
    g.add_argument("--html", required=True)
    g.add_argument("--png", required=True)
    g.add_argument("--fragment", default="", help="URL fragment, e.g. 'tag=Math' selects a tag in the explorer")
    g.add_argument("--width", type=int, default=1280)
    g.add_argument("--height", type=int, default=900)
    g.add_argument("--timeout", type=float, default=60.0, help="seconds before the browser is stopped")
    g.set_defaults(func=_screenshot)
