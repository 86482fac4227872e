"""Algorithm 1 and the decoupled ablations on small hand-made and synthetic pools (src/instag/sampling/)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from instag import sampling
from instag.errors import InputError
from instag.io import read_tsv
from instag.sampling import (
    Pool,
    UnreachableTarget,
    algorithms,
    complexity_first,
    constrained,
    ranked_order,
    uniform_random,
)
from instag.synthetic import pool_arrays


def make_pool(tag_lists, datasets=None) -> Pool:
    datasets = datasets or ["d"] * len(tag_lists)
    return Pool.from_records((f"q{i}", ds, tags) for i, (ds, tags) in enumerate(zip(datasets, tag_lists, strict=True)))


def synthetic(n=4000, n_tags=300, seed=0, dispersion=1.2, mean_tags=4.5) -> Pool:
    """A synthetic pool (instag.synthetic) whose tag set is the tags its queries carry."""
    pa = pool_arrays(n, n_tags, seed, dispersion=dispersion, mean_tags=mean_tags)
    used = np.unique(pa.indices)
    remap = np.full(n_tags, -1, dtype=np.int32)
    remap[used] = np.arange(used.size, dtype=np.int32)
    codes = (np.arange(n) % 3).astype(np.int16)
    names = [pa.names[i] for i in used]
    return Pool([f"s{i}" for i in range(n)], ["a", "b", "c"], codes, names, pa.indptr, remap[pa.indices])


def naive_algorithm1(pool: Pool, n: int, seed: int) -> list[int]:
    """The paper's pseudo-code, literally, over the same seeded order (the reference for the vectorised one)."""
    order = list(ranked_order(-pool.counts.astype(np.int64), seed))
    tags = {i: set(pool.tags_of(i).tolist()) for i in range(pool.size)}
    chosen: list[int] = []
    while len(chosen) < n:
        covered: set[int] = set()
        added = False
        for q in list(order):
            if len(chosen) == n:
                break
            if len(covered | tags[q]) > len(covered):
                chosen.append(q)
                covered |= tags[q]
                order.remove(q)
                added = True
        if not added:
            chosen.extend(order[: n - len(chosen)])
            break
    return chosen


# --------------------------------------------------------------------------------------------- Algorithm 1


def test_first_pick_has_the_most_tags():
    pool = make_pool([["a"], ["a", "b"], ["b", "c", "d", "e"], ["c"], ["a", "b", "c"]])
    sel, _ = complexity_first(pool, 1)
    assert sel.tolist() == [2]
    sel, _ = complexity_first(pool, 5, seed=3)
    assert pool.counts[sel[0]] == pool.counts.max()


def test_query_adding_no_new_tag_is_skipped_within_a_pass():
    # q1 = {a, b} adds nothing after q0 = {a, b, c}; q2 = {d} adds d
    pool = make_pool([["a", "b", "c"], ["a", "b"], ["d"]])
    sel, info = complexity_first(pool, 2)
    assert sel.tolist() == [0, 2]
    assert info["passes"] == 1


def test_passes_repeat_with_coverage_reset_until_n():
    # nested tag sets: each query's tags lie within the previous one's, so a pass keeps only its first query
    pool = make_pool([["x", "a"], ["x"], ["x", "a", "b", "c"], ["x", "a", "b"]])
    sel, info = complexity_first(pool, 4)
    assert sel.tolist() == [2, 3, 0, 1]
    assert info["passes"] == 4 and info["kept_per_pass"] == [1, 1, 1, 1]


def test_stops_mid_pass_at_n():
    pool = make_pool([["a", "b", "c"], ["d", "e"], ["f"], ["g"], ["a"]])
    sel, info = complexity_first(pool, 3, seed=0)
    assert len(sel) == 3 and sel[:2].tolist() == [0, 1]
    assert pool.counts[sel[2]] == 1 and sel[2] in (2, 3)  # f or g, in seeded order; never q4 (adds nothing)
    assert info["kept_per_pass"] == [3]


