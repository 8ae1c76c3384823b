"""The manual builds strictly (no broken link, anchor or API reference), and the README stays a front page."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
COMMANDS = (
    "make demo   # set up .venv, build the demo collection, embed it, serve the web app on "
    "http://127.0.0.1:7860",
    "make test   # set up .venv and run the test suite (what CI runs: .ci/run)",
)
LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The manual, built with ``mkdocs build --strict`` from the repository's top into a temporary folder."""
    out = tmp_path_factory.mktemp("site")
    build = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)]
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(build, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"
    return out


def test_the_manual_builds_strictly_with_every_guide(site):
    for page in ("getting-started", "search", "discover", "classifier", "map", "fetch", "samp", "bands"):
        assert (site / page / "index.html").is_file(), page
    for page in ("scale", "serving", "security", "collection-format", "benchmarks"):
        assert (site / page / "index.html").is_file(), page


def test_the_api_reference_is_generated_from_the_docstrings(site):
    top = (site / "api" / "galsearch" / "index.html").read_text()
    for name in ("ingest", "embed", "build_index", "search", "Discovery", "train_classifier", "map_figure"):
        assert f'id="galsearch.{name}"' in top, name
    embedder = (site / "api" / "embedder" / "index.html").read_text()
    for name in ("open_collection", "embed.embed", "ingest.ingest", "fetch.fetch"):
        assert f'id="galsearch.embedder.{name}"' in embedder, name
    assert 'id="galsearch.index.search"' in (site / "api" / "search-index" / "index.html").read_text()
    assert 'id="galsearch.anomaly.RatingsStore"' in (site / "api" / "anomaly" / "index.html").read_text()
    training = (site / "api" / "training" / "index.html").read_text()
    for name in ("finetune.finetune", "pretrain.pretrain", "read_labels"):
        assert f'id="galsearch.embedder.training.{name}"' in training, name


def test_the_benchmark_figures_are_in_the_manual(site):
    page = (site / "benchmarks" / "index.html").read_text()
    for figure in sorted((ROOT / "docs" / "figures").glob("*.png")):
        assert f"figures/{figure.name}" in page, figure.name
        assert (site / "figures" / figure.name).is_file()


def test_the_readme_is_a_front_page_with_the_two_commands():
    text = README.read_text()
    assert len(text.splitlines()) <= 200
    for command in COMMANDS:
        assert command in text.splitlines()


def test_the_readme_links_point_at_files_of_the_repository():
    targets = [t for t in LINK.findall(README.read_text()) if "://" not in t]
    assert targets
    for target in targets:
        path = target.partition("#")[0]
        assert (ROOT / path).exists(), target
