"""The claims table: every number of the paper this workflow can reproduce, beside the reproduced one.

The paper's values live in one data file, ``paper_claims.tsv`` in this package, with a citation per row. Each
row names a *measure* (how to read the reproduced value from ``results/``, :data:`MEASURES`) and a *scope*
(what must match the paper's set-up for the two numbers to be comparable, :data:`SCOPES`). The verdict is

- ``matches`` / ``differs``: comparable, and within / outside the row's tolerance;
- ``not comparable``: the run differs from the paper's set-up, the reason says how ("demo judge",
  "pool of 480, not 306,044");
- ``not run``: the stage whose table holds the value has not run (its table is absent) or the value is off;
- ``out of scope``: the paper's number is not something this workflow produces (human annotation, other
  models' leaderboard values); listed so that the table accounts for every number.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..errors import InputError
from ..io import atomic_write, write_tsv
from .results import Results, num, pick

log = logging.getLogger(__name__)

VERDICTS = ("matches", "differs", "not comparable", "not run", "out of scope")
COLUMNS = [
    "id",
    "paper_ref",
    "section",
    "claim",
    "paper",
    "reproduced",
    "unit",
    "tolerance",
    "verdict",
    "reason",
    "source",
    "config",
    "citation",
]
PAPER_TAGGED = 500_000
PAPER_POOL = 306_044
PAPER_SAMPLE = 6_000


@dataclass(frozen=True)
class Claim:
    id: str
    paper_ref: str
    section: str
    claim: str
    paper_value: float
    paper_text: str
    unit: str
    compare: str
    tolerance: str
    measure: str
    scope: str
    citation: str


@dataclass
class Measured:
    """A reproduced value (None: not produced), the results file it came from and an optional note."""

    value: float | None
    source: str
    note: str = ""


def load_claims(path: str | Path | None = None) -> list[Claim]:
    """The paper's claims: the package's ``paper_claims.tsv`` (or ``path``), '#' lines are comments."""
    if path is None:
        text = resources.files("instag.report").joinpath("paper_claims.tsv").read_text(encoding="utf-8")
        where = "instag/report/paper_claims.tsv"
    else:
        text, where = Path(path).read_text(encoding="utf-8"), str(path)
    lines = [(i, ln) for i, ln in enumerate(text.splitlines(), start=1) if ln.strip() and not ln.startswith("#")]
    header = lines[0][1].split("\t")
    claims, seen = [], set()
    for lineno, ln in lines[1:]:
        cells = ln.split("\t")
        if len(cells) != len(header):
            raise InputError(where, f"{len(cells)} cells, the header has {len(header)}", lineno)
        row = dict(zip(header, cells, strict=True))
        if row["id"] in seen:
            raise InputError(where, f"duplicate claim id {row['id']}", lineno)
        seen.add(row["id"])
        if row["compare"] not in ("eq", "gt", "none"):
            raise InputError(where, f"compare must be eq, gt or none, not {row['compare']!r}", lineno)
        if row["compare"] != "none" and row["measure"] not in MEASURES:
            raise InputError(where, f"unknown measure {row['measure']!r}", lineno)
        for s in filter(None, row["scope"].split(",")):
            if s not in SCOPES:
                raise InputError(where, f"unknown scope {s!r}", lineno)
        claims.append(Claim(**{k: row[k] for k in header if k != "paper_value"}, paper_value=float(row["paper_value"])))
    return claims


# ------------------------------------------------------------------------------------------- measures


def _steps(r: Results, step: str, field: str = "tags") -> Measured | None:
    steps = r.normalization_steps
    if steps is None:
        return None
    row = steps.get(step)
    return Measured(num(row.get(field)) if row else None, "normalization_steps.tsv")


def _step_param(step: str, key: str, regex: str) -> Callable[[Results, dict], Measured | None]:
    """A normalization parameter as used: from the step's statistics file, else from the table's text."""

    def fn(r: Results, cfg: dict) -> Measured | None:
        steps = r.normalization_steps
        text = (steps or {}).get(step, {}).get("parameters", "")
        note = "scaled to the run's size (paper.md A3)" if "scaled" in text or "scale" in text else ""
        res = r.normalize_step(step)
        if res is not None:
            value = res.get(key, (res.get("params") or {}).get(key))
            if value is not None:
                return Measured(float(value), f"normalize/{step}.json", note)
        if steps is None:
            return None
        m = re.search(regex, text)
        return Measured(float(m.group(1)) if m else None, "normalization_steps.tsv", note)

    return fn


def _tagged_queries(r: Results, cfg: dict) -> Measured | None:
    rows = r.table("tagging")
    if rows is not None:
        total = next((x for x in rows if x.get("dataset") == "all"), None)
        if total is not None:
            return Measured(num(pick(total, "ok", "queries")), "tagging.tsv")
    steps = r.normalization_steps
    if steps is None:
        return None
    m = re.search(r"(\d+) tagged queries", (steps.get("raw") or {}).get("parameters", ""))
    return Measured(float(m.group(1)) if m else None, "normalization_steps.tsv")


def _quality(metric: str, field: str) -> Callable[[Results, dict], Measured | None]:
    def fn(r: Results, cfg: dict) -> Measured | None:
        rows = r.table("tag_quality")
        if rows is None:
            return None
        if metric == "total":
            return Measured(sum(num(x.get(field)) or 0 for x in rows), "tag_quality.tsv")
        row = next((x for x in rows if x.get("metric") == metric), None)
        value = num(row.get(field)) if row else None
        if value is not None and field == "rate":
            value *= 100
        return Measured(value, "tag_quality.tsv")

    return fn


def _pool(measure: str) -> Callable[[Results, dict], Measured | None]:
    def fn(r: Results, cfg: dict) -> Measured | None:
        kv = r.kv("pool")
        if kv is None:
            return None
        if measure == "datasets":
            names = [k for k in kv if k.startswith("queries_")]
            return Measured(float(len(names)), "pool.tsv")
        return Measured(num(kv.get(measure)), "pool.tsv")

    return fn


def _samples(r: Results, ablation: str) -> list[dict] | None:
    rows = r.table("samples")
    return None if rows is None else [x for x in rows if x.get("ablation") == ablation]


def main_variant(cfg: dict) -> str:
    return f"n{(cfg.get('sampling') or {}).get('size', PAPER_SAMPLE)}"


def _main_sample(field: str, ablation: str = "size") -> Callable[[Results, dict], Measured | None]:
    def fn(r: Results, cfg: dict) -> Measured | None:
        rows = _samples(r, ablation)
        if rows is None:
            return None
        row = next((x for x in rows if x.get("variant") == main_variant(cfg)), None)
        value = num(row.get(field)) if row else None
        if value is not None and field == "coverage":
            value *= 100
        return Measured(value, "samples.tsv", "" if row else f"no {ablation}/{main_variant(cfg)} row")

    return fn


def _sweep(ablation: str, field: str, how: str) -> Callable[[Results, dict], Measured | None]:
    def fn(r: Results, cfg: dict) -> Measured | None:
        rows = _samples(r, ablation)
        if rows is None:
            return None
        if how == "count":
            if not rows:
                return Measured(None, "samples.tsv", f"the {ablation} sweep has no variant")
            return Measured(float(len(rows)), "samples.tsv")
        values = [num(x.get(field)) for x in rows]
        values = [v for v in values if v is not None]
        if not values:
            return Measured(None, "samples.tsv", f"the {ablation} sweep has no variant")
        value = {"min": min, "max": max, "mean": lambda v: sum(v) / len(v)}[how](values)
        return Measured(value * 100 if field == "coverage" else value, "samples.tsv")

    return fn


def _subset_size(r: Results, cfg: dict) -> Measured | None:
    rows = r.table("samples")
    if rows is None:
        return None
    sizes = {num(x.get("size")) for x in rows if x.get("ablation") in ("complexity", "diversity")}
    if not sizes:
        return Measured(None, "samples.tsv", "no sweep variant")
    note = "" if len(sizes) == 1 else f"sizes differ: {sorted(sizes)}"
    return Measured(max(sizes), "samples.tsv", note)


def _finetune(*names: str) -> Callable[[Results, dict], Measured | None]:
    """A training setting of the main run: from finetune.tsv, else (a setting the table does not echo) from
    the config's finetune.training that the run was made with."""

    def fn(r: Results, cfg: dict) -> Measured | None:
        rows = r.table("finetune")
        if rows is None:
            return None
        main = [x for x in rows if x.get("variant") == main_variant(cfg)] or rows
        value = num(pick(main[0], *names)) if main else None
        if value is not None:
            return Measured(value, "finetune.tsv")
        training = (cfg.get("finetune") or {}).get("training") or {}
        return Measured(num(pick(training, *names)), "config finetune.training")

    return fn