def test_pass_adding_nothing_fills_in_sorted_order():
    pool = make_pool([["a"], [], [], ["a", "b"], []])
    sel, info = complexity_first(pool, 5, seed=1)
    assert sel[:2].tolist() == [3, 0]
    assert sorted(sel[2:].tolist()) == [1, 2, 4]
    assert info["filled"] == 3


def test_ties_are_broken_by_the_seed_reproducibly():
    pool = make_pool([[f"t{i}"] for i in range(30)])
    a, _ = complexity_first(pool, 10, seed=7)
    b, _ = complexity_first(pool, 10, seed=7)
    c, _ = complexity_first(pool, 10, seed=8)
    assert a.tolist() == b.tolist()
    assert a.tolist() != c.tolist()


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("n", [1, 37, 150, 600])
def test_vectorised_algorithm1_matches_the_pseudo_code(seed, n):
    pool = synthetic(n=700, n_tags=120, seed=seed)
    sel, _ = complexity_first(pool, n, seed=seed)
    assert sel.tolist() == naive_algorithm1(pool, n, seed)


def test_algorithm1_larger_than_pool_fails_with_reach():
    pool = make_pool([["a"], ["b"]])
    with pytest.raises(UnreachableTarget, match="at most 2"):
        complexity_first(pool, 3)


def test_algorithm1_on_synthetic_pool_covers_everything_and_is_complex():
    pool = synthetic()
    sel, info = complexity_first(pool, 600)
    m = pool.measure(sel)
    assert m["size"] == 600 and len(set(sel.tolist())) == 600
    assert m["coverage"] == 1.0
    assert m["avg_tags_per_query"] > 2 * pool.counts.mean()
    assert info["passes"] >= 2


# --------------------------------------------------------------------------------------------- the sweeps


def naive_cover(pool: Pool, order, k_tags):
    covered: set[int] = set()
    kept = []
    for q in order:
        new = set(pool.tags_of(q).tolist()) - covered
        if new and len(covered) + len(new) <= k_tags:
            kept.append(int(q))
            covered |= new
            if len(covered) == k_tags:
                break
    return kept, covered


@pytest.mark.parametrize("coverage", [0.3, 0.55, 0.8, 1.0])
@pytest.mark.parametrize("target", [2.0, 5.0, 9.0])
def test_cover_matches_the_sequential_definition(coverage, target):
    pool = synthetic(n=800, n_tags=150, seed=4)
    order = ranked_order(np.abs(pool.counts - target), 0)
    rank = np.empty(pool.size, dtype=np.int64)
    rank[order] = np.arange(pool.size)
    k = round(coverage * pool.n_tags)
    kept, in_u, _ = algorithms._cover(pool, order, rank, k)
    ref_kept, ref_cov = naive_cover(pool, order, k)
    assert kept.tolist() == ref_kept
    assert set(np.flatnonzero(in_u).tolist()) == ref_cov


def test_fill_levels_hits_the_sum():
    hist = np.array([0, 10, 10, 5, 1, 0, 2])
    take, diff = algorithms._fill_levels(hist, 12, 35)
    assert diff == 0 and take.sum() == 12 and (take * np.arange(7)).sum() == 35 and (take <= hist).all()
    take, diff = algorithms._fill_levels(hist, 5, 40)  # the 5 largest sum to only 6+6+4+3+3 = 22
    assert diff == 40 - 22


def test_diversity_variants_differ_in_coverage_at_fixed_size_and_complexity():
    pool = synthetic()
    tol_c, tol_k = 0.01, 0.05
    got = []
    for cov in (0.45, 0.6, 0.75, 0.9, 1.0):
        sel, _ = constrained(pool, 400, cov, 5.0, seed=0, tol_coverage=tol_c, tol_complexity=tol_k)
        m = pool.measure(sel)
        assert m["size"] == 400 and len(set(sel.tolist())) == 400
        assert abs(m["coverage"] - cov) <= tol_c
        assert abs(m["avg_tags_per_query"] - 5.0) <= tol_k
        got.append(m["coverage"])
    assert got == sorted(got) and got[-1] - got[0] > 0.5


