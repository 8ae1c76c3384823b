"""The notebooks run top to bottom on one freshly built demo collection (one per job: the quickstart's
search, discovery, fine-tuning)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).parents[1] / "notebooks"


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """GALSEARCH_HOME of the kernels: the first notebook builds the demo there, the others reuse it."""
    return tmp_path_factory.mktemp("galsearch-home")


def run(name: str, home: Path, monkeypatch) -> nbformat.NotebookNode:
    """The notebook ``name``, executed in a folder of its own."""
    monkeypatch.setenv("GALSEARCH_HOME", str(home))
    folder = home / name
    folder.mkdir()
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": folder}}
    ).execute()
    return notebook


def texts(notebook: nbformat.NotebookNode) -> str:
    """The text of every output of the notebook's code cells."""
    return "\n".join(
        output.get("text", "") + str(output.get("data", {}).get("text/plain", ""))
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )


@pytest.mark.slow
def test_quickstart_notebook_runs(home, monkeypatch):
    notebook = run("quickstart.ipynb", home, monkeypatch)
    outputs = texts(notebook)
    assert "stored 4 galaxies" in outputs and "broken.png" in outputs
    assert any("image/png" in output.get("data", {}) for output in notebook.cells[-1].outputs)


@pytest.mark.slow
def test_discover_notebook_runs(home, monkeypatch):
    outputs = texts(run("discover.ipynb", home, monkeypatch))
    assert "rings among the first 40 galaxies shown" in outputs and "rings among its 20 candidates" in outputs


@pytest.mark.slow
def test_finetune_notebook_runs(home, monkeypatch):
    outputs = texts(run("finetune.ipynb", home, monkeypatch))
    assert "mergers among the 30 candidates" in outputs and "quality" in outputs