def _mtbench_main(field: str) -> Callable[[Results, dict], Measured | None]:
    def fn(r: Results, cfg: dict) -> Measured | None:
        if r.mt_bench is None:
            return None
        rows = r.mtbench_rows("size", main_variant(cfg))
        if not rows:
            return Measured(None, "mt_bench.tsv", f"no size/{main_variant(cfg)} row")
        value = r.mtbench_score(rows[0]) if field == "score" else r.mtbench_std(rows[0])
        return Measured(value, "mt_bench.tsv")

    return fn


def _judge_runs(r: Results, cfg: dict) -> Measured | None:
    if r.mt_bench is None:
        return None
    rows = r.mt_bench
    return Measured(num(pick(rows[0], "repeats", "judge_runs", "runs")) if rows else None, "mt_bench.tsv")


def _mtbench_random(r: Results, cfg: dict) -> Measured | None:
    if r.mt_bench is None:
        return None
    rows = r.mtbench_rows("random", main_variant(cfg))
    return Measured(r.mtbench_score(rows[0]) if rows else None, "mt_bench.tsv")


def _beats_random(r: Results, cfg: dict) -> Measured | None:
    if r.mt_bench is None:
        return None
    base = r.mtbench_rows("random", main_variant(cfg))
    subsets = r.mtbench_rows("complexity")
    if not base or not subsets:
        return Measured(None, "mt_bench.tsv", "needs the complexity sweep and the random baseline answered")
    b = r.mtbench_score(base[0])
    scores = [r.mtbench_score(x) for x in subsets]
    wins = sum(1 for s in scores if s is not None and b is not None and s > b)
    return Measured(100.0 * wins / len(subsets), "mt_bench.tsv", f"{wins} of {len(subsets)}")