def test_complexity_variants_differ_in_tags_at_fixed_size_and_full_coverage():
    pool = synthetic()
    got = []
    for k in np.linspace(6.0, 11.0, 4):
        sel, _ = constrained(pool, 400, 1.0, float(k), seed=0, tol_coverage=0.0, tol_complexity=0.05)
        m = pool.measure(sel)
        assert m["size"] == 400 and m["coverage"] == 1.0
        assert abs(m["avg_tags_per_query"] - k) <= 0.05
        got.append(m["avg_tags_per_query"])
    assert got == sorted(got) and got[-1] - got[0] > 4.5


def test_cover_order_is_retried_when_the_first_misses():
    # here the cover ordered toward 2.5 tags leaves a fill that cannot reach 2.5; another order can
    pool = synthetic(n=480, n_tags=150, dispersion=1.5, mean_tags=3.0)
    sel, info = constrained(pool, 120, 0.3, 2.5, seed=0, tol_coverage=0.03, tol_complexity=0.1)
    m = pool.measure(sel)
    assert info["attempts"] > 1 and info["cover_ordered_toward"] != 2.5
    assert abs(m["coverage"] - 0.3) <= 0.03 and abs(m["avg_tags_per_query"] - 2.5) <= 0.1 and m["size"] == 120


def test_sweeps_keep_only_tags_within_the_cover():
    pool = synthetic()
    sel, info = constrained(pool, 300, 0.5, 4.0, seed=2)
    chosen = set(sel.tolist())
    assert len(chosen) == 300 and info["cover_size"] + info["fill_size"] == 300
    covered = {t for q in sel for t in pool.tags_of(q).tolist()}
    assert len(covered) == pool.measure(sel)["tags_covered"]


def test_unreachable_complexity_fails_with_what_the_pool_reaches():
    pool = synthetic()
    with pytest.raises(UnreachableTarget) as exc:
        constrained(pool, 400, 1.0, 30.0)
    msg = str(exc.value)
    assert "30 tags per query" in msg and "can range over [" in msg and "the pool reaches [" in msg
    lo, hi = sampling.complexity_reach(pool, 400, 1.0)
    assert f"{hi:.3f}" in msg and hi < 30


def test_unreachable_coverage_fails_with_what_the_pool_reaches():
    pool = synthetic()
    with pytest.raises(UnreachableTarget, match=r"more than 40; 40 queries of that cover reach coverage 0\.\d+"):
        constrained(pool, 40, 1.0, 5.0)


def test_too_few_queries_within_the_cover_fails_with_the_reachable_size():
    pool = make_pool([["a", "b"], ["a"], ["b", "c"], ["c", "d"], ["d"]])
    with pytest.raises(UnreachableTarget, match="reaches at most size"):
        constrained(pool, 4, 0.5, 1.5, tol_coverage=0.0, tol_complexity=0.5)


def test_random_baseline_is_nested_and_seeded():
    pool = synthetic()
    a = uniform_random(pool, 100, seed=5)
    b = uniform_random(pool, 300, seed=5)
    assert b[:100].tolist() == a.tolist() and len(set(b.tolist())) == 300
    assert uniform_random(pool, 100, seed=6).tolist() != a.tolist()
    with pytest.raises(UnreachableTarget):
        uniform_random(pool, pool.size + 1)


# --------------------------------------------------------------------------------------------- files


def write_normalized(path, n=1500, seed=0):
    pa = pool_arrays(n, 200, seed, dispersion=1.2)
    names = ["alpha", "beta", "gamma"]
    with open(path, "w") as fh:
        for i, tags in enumerate(pa.to_lists()):
            rec = {"id": f"r{i}", "dataset": names[i % 3], "tags": sorted(tags)}
            if i % 50 == 7:
                rec = {"id": f"r{i}", "dataset": names[i % 3], "tags": [], "status": "untagged"}
            fh.write(json.dumps(rec) + "\n")
    return path


