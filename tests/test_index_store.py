"""The persisted FAISS index: choice, build/load round trips, recall, filters, incremental add, staleness."""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
import pytest
from conftest import TINY_ENCODER, write_blob_npz

from galsearch.embedder import Collection, CollectionError, embed, ingest, open_collection
from galsearch.index.compressed import has_block_lists
from galsearch.index.store import (
    INDEX_DIR,
    INDEX_FILE,
    INFO_FILE,
    LISTS_SUFFIX,
    IndexSettingError,
    StaleIndexError,
    TorchExact,
    VectorIndex,
    _read_part,
    add_to_index,
    auto_factory,
    build_index,
    exact_search,
    index_vectors,
    load_index,
    read_info,
)

FACTORIES = ["Flat", "HNSW32", "IVF32,Flat"]
FAST_SCAN = "IVF16_HNSW32,PQ16x4fs"  # the compressed structure galsearch builds (PQ{dim/2}: 8 bytes a vector)
BUILT = [*FACTORIES, FAST_SCAN, "IVF16,PQ8np"]  # every kind galsearch builds (IVF-PQ: its FAISS-GPU one,
# here without the polysemous training that takes FAISS's CPU version seconds)
FINGERPRINT = {"spec": "fake", "weights_sha256": "0" * 64, "dim": 32, "tta": False}


