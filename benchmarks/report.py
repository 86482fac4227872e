"""Speed and size of the tag explorer at the paper's scale (synthetic): 10K tags, 300K queries, 100K raw tags.

Prints the time to build the page (python), its size, and - where Chromium, chromedriver and selenium are
installed - the time the page takes to open and to filter the tag list in headless Chromium.

    .venv/bin/python benchmarks/report.py [--tags 10000] [--queries 300000] [--raw 100000]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from instag.report import browser, explorer


def make(folder: Path, n_tags: int, n_queries: int, n_raw: int, seed: int = 0) -> tuple[Path, Path, list[Path]]:
    rng = random.Random(seed)
    tags = [f"tag {i} {rng.choice(['writing', 'math', 'code', 'travel', 'health', 'history'])}" for i in range(n_tags)]
    cum, total = [], 0.0
    for i in range(n_tags):  # Zipf, as cumulative weights (choices() would re-sum 10K weights per call)
        total += 1.0 / (i + 1)
        cum.append(total)
    datasets = [f"ds{k}" for k in range(12)]
    normalized, records = folder / "normalized.jsonl", folder / "records.jsonl"
    with open(normalized, "w") as fn, open(records, "w") as fr:
        for i in range(n_queries):
            d = datasets[i % len(datasets)]
            t = sorted(set(rng.choices(tags, cum_weights=cum, k=1 + i % 7)))
            rid = f"{d}-{i:016x}"
            fn.write(json.dumps({"id": rid, "dataset": d, "tags": t, "queries": [t], "status": "ok"}) + "\n")
            text = f"Query {i} about {t[0]} " + "lorem ipsum " * (5 + i % 30)
            fr.write(json.dumps({"id": rid, "dataset": d, "turns": [{"role": "user", "content": text}]}) + "\n")
    mapping = folder / "tag_mapping.tsv"
    with open(mapping, "w") as fh:
        steps = ["frequency", "lexical", "semantic", "association"]
        fh.write("raw_tag\tcount\tcanonical\tstatus\tstep\t" + "\t".join(f"after_{s}" for s in steps) + "\n")
        for j in range(n_raw):
            canon = tags[j % n_tags] if j % 10 else ""
            raw = canon.upper() + f" v{j}" if canon else f"rare {j}"
            after = [raw.lower(), raw.lower(), canon, canon] if canon else ["", "", "", ""]
            status = "merged" if canon else "dropped"
            fh.write(f"{raw}\t{1 + j % 50}\t{canon}\t{status}\tlexical\t" + "\t".join(after) + "\n")
    return mapping, normalized, [records]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tags", type=int, default=10_000)
    ap.add_argument("--queries", type=int, default=300_000)
    ap.add_argument("--raw", type=int, default=100_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        t = time.perf_counter()
        mapping, normalized, records = make(folder, args.tags, args.queries, args.raw)
        print(f"synthetic inputs: {time.perf_counter() - t:.1f} s")
        t = time.perf_counter()
        out = explorer.write(mapping, normalized, records, folder / "explorer.html")
        print(
            f"build: {time.perf_counter() - t:.1f} s, {out['tags']} tags, {out['examples']} example texts, "
            f"{out['bytes'] / 1e6:.1f} MB"
        )
        chrome = browser.find_chromium()
        try:
            from selenium import webdriver
            from selenium.webdriver.chrome.service import Service
        except ImportError:
            print("browser timing skipped: selenium not installed")
            return
        if chrome is None:
            print("browser timing skipped: no chromium")
            return
        opts = webdriver.ChromeOptions()
        opts.binary_location = chrome
        for flag in browser.FLAGS:
            opts.add_argument(flag)
        opts.add_argument(f"--user-data-dir={folder / 'profile'}")
        drv = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
        try:
            t = time.perf_counter()
            drv.get((folder / "explorer.html").as_uri())
            while not drv.execute_script("return window.explorerReady === true"):
                time.sleep(0.05)
            print(f"open in chromium: {time.perf_counter() - t:.2f} s")
            timings = drv.execute_script(
                """const s = document.getElementById('search'); const out = {};
                   for (const q of ['', 'math', 'tag 12', 'v999', 'zzz']) {
                     s.value = q; const t0 = performance.now(); window.explorerFilter();
                     out[q || '(all)'] = [performance.now() - t0, document.querySelectorAll('#list li').length]; }
                   return out;"""
            )
            for q, (ms, rows) in timings.items():
                print(f"search {q!r}: filter and redraw {ms:.1f} ms, {rows} rows shown")
            drv.execute_script("document.getElementById('search').value = ''; window.explorerFilter();")
            t = time.perf_counter()
            drv.find_elements("css selector", "#list li")[0].click()
            drv.find_element("id", "tag-name")
            print(f"click the top tag: {1000 * (time.perf_counter() - t):.0f} ms (webdriver round trip included)")
        finally:
            drv.quit()


if __name__ == "__main__":
    main()