def _size_best(r: Results, cfg: dict) -> Measured | None:
    if r.mt_bench is None:
        return None
    rows = r.mtbench_rows("size")
    scored = [(num(x.get("variant", "n").lstrip("n")), r.mtbench_score(x)) for x in rows]
    scored = [(n, s) for n, s in scored if n is not None and s is not None]
    if len(scored) < 2:
        return Measured(None, "mt_bench.tsv", "needs two or more sizes answered")
    best = max(s for _, s in scored)
    first = min(n for n, s in scored if s >= best - 0.1)
    return Measured(first, "mt_bench.tsv", "smallest size within 0.1 of the best score")


def _instagger(*names: str, percent: bool = False) -> Callable[[Results, dict], Measured | None]:
    def fn(r: Results, cfg: dict) -> Measured | None:
        d = r.instagger
        if d is None:
            return None
        value = num(pick(d, *names))
        if percent and value is not None and value <= 1.0:
            value *= 100
        return Measured(value, "instagger.tsv")

    return fn


MEASURES: dict[str, Callable[[Results, dict], Measured | None]] = {
    "normalize.tags.raw": lambda r, c: _steps(r, "raw"),
    "normalize.tags.frequency": lambda r, c: _steps(r, "frequency"),
    "normalize.tags.lexical": lambda r, c: _steps(r, "lexical"),
    "normalize.tags.semantic": lambda r, c: _steps(r, "semantic"),
    "normalize.tags.final": lambda r, c: _steps(r, "association"),
    "normalize.alpha": _step_param("frequency", "alpha_used", r"alpha=(\d+)"),
    "normalize.eps": _step_param("semantic", "eps", r"eps=([0-9.eE+-]+)"),
    "normalize.min_support": _step_param("association", "min_support_used", r"min_support=(\d+)"),
    "normalize.min_confidence": _step_param("association", "min_confidence", r"min_confidence=([0-9.]+)"),
    "normalize.rules": _step_param("association", "rules_first_round", r"(\d+) rules in round 1"),
    "tagging.queries": _tagged_queries,
    "quality.cases.total": _quality("total", "judged"),
    "quality.cases.precision": _quality("precision", "judged"),
    "quality.cases.consistency": _quality("consistency", "judged"),
    "quality.precision": _quality("precision", "rate"),
    "quality.consistency": _quality("consistency", "rate"),
    "sampling.pool.datasets": _pool("datasets"),
    "sampling.pool.queries": _pool("queries"),
    "sampling.pool.tags": _pool("tags"),
    "sampling.pool.avg_tags": _pool("avg_tags_per_query"),
    "sampling.main.size": _main_sample("size"),
    "sampling.main.avg_tags": _main_sample("avg_tags_per_query"),
    "sampling.main.coverage": _main_sample("coverage"),
    "ablation.complexity.count": _sweep("complexity", "", "count"),
    "ablation.subset_size": _subset_size,
    "ablation.complexity.min_avg_tags": _sweep("complexity", "avg_tags_per_query", "min"),
    "ablation.complexity.max_avg_tags": _sweep("complexity", "avg_tags_per_query", "max"),
    "ablation.complexity.min_coverage": _sweep("complexity", "coverage", "min"),
    "ablation.random.avg_tags": _main_sample("avg_tags_per_query", "random"),
    "ablation.random.coverage": _main_sample("coverage", "random"),
    "ablation.diversity.avg_tags": _sweep("diversity", "avg_tags_per_query", "mean"),
    "ablation.diversity.min_coverage": _sweep("diversity", "coverage", "min"),
    "ablation.diversity.max_coverage": _sweep("diversity", "coverage", "max"),
    "finetune.epochs": _finetune("epochs", "num_train_epochs"),
    "finetune.batch_size": _finetune("global_batch", "batch_size", "global_batch_size"),
    "finetune.learning_rate": _finetune("learning_rate", "lr"),
    "mtbench.judge_runs": _judge_runs,
    "mtbench.main.score": _mtbench_main("score"),
    "mtbench.main.std": _mtbench_main("std"),
    "mtbench.random.score": _mtbench_random,
    "mtbench.complexity_beats_random": _beats_random,
    "mtbench.size_best": _size_best,
    "instagger.base_params": _instagger("base_params", "base_params_b"),
    "instagger.train_samples": _instagger("train_samples", "train"),
    "instagger.eval_samples": _instagger("eval_samples", "eval", "test_samples"),
    "instagger.batch_size": _instagger("batch_size", "global_batch_size"),
    "instagger.epochs": _instagger("epochs", "num_train_epochs"),
    "instagger.exact_f1": _instagger("exact_f1", "exact_micro_f1", "f1_exact", percent=True),
    "instagger.fuzzy_f1": _instagger("fuzzy_f1", "fuzzy_micro_f1", "f1_fuzzy", percent=True),
    "instagger.fuzzy_threshold": _instagger("fuzzy_threshold", "threshold"),
}


