"""Survey-scale indexes: compressed codes re-ranked exactly from disk; sharded indexes, here and on Dask."""

from __future__ import annotations

import io
import json

import faiss
import numpy as np
import pandas as pd
import pytest
from test_index_store import brute_force, clustered, recall, vector_collection

from galsearch.embedder import CollectionError, open_collection
from galsearch.index.compressed import (
    RERANK_FACTOR,
    has_block_lists,
    load_lists,
    map_lists,
    rerank_shortlist,
    write_lists,
)
from galsearch.index.query import search
from galsearch.index.store import (
    INDEX_DIR,
    INDEX_FILE,
    INFO_FILE,
    add_to_index,
    build_index,
    load_index,
    read_info,
)
from galsearch.ui.cli import main

COMPRESSED = "IVF64,PQ16x4fs"  # 8 bytes a vector of dim 32: 4-bit fast-scan PQ


def embedding_like(n: int, dim: int = 32, clusters: int = 20, rank: int = 4, seed: int = 0) -> np.ndarray:
    """Clusters that each spread in their own ``rank``-dim subspace, plus a little isotropic noise (as CNN
    embeddings do; isotropic clusters in 32 dimensions would leave compressed codes nothing to find)."""
    rng = np.random.default_rng(seed)
    centres, bases = rng.normal(size=(clusters, dim)), rng.normal(size=(clusters, rank, dim))
    members = rng.integers(clusters, size=n)
    spread = np.einsum("nr,nrd->nd", rng.normal(size=(n, rank)), bases[members])
    return (centres[members] + 0.5 * spread + 0.1 * rng.normal(size=(n, dim))).astype(np.float32)


def append_vectors(path, vectors: np.ndarray) -> None:
    """Add galaxies with the given embeddings to the collection at ``path``."""
    coll = open_collection(path)
    first = len(coll)
    ids = pd.DataFrame({"id": [f"g{first + i}" for i in range(len(vectors))], "source": "test"})
    with coll.writing():
        coll.append_galaxies(np.zeros((len(vectors), 8, 8, 1), np.uint8), ids)
        coll.append_embeddings(vectors)


def test_compressed_index_reranked_recalls_exact_neighbours_and_reloads(tmp_path):
    vectors, queries = np.split(embedding_like(20_200, seed=1), [20_000])
    coll = vector_collection(tmp_path / "c", vectors)
    info = build_index(coll, COMPRESSED, progress=False)
    stored = json.loads((coll.path / INDEX_DIR / INFO_FILE).read_text())
    assert stored["factory"] == COMPRESSED and stored["rerank"] == RERANK_FACTOR
    assert stored["search_params"]["nprobe"] == info.search_params["nprobe"] >= 1
    assert read_info(coll) == info
    loaded = load_index(open_collection(coll.path), device="cpu")
    assert loaded.rerank == RERANK_FACTOR and loaded.search_params == info.search_params
    truth = brute_force(vectors, queries, 10, "cosine")
    scores, rows = loaded.search(queries, 10)
    assert recall(rows, truth) >= 0.95
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    exact = np.einsum("qd,qkd->qk", queries / np.linalg.norm(queries, axis=1, keepdims=True), unit[rows])
    np.testing.assert_allclose(scores, exact, rtol=1e-5, atol=1e-5)  # re-ranked scores are exact
    assert (np.diff(scores, axis=1) <= 1e-6).all()
    allowed = np.arange(0, 20_000, 3)  # a broad filter goes through the compressed structure, re-ranked
    rows = loaded.search(queries, 10, allowed)[1]
    assert np.isin(rows, allowed).all()
    assert recall(rows, allowed[brute_force(vectors[allowed], queries, 10, "cosine")]) >= 0.95


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_rerank_orders_candidates_exactly_and_pads(metric):
    vectors = clustered(500)
    queries = vectors[:3] + 0.1
    prepared = queries / np.linalg.norm(queries, axis=1, keepdims=True) if metric == "cosine" else queries
    candidates = np.tile(np.arange(0, 500, 2), (3, 1))
    candidates[2, 4:] = -1  # a query with only four candidates
    scores, rows = rerank_shortlist(vectors, prepared, candidates, 6, metric)
    np.testing.assert_array_equal(rows[:2], 2 * brute_force(vectors[::2], queries[:2], 6, metric))
    assert (rows[2, :4] >= 0).all() and (rows[2, 4:] == -1).all() and np.isinf(scores[2, 4:]).all()


def test_fast_scan_lists_in_a_file_search_as_they_did_in_memory(tmp_path):
    """Empty lists, lists of a partial block and of several blocks, written, mapped and read back."""
    rng = np.random.default_rng(4)
    vectors = embedding_like(3000, seed=4)
    index = faiss.index_factory(32, "IVF64,PQ16x4fs", faiss.METRIC_INNER_PRODUCT)
    index.train(vectors)
    index.add(np.vstack([vectors[:70], vectors[0] + 0.01 * rng.normal(size=(100, 32))]).astype(np.float32))
    index.nprobe = 64
    sizes = [index.invlists.list_size(number) for number in range(64)]
    assert min(sizes) == 0 and max(sizes) > 2 * 32  # FAISS packs 32 codes a block
    queries = vectors[:40] + 0.01
    expected = index.search(queries, 20)
    file = tmp_path / "lists.ivfdata"
    with open(file, "wb") as f:
        written = write_lists(index, f, file)
    assert written == file.stat().st_size
    map_lists(index, file)
    assert not has_block_lists(index)
    for got, want in zip(index.search(queries, 20), expected, strict=True):
        np.testing.assert_array_equal(got, want)
    load_lists(index)  # back in memory, where rows can be added
    assert has_block_lists(index)
    for got, want in zip(index.search(queries, 20), expected, strict=True):
        np.testing.assert_array_equal(got, want)
    index.add(vectors[70:80])
    assert index.ntotal == 180