def run_stage(root, tags):
    out = root / "samples"
    sampling.build_pool(tags, out / "pool.jsonl", out / "pool.stats.json", root / "pool.tsv", ["alpha", "beta"])
    stats = []
    specs = [
        ("complexity", "tags6", 150, 1.0, 6.0),
        ("diversity", "cov60", 150, 0.6, 4.0),
        ("size", "n150", 150, None, None),
        ("random", "n150", 150, None, None),
    ]
    for ablation, variant, size, cov, cpx in specs:
        st = out / ablation / f"{variant}.stats.json"
        sampling.select(
            out / "pool.jsonl",
            ablation,
            variant,
            size,
            out / ablation / f"{variant}.jsonl",
            st,
            coverage=cov,
            complexity=cpx,
            seed=3,
            tol_coverage=0.02,
            tol_complexity=0.05,
        )
        stats.append(st)
    sampling.summarize(stats, root / "samples.tsv")
    sampling.plot(root / "samples.tsv", root / "fig.png", root / "fig.pdf")
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_stage_outputs_are_byte_identical(tmp_path):
    tags = write_normalized(tmp_path / "normalized.jsonl")
    a = run_stage(tmp_path / "a", tags)
    b = run_stage(tmp_path / "b", tags)
    assert [p.relative_to(tmp_path / "a") for p in a] == [p.relative_to(tmp_path / "b") for p in b]
    assert len(a) == 14
    for pa_, pb in zip(a, b, strict=True):
        assert pa_.read_bytes() == pb.read_bytes(), pa_.name