def clustered(n: int, dim: int = 32, clusters: int = 20, seed: int = 0) -> np.ndarray:
    """Float32 vectors from a Gaussian mixture: ``clusters`` centres, each with its own spread."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    members = rng.integers(clusters, size=n)
    return (centres[members] + 0.4 * rng.normal(size=(n, dim))).astype(np.float32)


def vector_collection(path: Path, vectors: np.ndarray, encoder: dict = FINGERPRINT) -> Collection:
    """A collection of blank 8x8 images whose embeddings are ``vectors`` (made by a fake encoder)."""
    coll = Collection.create(path, (8, 8, 1), {"size": 8, "channels": 1, "stretch": None})
    ids = pd.DataFrame({"id": [f"g{i}" for i in range(len(vectors))], "source": "test"})
    with coll.writing():
        coll.append_galaxies(np.zeros((len(vectors), 8, 8, 1), np.uint8), ids)
        coll.start_embeddings(encoder, vectors.shape[1])
        coll.append_embeddings(vectors)
    return open_collection(path)


def brute_force(vectors: np.ndarray, queries: np.ndarray, k: int, metric: str) -> np.ndarray:
    """Row numbers of the exact ``k`` nearest rows by numpy."""
    if metric == "cosine":
        unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        return np.argsort(-(queries @ unit.T), axis=1, kind="stable")[:, :k]
    distances = ((queries[:, None, :] - vectors[None]) ** 2).sum(-1)
    return np.argsort(distances, axis=1, kind="stable")[:, :k]


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)])


def test_auto_factory_grows_with_the_collection():
    memory = 256 * 2**30
    assert auto_factory(1_000, 320, memory) == auto_factory(19_999, 320, memory) == "Flat"
    assert auto_factory(20_000, 320, memory) == auto_factory(1_000_000, 320, memory) == "HNSW32"
    assert auto_factory(10_000_000, 320, memory) == "IVF16384,Flat"


def test_auto_factory_compresses_what_would_not_fit_in_memory():
    memory = 24 * 2**30
    assert auto_factory(1_000_000, 320, memory) == "HNSW32"  # 1.5 GB of vectors and graph
    assert auto_factory(10_000_000, 320, memory) == "IVF4096_HNSW32,PQ80x4fs"  # 12.8 GB of vectors
    assert auto_factory(10_000_000, 320, memory, gpu=True) == "IVF4096,PQ40"  # no fast-scan on GPUs
    assert auto_factory(1_000_000, 320, 4 * 2**30) == "IVF4096_HNSW32,PQ80x4fs"


@pytest.mark.parametrize("metric", ["cosine", "l2"])
@pytest.mark.parametrize("factory", FACTORIES)
def test_build_and_load_round_trip(tmp_path, factory, metric):
    vectors = clustered(2000)
    coll = vector_collection(tmp_path / "c", vectors)
    info = build_index(coll, factory, metric, progress=False)
    stored = json.loads((coll.path / INDEX_DIR / INFO_FILE).read_text())
    assert stored["factory"] == factory and stored["metric"] == metric and stored["ntotal"] == 2000
    assert stored["dim"] == 32 and stored["encoder"]["weights_sha256"] == FINGERPRINT["weights_sha256"]
    assert stored["file_bytes"] == (coll.path / INDEX_DIR / INDEX_FILE).stat().st_size > 0
    assert read_info(coll) == info
    loaded = load_index(open_collection(coll.path), device="cpu")
    assert loaded.ntotal == 2000 and loaded.search_params == info.search_params
    scores, rows = loaded.search(vectors[:50], 10)
    assert rows.shape == scores.shape == (50, 10)
    np.testing.assert_array_equal(rows[:, 0], np.arange(50))  # each vector finds itself first
    better_first = -np.diff(scores, axis=1) if metric == "cosine" else np.diff(scores, axis=1)
    assert (better_first >= -1e-5).all()
    assert recall(rows, brute_force(vectors, vectors[:50], 10, metric)) >= 0.95


@pytest.mark.parametrize("factory", ["HNSW32", "IVF64,Flat"])
def test_approximate_indexes_recall_exact_neighbours(factory):
    vectors, queries = np.split(clustered(6200, dim=48), [6000])  # held-out queries from the same mixture
    found = index_vectors(vectors, factory, device="cpu", progress=False).search(queries, 10)[1]
    assert recall(found, brute_force(vectors, queries, 10, "cosine")) >= 0.95


@pytest.mark.parametrize(("factory", "knob"), [("HNSW32", "efSearch"), ("IVF64,Flat", "nprobe")])
def test_search_parameters_are_calibrated_to_the_data(factory, knob):
    """Unclustered vectors are hard for approximate search: the build raises efSearch / nprobe to cope."""
    easy = index_vectors(clustered(3000), factory, device="cpu", progress=False)
    vectors, queries = np.split(np.random.default_rng(0).normal(size=(3200, 32)).astype(np.float32), [3000])
    hard = index_vectors(vectors, factory, device="cpu", progress=False)
    assert hard.search_params[knob] > easy.search_params[knob]
    assert recall(hard.search(queries, 10)[1], brute_force(vectors, queries, 10, "cosine")) >= 0.95


def test_flat_search_is_exact_and_pads_past_the_end():
    vectors = clustered(300)
    for metric in ("cosine", "l2"):
        flat = index_vectors(vectors, "Flat", metric, device="cpu", progress=False)
        np.testing.assert_array_equal(
            flat.search(vectors[:20] + 0.1, 7)[1], brute_force(vectors, vectors[:20] + 0.1, 7, metric)
        )
        scores, rows = flat.search(vectors[0], 305)
        assert (rows[0, :300] >= 0).all() and (rows[0, 300:] == -1).all()
        assert np.isinf(scores[0, 300:]).all()
    with pytest.raises(ValueError, match=r"shape \(m, 32\)"):
        flat.search(np.zeros((2, 5)), 3)


@pytest.mark.parametrize("metric", ["cosine", "l2"])
@pytest.mark.parametrize("factory", FACTORIES)
def test_filtered_search_returns_k_allowed_rows(factory, metric):
    vectors = clustered(5000)
    vi = index_vectors(vectors, factory, metric, device="cpu", progress=False)
    queries = vectors[[0, 1, 2, 3]] + 0.05
    allowed = np.sort(np.random.default_rng(2).choice(5000, 15, replace=False))
    rows = vi.search(queries, 10, allowed)[1]
    assert np.isin(rows, allowed).all()
    expected = allowed[brute_force(vectors[allowed], queries, 10, metric)]
    np.testing.assert_array_equal(rows, expected)  # so few allowed rows: the answer is exact
    np.testing.assert_array_equal(vi.search(queries, 10, allowed[::-1].repeat(2))[1], expected)  # any order
    scores, rows = vi.search(queries, 20, allowed)  # more wanted than allowed: all of them, then -1
    assert (np.sort(rows[:, :15], axis=1) == allowed).all() and (rows[:, 15:] == -1).all()
    assert np.isfinite(scores[:, :15]).all() and np.isinf(scores[:, 15:]).all()
    wide = np.arange(0, 5000, 2)  # a broad filter goes through the approximate structure
    assert np.isin(vi.search(queries, 10, wide)[1], wide).all()
    assert (vi.search(queries, 5, np.array([], dtype=int))[1] == -1).all()


def test_exact_search_over_a_subset_in_chunks(monkeypatch):
    vectors = clustered(1000)
    monkeypatch.setattr("galsearch.index.store.CHUNK_ROWS", 64)
    rows = np.arange(3, 1000, 3)
    queries = vectors[:5] / np.linalg.norm(vectors[:5], axis=1, keepdims=True)
    found = exact_search(vectors, rows, queries, 8, "cosine")[1]
    np.testing.assert_array_equal(found, rows[brute_force(vectors[rows], vectors[:5], 8, "cosine")])


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_torch_exact_search_agrees_with_faiss(metric):
    """The search used on CUDA when FAISS has no GPU support, run here on the CPU."""
    vectors = clustered(1000)
    flat = index_vectors(vectors, "Flat", metric, device="cpu", progress=False)
    queries = flat._queries(vectors[:30] + 0.1)
    scores, rows = TorchExact(vectors, metric, "cpu").search(queries, 1005)
    expected_scores, expected_rows = flat.index.search(queries, 10)
    np.testing.assert_array_equal(rows[:, :10], expected_rows)
    np.testing.assert_allclose(scores[:, :10], expected_scores, rtol=1e-4, atol=1e-3)
    assert (rows[:, 1000:] == -1).all()


def test_new_galaxies_are_added_without_a_rebuild(tmp_path):
    ingest(write_blob_npz(tmp_path / "a.npz", 40), tmp_path / "blobs", progress=False)
    embed(tmp_path / "blobs", TINY_ENCODER, device="cpu", progress=False)
    coll = open_collection(tmp_path / "blobs")
    with pytest.raises(CollectionError, match="galsearch index"):
        load_index(coll, device="cpu")
    built = build_index(coll, "HNSW32", progress=False)
    ingest(write_blob_npz(tmp_path / "b.npz", 12, seed=1), tmp_path / "blobs", progress=False)
    embed(tmp_path / "blobs", TINY_ENCODER, device="cpu", progress=False)
    coll = open_collection(tmp_path / "blobs")
    vi = load_index(coll, device="cpu")
    info = read_info(coll)
    assert vi.ntotal == info.ntotal == 52 and info.built == built.built and info.factory == "HNSW32"
    rows = vi.search(coll.embeddings[40:], 1)[1]
    np.testing.assert_array_equal(rows[:, 0], np.arange(40, 52))  # each new galaxy finds itself
    assert add_to_index(coll, progress=False) == 0


def test_index_of_replaced_embeddings_is_stale(tmp_path, blob_collection):
    embed(blob_collection, TINY_ENCODER, device="cpu", progress=False)
    build_index(open_collection(blob_collection.path), progress=False)
    embed(blob_collection.path, "random:test_vit", replace=True, device="cpu", progress=False)
    for action in (load_index, add_to_index):
        with pytest.raises(StaleIndexError, match=r"embeddings changed.*galsearch index .* --rebuild"):
            action(open_collection(blob_collection.path))
    build_index(open_collection(blob_collection.path), progress=False)  # a rebuild makes it current
    assert load_index(open_collection(blob_collection.path), device="cpu").ntotal == 64


def test_index_with_more_vectors_than_embeddings_is_stale(tmp_path):
    coll = vector_collection(tmp_path / "c", clustered(100))
    build_index(coll, progress=False)
    with coll.writing():
        coll.start_embeddings(FINGERPRINT, 32)
        coll.append_embeddings(clustered(60))
    with pytest.raises(StaleIndexError, match="holds 100 vectors but only 60"):
        load_index(open_collection(coll.path))


def _garbage(file: Path) -> None:
    file.write_bytes(np.random.default_rng(0).bytes(file.stat().st_size))


def _truncated(file: Path) -> None:
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])


def _truncated_both(file: Path) -> None:
    """A short file that index.json agrees with, so that FAISS itself reads the truncated data."""
    _truncated(file)
    info_file = file.with_name(INFO_FILE)
    info = json.loads(info_file.read_text())
    info_file.write_text(json.dumps({**info, "file_bytes": file.stat().st_size}))


@pytest.mark.parametrize(
    ("name", "damage"),
    [
        (INDEX_FILE, _garbage),
        (INDEX_FILE, _truncated),
        (INDEX_FILE, _truncated_both),
        (INDEX_FILE, lambda f: f.write_bytes(b"")),
        (INDEX_FILE, Path.unlink),
        (INFO_FILE, lambda f: f.write_text('{"factory": "Flat", ')),
        (INFO_FILE, lambda f: f.write_text('{"factory": "Flat"}')),
        (INFO_FILE, lambda f: f.write_text("[1, 2]")),
        (INFO_FILE, lambda f: f.write_bytes(b"\xff\xfe\x00")),
    ],
)
@pytest.mark.parametrize("factory", ["Flat", "HNSW32", "IVF8,Flat"])
def test_damaged_index_files_are_reported_by_name(tmp_path, factory, name, damage):
    coll = vector_collection(tmp_path / "c", clustered(400))
    build_index(coll, factory, progress=False)
    damage(coll.path / INDEX_DIR / name)
    with pytest.raises(CollectionError, match=rf"{name}.*--rebuild") as caught:
        load_index(open_collection(coll.path), device="cpu")
    assert not isinstance(caught.value, StaleIndexError)


def test_build_needs_embeddings_and_a_valid_factory(tmp_path, blob_collection):
    with pytest.raises(CollectionError, match="galsearch embed"):
        build_index(blob_collection, progress=False)
    coll = vector_collection(tmp_path / "c", clustered(100))
    with pytest.raises(IndexSettingError, match="factory string 'NoSuchIndex'"):
        build_index(coll, "NoSuchIndex", progress=False)
    with pytest.raises(IndexSettingError, match="metric"):
        build_index(coll, "Flat", "manhattan", progress=False)


def mapped_files() -> set[str]:
    """The files this process has memory-mapped (Linux)."""
    with open("/proc/self/maps") as f:
        return {fields[5].strip() for fields in (line.split(maxsplit=5) for line in f) if len(fields) == 6}


def read_whole(coll: Collection) -> VectorIndex:
    """The collection's (unsharded) index read into memory, as galsearch loaded indexes before mapping."""
    info = read_info(coll)
    index = _read_part(coll.path / INDEX_DIR, info.parts[0], info, writable=True)
    return VectorIndex(index, info.factory, info.metric, coll.embeddings, "cpu", info.rerank)