def test_compressed_shards_take_newly_embedded_rows(tmp_path):
    vectors = embedding_like(10_500, seed=2)
    coll = vector_collection(tmp_path / "c", vectors[:10_000])
    built = build_index(coll, COMPRESSED, shards=2, progress=False)
    assert [(s.first, s.ntotal) for s in built.shards] == [(0, 5000), (5000, 5000)]
    append_vectors(coll.path, vectors[10_000:])
    assert add_to_index(open_collection(coll.path), progress=False) == 500
    info = read_info(coll)
    shards = [(s.first, s.ntotal) for s in info.shards]
    assert info.ntotal == 10_500 and shards == [
        (0, 5000),
        (5000, 5000),
        (10_000, 500),
    ]  # a shard of their own
    assert info.shards[:2] == built.shards and info.built == built.built  # the built shards not written again
    on_disk = {str(f.relative_to(coll.path / INDEX_DIR)) for f in (coll.path / INDEX_DIR).rglob("*.ivfdata")}
    assert on_disk == {shard.lists for shard in info.shards}
    rows = load_index(open_collection(coll.path), device="cpu").search(vectors[10_000:], 10)[1]
    np.testing.assert_array_equal(rows[:, 0], np.arange(10_000, 10_500))  # each new galaxy finds itself


def sharded_collection(tmp_path):
    """A collection with a magnitude column, to filter on."""
    coll = vector_collection(tmp_path / "c", clustered(3000, seed=3))
    with coll.writing():
        coll.set_columns({"mag": np.random.default_rng(3).uniform(15, 25, len(coll))})
    return open_collection(coll.path)


QUERIES = [
    {"ids": ["g5"]},
    {"ids": ["g5", "g17"], "negative_ids": ["g40"]},
    {"ids": ["g123"], "where": "mag < 16"},  # a narrow filter: answered exactly among the allowed rows
    {"ids": ["g7"], "negative_ids": ["g8"], "where": "mag > 18", "k": 40},
]


def test_sharded_flat_search_is_the_unsharded_exact_search(tmp_path):
    coll = sharded_collection(tmp_path)
    build_index(coll, "Flat", progress=False)
    expected = [search(coll, **query) for query in QUERIES]
    build_index(coll, "Flat", shards=3, progress=False)
    directory = coll.path / INDEX_DIR
    assert not (directory / INDEX_FILE).exists()
    assert [s.file for s in read_info(coll).shards] == [f"shard-00{i}/{INDEX_FILE}" for i in range(3)]
    for query, unsharded in zip(QUERIES, expected, strict=True):
        found = search(coll, **query)
        pd.testing.assert_frame_equal(found, unsharded)
        assert len(found) == query.get("k", 10)
    build_index(coll, "Flat", progress=False)  # back to one index: the shards are removed
    assert (directory / INDEX_FILE).is_file() and not list(directory.glob("shard-*"))


def test_sharded_search_on_a_dask_cluster_equals_the_local_one(tmp_path):
    from dask.distributed import LocalCluster

    from galsearch.embedder.distributed import kept_environment

    coll = sharded_collection(tmp_path)
    build_index(coll, "HNSW32", shards=3, progress=False)
    queries = coll.embeddings[[1, 50, 900]] + 0.05
    allowed = np.flatnonzero(coll.catalog["mag"].to_numpy() < 17)
    local = load_index(coll, device="cpu")
    with (
        kept_environment(),  # Dask sets its workers' variables in this process: put them back after
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
        ) as cluster,
    ):
        remote = load_index(coll, device="cpu", dask=cluster.scheduler_address)
        try:
            for wanted in (None, allowed):
                for a, b in zip(
                    remote.search(queries, 10, wanted), local.search(queries, 10, wanted), strict=True
                ):
                    np.testing.assert_array_equal(a, b)
        finally:
            remote.close()
    local.close()


def test_cli_builds_shards_and_searches_them(tmp_path, capsys):
    coll = sharded_collection(tmp_path)
    assert main(["index", str(coll.path), "--shards", "2", "--quiet"]) == 0
    assert "2 shards" in capsys.readouterr().out
    assert main(["search", str(coll.path), "--id", "g5", "-k", "4", "--format", "csv"]) == 0
    found = pd.read_csv(io.StringIO(capsys.readouterr().out))
    expected = brute_force(coll.embeddings, coll.embeddings[[5]], 5, "cosine")[0][1:]
    assert found["id"].tolist() == [f"g{row}" for row in expected]
    assert main(["index", str(coll.path), "--shards", "3"]) == 1  # a different index needs --rebuild
    assert "--rebuild" in capsys.readouterr().err


def test_damaged_or_inconsistent_shards_are_reported(tmp_path):
    coll = sharded_collection(tmp_path)
    build_index(coll, "Flat", shards=3, progress=False)
    shard = coll.path / INDEX_DIR / f"shard-001/{INDEX_FILE}"
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(CollectionError, match=r"shard-001/index\.faiss is damaged.*--rebuild"):
        load_index(open_collection(coll.path), device="cpu")
    info_file = coll.path / INDEX_DIR / INFO_FILE
    info = json.loads(info_file.read_text())
    info["shards"][1]["first"] += 1
    info_file.write_text(json.dumps(info))
    with pytest.raises(CollectionError, match="do not cover rows 0 to 3000"):
        load_index(open_collection(coll.path), device="cpu")