# --------------------------------------------------------------------------------------------- scopes


def _backend_name(spec) -> str:
    if not isinstance(spec, dict):
        return str(spec or "")
    model = spec.get("model")
    if spec.get("backend") == "embedded" and not model:
        return "embedded SmolLM2-135M"
    return f"{spec.get('backend', '?')}:{model}" if model else str(spec.get("backend", "?"))


def _tagger_id(r: Results, cfg: dict) -> str:
    rows = r.table("tagging") or []
    total = next((x for x in rows if x.get("dataset") == "all"), None)
    if total and total.get("model"):
        return f"{total.get('backend', '')}:{total['model']}".strip(":")
    return _backend_name((cfg.get("tagging") or {}).get("backend"))


def _is_chatgpt(name: str) -> bool:
    return bool(re.search(r"gpt-3\.5|chatgpt|gpt-35", name, re.I))


def _scope_tagging(r: Results, cfg: dict, claim: Claim) -> str:
    reasons = []
    tagger = _tagger_id(r, cfg)
    if tagger and not _is_chatgpt(tagger):
        reasons.append(f"tagger {tagger}, not ChatGPT")
    q = _tagged_queries(r, cfg)
    if q is not None and q.value is not None and q.value < 0.5 * PAPER_TAGGED:
        reasons.append(f"{q.value:,.0f} tagged queries, not ~500,000")
    return "; ".join(reasons)


