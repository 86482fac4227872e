"""notebooks/findings.ipynb runs headless (nbclient) on the small results fixture and reports its findings."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from instag.report import claims, provenance
from tests.conftest import REPO

FIXTURE = REPO / "tests" / "data" / "report" / "results"
NOTEBOOK = REPO / "notebooks" / "findings.ipynb"


@pytest.mark.slow
def test_notebook_runs_on_the_fixture(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat", reason="the report extra (nbformat) is not installed")
    nbclient = pytest.importorskip("nbclient", reason="the report extra (nbclient) is not installed")
    pytest.importorskip("ipykernel", reason="the report extra (ipykernel) is not installed")
    results = tmp_path / "results"
    shutil.copytree(FIXTURE, results)
    claims.write(results, {}, results / "tables" / "claims.tsv", results / "report" / "claims.md", "fixture")
    provenance.sweeps_table(results, {"sampling": {"size": 12}}, results / "tables" / "sweeps.tsv")
    monkeypatch.setenv("INSTAG_RESULTS", str(results))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    text = "\n".join(
        out.get("text", "") + str(out.get("data", {}).get("text/plain", ""))
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
    )
    errors = [out for cell in nb.cells for out in cell.get("outputs", []) if out.get("output_type") == "error"]
    assert not errors, errors
    assert "mt_bench.tsv: not run" in text  # a stage absent from the fixture is reported, not a crash
    assert "final vocabulary: 8 tags from 16 raw ones" in text
    assert "most diverse:" in text
    assert "N=12: Algorithm 1 2.10 tags/query at 100% coverage; random 1.60 at 71%" in text
    assert "not comparable" in text
    Path(tmp_path / "executed.ipynb").write_text(nbformat.writes(nb))