def assert_same_searches(a: VectorIndex, b: VectorIndex, vectors: np.ndarray) -> None:
    """Both indexes give identical scores and rows, unfiltered and through broad and narrow filters."""
    queries = vectors[:40] + 0.05
    for allowed in (None, np.arange(0, len(vectors), 3), np.arange(5, 40)):
        for x, y in zip(a.search(queries, 10, allowed), b.search(queries, 10, allowed), strict=True):
            np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("factory", BUILT)
def test_loaded_indexes_are_mapped_and_search_as_indexes_read_whole(tmp_path, factory):
    vectors = clustered(2000)
    coll = vector_collection(tmp_path / "c", vectors)
    info = build_index(coll, factory, progress=False)
    directory = coll.path / INDEX_DIR
    assert bool(info.lists) == (factory == FAST_SCAN)  # a fast-scan index keeps its lists in a file apart
    assert sorted(f.name for f in directory.iterdir()) == sorted(
        filter(None, [INDEX_FILE, INFO_FILE, info.lists])
    )
    assert info.disk_bytes == sum(f.stat().st_size for f in directory.iterdir() if f.name != INFO_FILE)
    mapped = load_index(open_collection(coll.path), device="cpu")
    assert str(directory / (info.lists or INDEX_FILE)) in mapped_files()  # the file of the vectors' codes
    assert_same_searches(mapped, read_whole(coll), vectors)