def _scope_pool(r: Results, cfg: dict, claim: Claim) -> str:
    kv = r.kv("pool")
    n = num(kv.get("queries")) if kv else None
    if n is not None and abs(n - PAPER_POOL) > 0.1 * PAPER_POOL:
        return f"pool of {n:,.0f}, not 306,044"
    return ""


def _judge_of(r: Results, cfg: dict, section: str) -> str:
    if section == "quality":
        rows = r.table("tag_quality") or []
        judge = next((x["judge"] for x in rows if x.get("judge")), "")
        return judge or _backend_name((cfg.get("quality") or {}).get("judge"))
    rows = r.mt_bench or []
    keys = ("judge_reported", "judge", "judge_model")
    judge = next((str(pick(x, *keys)) for x in rows if pick(x, *keys)), "")
    return judge or _backend_name((cfg.get("mtbench") or {}).get("judge"))


def _scope_judge(r: Results, cfg: dict, claim: Claim) -> str:
    judge = _judge_of(r, cfg, claim.section)
    if re.search(r"gpt-4", judge, re.I):
        return ""
    kind = "scripted test judge" if "scripted" in judge else "demo judge"
    if claim.section != "quality" and (cfg.get("mtbench") or {}).get("judge", {}).get("demo") is False:
        kind = "judge"
    return f"{kind} ({judge}), not GPT-4" if judge else "judge unknown, not GPT-4"


def _base_model(r: Results, cfg: dict) -> str:
    for name in ("finetune", "mt_bench"):
        for row in r.table(name) or []:
            base = pick(row, "base_model", "base")
            if base:
                return str(base)
    ft = cfg.get("finetune") or {}
    return str(pick(ft.get("training") or {}, "base_model") or pick(ft, "base_model", "model") or "")


def _scope_base(pattern: str, label: str) -> Callable[[Results, dict, Claim], str]:
    def fn(r: Results, cfg: dict, claim: Claim) -> str:
        base = _base_model(r, cfg)
        if base and re.search(pattern, base, re.I):
            return ""
        return f"base model {base or 'unknown'}, not {label}"

    return fn


def _scope_sample(r: Results, cfg: dict, claim: Claim) -> str:
    n = (cfg.get("sampling") or {}).get("size")
    if n is not None and int(n) != PAPER_SAMPLE:
        return f"trained on {int(n):,} samples, not 6K"
    return ""


def _scope_tagger(r: Results, cfg: dict, claim: Claim) -> str:
    d = r.instagger or {}
    base = str(pick(d, "base_model", "base") or _backend_name((cfg.get("instagger") or {}).get("base_model")))
    reasons = []
    if not re.search(r"llama-?2.*7b", base, re.I):
        reasons.append(f"student {base or 'unknown'}, not LLaMA-2-7B")
    n = num(pick(d, "train_samples", "train"))
    if n is not None and n < 0.5 * 773_511:
        reasons.append(f"{n:,.0f} training samples, not 773,511")
    return "; ".join(reasons)


SCOPES: dict[str, Callable[[Results, dict, Claim], str]] = {
    "tagging": _scope_tagging,
    "pool": _scope_pool,
    "judge": _scope_judge,
    "base": _scope_base(r"llama(?!-?2).*13b|llama-13b", "LLaMA-13B"),
    "base2": _scope_base(r"llama-?2.*13b", "LLaMA-2-13B"),
    "sample": _scope_sample,
    "tagger": _scope_tagger,
}


# ---------------------------------------------------------------------------------------------- verdict


def tolerance_of(claim: Claim) -> float:
    t = claim.tolerance.strip()
    if not t:
        return 0.0
    if t.endswith("%"):
        return abs(claim.paper_value) * float(t[:-1]) / 100
    return float(t)


def fmt(x: float | None) -> str:
    """A number as the table shows it: integers without decimals, others to 4 significant digits."""
    if x is None:
        return ""
    if float(x).is_integer() and abs(x) < 1e15:
        return f"{int(x)}"
    return f"{x:.4g}"