def test_pool_and_table_contents(tmp_path):
    tags = write_normalized(tmp_path / "normalized.jsonl")
    run_stage(tmp_path, tags)
    stats = json.loads((tmp_path / "samples" / "pool.stats.json").read_text())
    n_untagged = sum(1 for i in range(1500) if i % 50 == 7 and i % 3 in (0, 1))
    assert stats["queries"] == 1000 - n_untagged and stats["untagged_left_out"] == n_untagged
    assert stats["datasets"] == ["alpha", "beta"] and stats["datasets_not_pooled"] == ["gamma"]
    pool_rows = read_tsv(tmp_path / "pool.tsv")
    assert pool_rows[0] == {"measure": "queries", "this_run": str(stats["queries"]), "paper": "306044"}
    assert pool_rows[1]["paper"] == "6398" and pool_rows[2]["paper"] == "4.48"
    rows = {r["ablation"]: r for r in read_tsv(tmp_path / "samples.tsv")}
    assert list(rows) == ["complexity", "diversity", "size", "random"]
    for r in rows.values():
        assert int(r["size"]) == 150 and int(r["n_alpha"]) + int(r["n_beta"]) == 150
    assert abs(float(rows["diversity"]["coverage"]) - 0.6) <= 0.02
    assert abs(float(rows["complexity"]["avg_tags_per_query"]) - 6.0) <= 0.05
    # the random baseline's reported stats are those of its file
    recs = [json.loads(x) for x in (tmp_path / "samples" / "random" / "n150.jsonl").read_text().splitlines()]
    assert len(recs) == 150 and {r["dataset"] for r in recs} <= {"alpha", "beta"}
    avg = sum(len(r["tags"]) for r in recs) / 150
    assert float(rows["random"]["avg_tags_per_query"]) == pytest.approx(avg, rel=1e-5)
    n_tags = int(rows["random"]["pool_tags"])
    cov = len({t for r in recs for t in r["tags"]}) / n_tags
    assert float(rows["random"]["coverage"]) == pytest.approx(cov, rel=1e-5)
    assert (tmp_path / "fig.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "fig.pdf").stat().st_size > 0


def test_select_failure_writes_nothing(tmp_path):
    tags = write_normalized(tmp_path / "normalized.jsonl")
    out = tmp_path / "samples"
    sampling.build_pool(tags, out / "pool.jsonl", out / "pool.stats.json", tmp_path / "pool.tsv")
    with pytest.raises(UnreachableTarget, match="tags per query"):
        sampling.select(
            out / "pool.jsonl",
            "complexity",
            "tags40",
            100,
            out / "x.jsonl",
            out / "x.stats.json",
            coverage=1.0,
            complexity=40.0,
        )
    assert not (out / "x.jsonl").exists() and not (out / "x.stats.json").exists()


def test_bad_tag_records_are_named(tmp_path):
    p = tmp_path / "normalized.jsonl"
    p.write_text('{"id": "a", "dataset": "x", "tags": ["t"]}\n{"id": "b", "dataset": "x"}\n')
    with pytest.raises(InputError, match=r"normalized.jsonl:2: not a normalized record line: has no 'tags'"):
        sampling.read_tag_records(p)
    p.write_text('{"id": "a", "dataset": "x", "tags": ["t"]}\n{"id": "a", "dataset": "x", "tags": ["u"]}\n')
    with pytest.raises(InputError, match=r":2: record id 'a' repeats the one on line 1"):
        sampling.read_tag_records(p)
    p.write_text('{"id": "a", "dataset": "x", "tags": "t"}\n')
    with pytest.raises(InputError, match=":1: not a normalized record line: 'tags' is str, expected list"):
        sampling.read_tag_records(p)
    p.write_text('{"id": "a", "dataset": "x", "tags": ["t", 3]}\n')
    with pytest.raises(InputError, match="'tags' is not a list of strings"):
        sampling.read_tag_records(p)
    p.write_text('{"id": "a", "dataset": "x", "tags": ["t"]}\n')
    with pytest.raises(InputError, match="no records of the pool dataset.s. y; datasets present: x"):
        sampling.read_tag_records(p, ["x", "y"])


# --------------------------------------------------------------------------------------------- the planner


def _section(**over):
    section = {
        "size": 60,
        "ablations": {
            "complexity": {"size": 60, "coverage": 0.5, "levels": {"min": 1.0, "max": 1.6, "steps": 3}},
            "diversity": {"size": 60, "avg_tags": 1.0, "levels": {"min": 0.3, "max": 0.5, "steps": 3}},
            "size": {"sizes": [30, 120]},
            "random": {"sizes": [120, 30, 30]},
        },
    }
    section.update(over)
    return section


def test_plan_names_values_and_targets():
    from instag.sampling.plan import plan_variants

    plan = plan_variants(_section())
    assert [v.name for v in plan["complexity"]] == ["tags1", "tags1.3", "tags1.6"]
    assert [(v.size, v.coverage, v.complexity) for v in plan["complexity"]] == [
        (60, 0.5, 1.0),
        (60, 0.5, 1.3),
        (60, 0.5, 1.6),
    ]
    assert [v.name for v in plan["diversity"]] == ["cov0.3", "cov0.4", "cov0.5"]
    assert [v.coverage for v in plan["diversity"]] == [0.3, 0.4, 0.5]
    assert {v.complexity for v in plan["diversity"]} == {1.0}
    # the main selection's N is always a size variant; repeated sizes plan one file
    assert [v.name for v in plan["size"]] == ["n30", "n60", "n120"]
    assert [v.value for v in plan["random"]] == ["30", "120"]
    # a wildcard value parses back to the target the rule passes on
    assert all(float(v.value) == v.complexity for v in plan["complexity"])


def test_plan_zero_steps_is_off_and_bad_levels_name_the_key():
    from instag.errors import ConfigError
    from instag.sampling.plan import plan_variants

    section = _section()
    section["ablations"]["diversity"]["levels"]["steps"] = 0
    assert plan_variants(section)["diversity"] == []
    section["ablations"]["complexity"]["levels"] = {"min": 3.0, "max": 2.0, "steps": 2}
    with pytest.raises(ConfigError, match=r"sampling.ablations.complexity.levels.*max 2.0 is below min 3.0"):
        plan_variants(section)
    section["ablations"]["complexity"]["levels"] = {"min": 1.0, "max": 1.00001, "steps": 3}
    with pytest.raises(ConfigError, match="same variant name"):
        plan_variants(section)
