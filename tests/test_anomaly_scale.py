"""k-NN anomaly scores through a collection's index: what exact neighbours give, resumed after a kill,
stored as the catalog column that `discover` and `anomalies` use."""

from __future__ import annotations

import signal
import subprocess
import sys

import numpy as np
import pytest
from conftest import TINY_ENCODER, write_blob_npz

from galsearch.anomaly import Discovery, score_collection
from galsearch.anomaly.knn import ScoresCache, ScoreSettings, index_knn_scores, index_state
from galsearch.anomaly.scores import ScoresError
from galsearch.embedder import embed, ingest, open_collection
from galsearch.index import build_index
from galsearch.index.store import read_info
from galsearch.ui.cli import main

ROWS, BATCH = 64, 16


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    """A 64-galaxy collection, embedded and indexed exactly (Flat), shared read-only by the tests."""
    folder = tmp_path_factory.mktemp("scale")
    ingest(write_blob_npz(folder / "blobs.npz", ROWS), folder / "c", progress=False)
    embed(folder / "c", TINY_ENCODER, device="cpu", progress=False)
    build_index(open_collection(folder / "c"), progress=False)
    return folder / "c"


@pytest.fixture
def fresh(indexed, tmp_path):
    """A copy of ``indexed`` that a test may write to."""
    import shutil

    shutil.copytree(indexed, tmp_path / "c")
    return open_collection(tmp_path / "c")


def exact_scores(vectors: np.ndarray, k: int, statistic: str) -> np.ndarray:
    """Brute force: distances between unit vectors to the k nearest others."""
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    distances = np.sqrt(np.maximum(2 - 2 * unit @ unit.T, 0))
    np.fill_diagonal(distances, np.inf)
    nearest = np.sort(distances, axis=1)[:, :k]
    return nearest[:, -1] if statistic == "kth" else nearest.mean(axis=1)


@pytest.mark.parametrize("statistic", ["kth", "mean"])
def test_index_scores_are_the_exact_neighbour_distances(fresh, statistic):
    scores, _ = index_knn_scores(fresh, ScoreSettings(5, statistic), batch_rows=BATCH, progress=False)
    np.testing.assert_allclose(scores, exact_scores(np.array(fresh.embeddings), 5, statistic), atol=1e-5)


@pytest.mark.parametrize("shards", [1, 2])
def test_a_compressed_index_scores_its_reranked_shortlists_exactly(fresh, shards):
    dim = fresh.embedding_dim  # one list, probed whole: the shortlists hold every galaxy
    build_index(fresh, factory=f"IVF1,PQ{dim // 4}x4fs", shards=shards, progress=False)
    assert read_info(fresh).rerank > 0
    scores, _ = index_knn_scores(fresh, ScoreSettings(5), batch_rows=BATCH, progress=False)
    np.testing.assert_allclose(scores, exact_scores(np.array(fresh.embeddings), 5, "kth"), atol=1e-5)


def test_scores_are_stored_as_the_knn_column_and_the_cache_removed(fresh):
    stored = score_collection(fresh, "knn", via="index", neighbours=3, progress=False)
    catalog = open_collection(fresh.path).catalog
    assert stored.name == "anomaly_knn" and np.allclose(catalog["anomaly_knn"], stored)
    np.testing.assert_allclose(stored, exact_scores(np.array(fresh.embeddings), 3, "kth"), atol=1e-5)
    assert not list((fresh.path / "cache").glob("knn-scores-*"))


def test_settings_and_sources_are_checked(fresh):
    with pytest.raises(ScoresError, match="statistic 'median'"):
        ScoreSettings(5, "median")
    with pytest.raises(ScoresError, match="k must be at least 1, got 0"):
        ScoreSettings(0)
    with pytest.raises(ScoresError, match="through the index"):
        score_collection(fresh, "lof", via="index")
    with pytest.raises(ScoresError, match="workers apply to k-NN scores through the index"):
        score_collection(fresh, "knn", via="features", workers=2)


# The CLI in a child process that SIGKILLs itself right after committing its second batch of scores.
KILLED_AFTER_TWO_BATCHES = """
import os, signal, sys
import galsearch.ui.cli
from galsearch.anomaly.knn import ScoresCache
commit, commits = ScoresCache.commit, []
def commit_then_die(cache, first, scores):
    commit(cache, first, scores)
    commits.append(first)
    if len(commits) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
ScoresCache.commit = commit_then_die
sys.exit(galsearch.ui.cli.main())
"""


def test_a_killed_run_continues_after_its_last_committed_batch(fresh, monkeypatch):
    arguments = ["anomalies", str(fresh.path), "--via", "index", "--batch-rows", str(BATCH), "--quiet"]
    killed = subprocess.run([sys.executable, "-c", KILLED_AFTER_TWO_BATCHES, *arguments], timeout=300)
    assert killed.returncode == -signal.SIGKILL
    settings = ScoreSettings(10)
    cache = ScoresCache.of(fresh, index_state(read_info(fresh)), settings)
    assert cache.done() == 2 * BATCH  # two batches committed, no more
    assert "anomaly_knn" not in open_collection(fresh.path).columns

    commit, firsts = ScoresCache.commit, []
    monkeypatch.setattr(ScoresCache, "commit", lambda c, i, s: (firsts.append(i), commit(c, i, s)))
    resumed, _ = index_knn_scores(fresh, settings, batch_rows=BATCH, progress=False)
    assert firsts == [2 * BATCH, 3 * BATCH]  # only the batches not committed before the kill
    np.testing.assert_allclose(resumed, exact_scores(np.array(fresh.embeddings), 10, "kth"), atol=1e-5)


def test_a_rebuilt_index_starts_over(fresh):
    index_knn_scores(fresh, ScoreSettings(4), batch_rows=BATCH, progress=False)
    before = list((fresh.path / "cache").glob("knn-scores-*.f32"))
    build_index(fresh, progress=False)  # a new build: the partial scores of the old one are not reused
    index_knn_scores(fresh, ScoreSettings(4), batch_rows=BATCH, progress=False)
    after = list((fresh.path / "cache").glob("knn-scores-*.f32"))
    assert len(before) == len(after) == 1 and before != after


def test_the_cli_scores_through_the_index_and_lists_the_most_anomalous(fresh, capsys):
    assert main(["anomalies", str(fresh.path), "-k", "3", "--top", "4", "--quiet"]) == 0  # -k: via index
    out = capsys.readouterr().out
    assert "stored anomaly_knn for 64 galaxies; the 4 most anomalous" in out
    scores = exact_scores(np.array(fresh.embeddings), 3, "kth")
    top = open_collection(fresh.path).catalog["id"].to_numpy()[np.argsort(-scores, kind="stable")[:4]]
    assert all(galaxy in out for galaxy in top)
    for wrong in (["--method", "lof", "--workers", "2"], ["--via", "features", "--statistic", "mean"]):
        with pytest.raises(SystemExit) as usage:
            main(["anomalies", str(fresh.path), *wrong])
        assert usage.value.code == 2


def test_discover_takes_its_prior_from_the_index_above_the_threshold(fresh, monkeypatch):
    import galsearch.anomaly.scores

    monkeypatch.setattr(galsearch.anomaly.scores, "INDEX_KNN_ABOVE", ROWS - 1)  # 64 galaxies: "large"
    hunt = Discovery(fresh, "index-prior", user="ann")
    np.testing.assert_allclose(hunt.anomaly, exact_scores(np.array(fresh.embeddings), 10, "kth"), atol=1e-5)
    assert np.allclose(open_collection(fresh.path).catalog["anomaly_knn"], hunt.anomaly)