def verdict(claim: Claim, measured: Measured | None, scope_reasons: list[str]) -> tuple[str, str]:
    """(verdict, reason) of one claim."""
    if claim.compare == "none":
        m = re.search(r"\(([^()]*)\)\s*$", claim.citation)
        return "out of scope", m.group(1) if m else "not produced by this workflow"
    if measured is None:
        return "not run", "its stage's table is absent"
    if measured.value is None:
        return "not run", measured.note or f"no value in {measured.source}"
    if scope_reasons:
        return "not comparable", "; ".join(scope_reasons)
    v, p = measured.value, claim.paper_value
    ok = v > p if claim.compare == "gt" else abs(v - p) <= tolerance_of(claim) + 1e-12
    note = measured.note
    if not ok and not note and not claim.scope:
        note = "this run's setting differs (config)"
    return ("matches" if ok else "differs"), note


def config_digest(config: dict, exclude: tuple[str, ...] = ("report",)) -> str:
    """sha256 of the config's canonical JSON, without the sections in ``exclude`` (which produce no number)."""
    data = {k: v for k, v in config.items() if k not in exclude}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def build(results_dir: str | Path, config: dict, config_label: str = "", claims_file=None) -> list[dict]:
    """One row per claim (see the module docstring)."""
    r = Results(results_dir)
    label = config_label or f"config sha256:{config_digest(config)[:12]}"
    rows = []
    for c in load_claims(claims_file):
        measured = MEASURES[c.measure](r, config) if c.compare != "none" else None
        reasons = [x for s in filter(None, c.scope.split(",")) if (x := SCOPES[s](r, config, c))]
        v, why = verdict(c, measured, reasons)
        rows.append(
            {
                "id": c.id,
                "paper_ref": c.paper_ref,
                "section": c.section,
                "claim": c.claim,
                "paper": c.paper_text,
                "reproduced": fmt(measured.value) if measured else "",
                "unit": c.unit,
                "tolerance": ("> paper" if c.compare == "gt" else f"± {c.tolerance or 0}")
                if c.compare != "none"
                else "",
                "verdict": v,
                "reason": why,
                "source": measured.source if measured else "",
                "config": label if measured is not None and measured.value is not None else "",
                "citation": c.citation,
            }
        )
    return rows


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(rows: list[dict], title: str = "The paper's numbers beside this run's") -> str:
    """The claims table as Markdown: a verdict count, then one table per section."""
    counts = {v: sum(1 for r in rows if r["verdict"] == v) for v in VERDICTS}
    configs = sorted({r["config"] for r in rows if r["config"]})
    out = [f"# {title}", ""]
    out.append("Produced by: " + (", ".join(f"`{c}`" for c in configs) if configs else "no stage has run"))
    out.append("")
    out.append(" · ".join(f"**{n}** {v}" for v, n in counts.items()))
    out.append("")
    out.append(
        "Paper values and citations: `src/instag/report/paper_claims.tsv` (source keys as in `../shared/paper.md` §0). "
        "*not comparable*: the run's set-up differs from the paper's (reason given); *not run*: the stage's table "
        "is absent; *out of scope*: not something this workflow produces."
    )
    sections: list[str] = []
    for r in rows:
        if r["section"] not in sections:
            sections.append(r["section"])
    for s in sections:
        out += ["", f"## {s}", "", "| claim | paper | reproduced | tolerance | verdict | reason | source |"]
        out.append("|---|---|---|---|---|---|---|")
        for r in rows:
            if r["section"] != s:
                continue
            rep = f"{r['reproduced']} {r['unit']}".strip() if r["reproduced"] else "—"
            cells = [
                f"{r['claim']} ({r['paper_ref']})",
                f"{r['paper']} {r['unit']}",
                rep,
                r["tolerance"],
                r["verdict"],
                r["reason"],
                r["citation"],
            ]
            out.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
    return "\n".join(out) + "\n"


def write(results_dir, config: dict, out_tsv, out_md, config_label: str = "") -> dict:
    rows = build(results_dir, config, config_label)
    write_tsv(out_tsv, rows, COLUMNS)
    with atomic_write(out_md) as fh:
        fh.write(render_markdown(rows))
    counts = {v: sum(1 for r in rows if r["verdict"] == v) for v in VERDICTS}
    log.info("claims: %s", counts)
    return {"claims": len(rows), **counts}