def test_a_fast_scan_index_with_its_lists_inside_is_read_whole_then_given_a_lists_file(tmp_path):
    """As galsearch saved fast-scan indexes before lists files: still searched, and converted on `index`."""
    vectors = clustered(2000)
    coll = vector_collection(tmp_path / "c", vectors)
    info = build_index(coll, FAST_SCAN, progress=False)
    directory = coll.path / INDEX_DIR
    whole = read_whole(coll)
    faiss.write_index(whole.index, str(directory / INDEX_FILE))  # the lists inside the index file
    (directory / info.lists).unlink()
    stored = json.loads((directory / INFO_FILE).read_text())
    del stored["lists"], stored["lists_bytes"]
    stored["file_bytes"] = (directory / INDEX_FILE).stat().st_size
    (directory / INFO_FILE).write_text(json.dumps(stored))
    old = load_index(open_collection(coll.path), device="cpu")
    assert not read_info(coll).lists and has_block_lists(old.index)  # read whole
    assert_same_searches(old, whole, vectors)
    assert add_to_index(open_collection(coll.path), progress=False) == 0
    converted = read_info(coll)
    assert converted.lists and converted.built == info.built
    assert sorted(f.name for f in directory.iterdir()) == sorted([INDEX_FILE, INFO_FILE, converted.lists])
    assert_same_searches(load_index(open_collection(coll.path), device="cpu"), whole, vectors)


def _renamed_lists(directory: Path) -> None:
    """The lists file under another name, which index.json names too: not the file the index describes."""
    info_file = directory / INFO_FILE
    stored = json.loads(info_file.read_text())
    (directory / stored["lists"]).rename(directory / f"other{LISTS_SUFFIX}")
    info_file.write_text(json.dumps({**stored, "lists": f"other{LISTS_SUFFIX}"}))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: _truncated(next(d.glob(f"*{LISTS_SUFFIX}"))), r"ivfdata is damaged"),
        (lambda d: next(d.glob(f"*{LISTS_SUFFIX}")).unlink(), r"ivfdata is missing"),
        (_renamed_lists, r"index\.faiss cannot be read \(the index does not describe its inverted lists as"),
    ],
)
def test_damaged_lists_files_are_reported_by_name(tmp_path, damage, message):
    coll = vector_collection(tmp_path / "c", clustered(2000))
    build_index(coll, FAST_SCAN, progress=False)
    damage(coll.path / INDEX_DIR)
    with pytest.raises(CollectionError, match=rf"{message}.*--rebuild"):
        load_index(open_collection(coll.path), device="cpu")
