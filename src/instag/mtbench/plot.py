"""Figures of the MT-Bench results, mirroring the paper's (Figure 4a/4b, the size ablation, Figure 3's radar).

Each reads ``results/tables/mt_bench.tsv`` (and the per-category table for the radar): one point per model
with its bootstrap interval as error bar, the random baselines drawn as their own markers and a dashed line,
the untuned base model as a dotted line. With several seeds the ``seed = mean`` rows are drawn. The judge is
named in every title; a demo judge is labelled as not comparable to GPT-4. PNG and PDF, byte-stable
(no timestamps in the files).
"""

from __future__ import annotations

import math
from pathlib import Path

from ..io import read_tsv

SWEEPS = {
    "complexity": ("tags_per_query", "average tags per query (complexity sweep)"),
    "diversity": ("coverage", "tag coverage of the pool (diversity sweep)"),
    "size": ("size", "training samples (size ablation)"),
}


def _f(x) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def pick(rows: list[dict]) -> list[dict]:
    """Rows to draw: a variant's ``seed = mean`` row where it has one, else its single-seed rows."""
    with_mean = {(r["ablation"], r["variant"]) for r in rows if r["seed"] == "mean"}
    return [r for r in rows if r["seed"] == "mean" or (r["ablation"], r["variant"]) not in with_mean]


def _title(base: str, rows: list[dict]) -> str:
    judges = sorted({r["judge"] for r in rows if r.get("judge")})
    notes = sorted({r["judge_note"] for r in rows if r.get("judge_note")})
    t = f"{base}\njudge: {', '.join(judges) or '?'}"
    return t + (f" ({'; '.join(notes)})" if notes else "")


def _save(fig, stem: Path) -> list[str]:
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for ext, meta in (("png", {"Software": None}), ("pdf", {"CreationDate": None, "Producer": None})):
        path = stem.with_suffix(f".{ext}")
        fig.savefig(path, dpi=120, bbox_inches="tight", metadata=meta)
        out.append(str(path))
    return out


def _errbars(ax, pts, **kw):
    xs = [p[0] for p in pts]
    ys = [p[1] for p in pts]
    lo = [max(0.0, p[1] - p[2]) if not math.isnan(p[2]) else 0.0 for p in pts]
    hi = [max(0.0, p[3] - p[1]) if not math.isnan(p[3]) else 0.0 for p in pts]
    ax.errorbar(xs, ys, yerr=[lo, hi], capsize=3, **kw)


def sweep_figure(rows: list[dict], ablation: str, stem: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key, label = SWEEPS[ablation]
    drawn = pick(rows)
    mine = sorted(
        ((_f(r[key]), _f(r["overall"]), _f(r["ci_low"]), _f(r["ci_high"])) for r in drawn if r["ablation"] == ablation),
        key=lambda p: p[0],
    )
    sizes = {r["size"] for r in drawn if r["ablation"] == ablation}
    rand = sorted(
        (
            (_f(r[key]), _f(r["overall"]), _f(r["ci_low"]), _f(r["ci_high"]), r["variant"])
            for r in drawn
            if r["ablation"] == "random" and (ablation == "size" or r["size"] in sizes)
        ),
        key=lambda p: p[0],
    )
    base = [r for r in drawn if not r["ablation"]]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    if mine:
        _errbars(ax, mine, fmt="o-", color="tab:blue", label=f"{ablation} subsets")
    if rand:
        _errbars(
            ax,
            [p[:4] for p in rand],
            fmt="s--" if ablation == "size" else "s",
            color="tab:red",
            label="random baseline",
        )
        if ablation != "size":
            for p in rand:
                ax.axhline(p[1], color="tab:red", ls="--", lw=0.8)
    for r in base:
        ax.axhline(_f(r["overall"]), color="gray", ls=":", lw=1, label=f"{r['model']} (untuned)")
    if not (mine or rand):
        ax.text(0.5, 0.5, f"no {ablation} models judged", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel(label)
    ax.set_ylabel("MT-Bench score (1-10)")
    ax.set_title(_title(f"MT-Bench vs {label.split(' (')[0]}", rows), fontsize=9)
    if ablation == "size" and mine:
        ax.set_xscale("log")
    if mine or rand or base:
        ax.legend(fontsize=8)
    fig.tight_layout()
    out = _save(fig, stem)
    plt.close(fig)
    return out


def radar_figure(rows: list[dict], cat_rows: list[dict], stem: Path, max_models: int = 8) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from .data import CATEGORIES

    models = [r["model"] for r in rows if r["seed"] != "mean"]
    # base first, then the size ablation and random baselines, then the rest, up to max_models
    order = sorted(models, key=lambda m: (m != "base", not m.startswith(("size/", "random/")), m))[:max_models]
    cats = [c for c in CATEGORIES if any(r["category"] == c for r in cat_rows)]
    fig = plt.figure(figsize=(6, 6))
    ax = fig.add_subplot(111, polar=True)
    if cats:
        angles = np.linspace(0, 2 * np.pi, len(cats), endpoint=False).tolist()
        for m in order:
            vals = {r["category"]: _f(r["overall"]) for r in cat_rows if r["model"] == m}
            ys = [vals.get(c, math.nan) for c in cats]
            ax.plot([*angles, angles[0]], [*ys, ys[0]], marker="o", ms=3, lw=1, label=m)
        ax.set_xticks(angles)
        ax.set_xticklabels(cats, fontsize=8)
    ax.set_ylim(0, 10)
    ax.set_title(_title("MT-Bench per category", rows), fontsize=9)
    ax.legend(fontsize=7, loc="upper right", bbox_to_anchor=(1.35, 1.1))
    out = _save(fig, stem)
    plt.close(fig)
    return out


def plot_all(table: str | Path, category_table: str | Path, out_dir: str | Path, prefix: str = "mt_bench") -> dict:
    rows = read_tsv(table)
    cat_rows = read_tsv(category_table)
    out_dir = Path(out_dir)
    files = []
    for ablation in SWEEPS:
        files += sweep_figure(rows, ablation, out_dir / f"{prefix}_{ablation}")
    files += radar_figure(rows, cat_rows, out_dir / f"{prefix}_radar")
    return {"figures": files}
