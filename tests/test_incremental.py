"""Appending to a collection costs what is appended: catalog parts, column files, id indexes per part,
index shards of the new rows; and a writer killed mid-append leaves the collection (or its index) as it
was, or resumable."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import write_blob_npz
from test_index_scale import COMPRESSED, append_vectors, embedding_like
from test_index_store import brute_force, recall, vector_collection

from galsearch.embedder import Collection, CollectionError, ingest, open_collection
from galsearch.embedder.collection import CATALOG, CATALOG_DIR, FORMAT_VERSION, IMAGES, MANIFEST
from galsearch.index.filters import filter_rows
from galsearch.index.store import INDEX_DIR, add_to_index, build_index, load_index, read_info


def galaxies(n: int, start: int, seed: int, extra: bool = False) -> pd.DataFrame:
    """Catalog rows ``start`` to ``start + n``: numbers, text and missing values (``extra``: one more
    column, that earlier rows lack)."""
    rng = np.random.default_rng(seed)
    mag = rng.normal(20, 1.5, n)
    mag[rng.random(n) < 0.2] = np.nan
    frame = pd.DataFrame(
        {
            "id": [f"G{start + i:05d}" for i in range(n)],
            "source": "test",
            "mag": mag,
            "class_name": pd.array(rng.choice(np.array(["spiral", "merger", None], dtype=object), n), "str"),
        }
    )
    return frame.assign(z=rng.uniform(0, 1, n)) if extra else frame


def append(coll: Collection, rows: pd.DataFrame) -> None:
    with coll.writing():
        coll.append_galaxies(np.full((len(rows), 2, 2, 1), len(rows) % 256, np.uint8), rows)


def files(coll: Collection) -> dict[str, int]:
    """Every catalog file of the collection with its modification time."""
    found = [coll.path / CATALOG, *sorted((coll.path / CATALOG_DIR).glob("*"))]
    return {str(f.relative_to(coll.path)): f.stat().st_mtime_ns for f in found}


@pytest.fixture
def empty(tmp_path) -> Collection:
    return Collection.create(tmp_path / "c", (2, 2, 1), {})


def test_appends_are_parts_read_as_one_catalog(empty):
    sizes = [40, 7, 7, 3, 12, 5, 1, 30, 9]
    batches, start = [], 0
    for number, n in enumerate(sizes):
        batches.append(galaxies(n, start, number, extra=number >= 4))
        append(empty, batches[-1])
        start += n
    expected = pd.concat(batches, ignore_index=True)
    coll = open_collection(empty.path)
    assert len(coll.manifest["catalog"]["parts"]) <= 4  # merged as they grow: a few parts, not one an append
    rows = np.array([113, 0, 40, 39, 47, 53, 60, 60, 5])
    pd.testing.assert_frame_equal(coll.catalog_rows(rows), expected.iloc[rows].reset_index(drop=True))
    pd.testing.assert_frame_equal(coll.catalog_columns(["z", "id"]), expected[["z", "id"]])
    for where in ("mag < 20 and class_name != 'merger'", "isnull(z) or z > 0.5"):
        assert np.array_equal(filter_rows(coll, where), filter_rows(expected, where))
    assert coll._catalog is None  # none of that read the whole catalog
    pd.testing.assert_frame_equal(coll.catalog, expected)
    wanted = ["G00113", "G00000", "nope", "G00047"]
    assert coll.find_rows(wanted).tolist() == [113, 0, -1, 47]
    assert coll.ids_at([47, 113, 0]) == ["G00047", "G00113", "G00000"]
    ids_files = len(list((coll.path / "cache").glob("ids-*.arrow")))
    assert ids_files == len(coll.manifest["catalog"]["parts"]) + 1  # one id index per part, no stale ones


def test_an_append_writes_only_its_rows_and_their_ids(empty):
    append(empty, galaxies(100, 0, 0))
    empty.rows_of("G00000")  # the id index of the first part is written
    before = {name: t for name, t in files(empty).items()}
    indexes = {f: f.stat().st_mtime_ns for f in (empty.path / "cache").glob("ids-*.arrow")}
    append(empty, galaxies(10, 100, 1))
    after = files(empty)
    assert {name: after[name] for name in before} == before  # nothing written before is written again
    assert len(after) == len(before) + 1
    assert {f: f.stat().st_mtime_ns for f in indexes} == indexes
    coll = open_collection(empty.path)
    assert coll.rows_of(["G00105", "G00099"]).tolist() == [105, 99]


def test_set_columns_writes_only_the_columns(empty):
    append(empty, galaxies(30, 0, 0))
    append(empty, galaxies(10, 30, 1))
    parts = files(empty)
    score = np.linspace(0, 1, 40)
    with empty.writing():
        empty.set_columns({"score": score, "mag": np.arange(40.0)})
    assert {name: files(empty)[name] for name in parts} == parts  # the parts are not rewritten
    with empty.writing():
        empty.set_columns({"score": score * 2})  # replaced: the old column file goes
    assert len(files(empty)) == len(parts) + 2
    append(empty, galaxies(5, 40, 2))
    coll = open_collection(empty.path)
    assert coll.columns == ["id", "source", "mag", "class_name", "score"]
    np.testing.assert_array_equal(coll.catalog_columns(["score"])["score"].to_numpy()[:40], score * 2)
    assert coll.catalog["score"].iloc[40:].isna().all()  # rows appended later have no score yet
    np.testing.assert_array_equal(coll.catalog["mag"].iloc[:40], np.arange(40.0))
    np.testing.assert_array_equal(coll.catalog["mag"].iloc[40:], galaxies(5, 40, 2)["mag"])
    pd.testing.assert_frame_equal(
        coll.catalog_rows([44, 2]), coll.catalog.iloc[[44, 2]].reset_index(drop=True)
    )
    with pytest.raises(CollectionError, match="3 values for 45 galaxies"), coll.writing():
        coll.set_columns({"score": np.zeros(3)})


def test_a_format_1_collection_is_read_and_upgraded_on_its_next_write(empty):
    append(empty, galaxies(50, 0, 0))
    manifest = json.loads((empty.path / MANIFEST).read_text())
    del manifest["catalog"]
    manifest["format_version"] = 1  # as galsearch wrote collections before catalogs had parts
    (empty.path / MANIFEST).write_text(json.dumps(manifest))
    old = open_collection(empty.path)
    assert old.rows_of("G00049").tolist() == [49] and len(old.catalog) == 50
    before = files(old)
    indexes = sorted((old.path / "cache").glob("ids-*.arrow"))
    append(old, galaxies(5, 50, 1))
    upgraded = json.loads((empty.path / MANIFEST).read_text())
    assert upgraded["format_version"] == FORMAT_VERSION == 2
    assert files(old)[CATALOG] == before[CATALOG]  # the old catalog file is kept as the first part
    assert set(indexes) < set((old.path / "cache").glob("ids-*.arrow"))  # and its id index
    assert open_collection(empty.path).rows_of(["G00054", "G00003"]).tolist() == [54, 3]


def test_a_newer_format_is_refused_with_its_version(empty):
    manifest = json.loads((empty.path / MANIFEST).read_text())
    manifest["format_version"] = FORMAT_VERSION + 1
    (empty.path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(CollectionError, match=f"format version {FORMAT_VERSION + 1}.*upgrade galsearch"):
        open_collection(empty.path)


def test_ids_present_or_repeated_are_refused_before_anything_is_written(empty):
    append(empty, galaxies(20, 0, 0))
    before = (files(empty), (empty.path / IMAGES).stat().st_size)
    with pytest.raises(CollectionError, match=r"G00019"):
        append(empty, galaxies(5, 19, 1))
    repeated = pd.concat([galaxies(2, 30, 2), galaxies(1, 30, 3)], ignore_index=True)
    with pytest.raises(CollectionError, match=r"G00030"):
        append(empty, repeated)
    assert (files(empty), (empty.path / IMAGES).stat().st_size) == before
    assert len(open_collection(empty.path)) == 20


# A child process that ingests in commits of COMMIT galaxies and SIGKILLs itself right after its k-th call
# of Collection.METHOD (no cleanup runs): the same point however fast or busy the machine is.
KILLED_INGEST = """
import os, signal, sys
from galsearch.embedder import ingest
from galsearch.embedder import collection
method, k, source, target, commit = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
owner = collection if hasattr(collection, method) else collection.Collection
real, calls = getattr(owner, method), []
def then_die(*args, **kwargs):
    result = real(*args, **kwargs)
    calls.append(1)
    if len(calls) == k:
        os.kill(os.getpid(), signal.SIGKILL)
    return result
setattr(owner, method, then_die)
ingest(source, target, commit_every=commit, progress=False)
"""
N, COMMIT = 40, 8


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The blob source and the collection an uninterrupted ingest makes of it, in commits of COMMIT."""
    folder = tmp_path_factory.mktemp("killed")
    source = write_blob_npz(folder / "blobs.npz", N, size=16)
    ingest(source, folder / "whole", commit_every=COMMIT, progress=False)
    return source, open_collection(folder / "whole")


@pytest.mark.parametrize(
    ("method", "k", "committed", "first_part"),
    [
        ("_commit", 3, 3 * COMMIT, 2 * COMMIT),  # committed, not yet tidied
        # the first write is the empty catalog.parquet of the new collection
        ("_write_parquet", 3, COMMIT, 2 * COMMIT),  # catalog.parquet rewritten longer (a merge), uncommitted
        ("_write_parquet", 4, 2 * COMMIT, 2 * COMMIT),  # a new part written, not yet committed
        ("_write_parquet", 5, 3 * COMMIT, 4 * COMMIT),  # the first part merged with two more, uncommitted
    ],
)
def test_a_killed_append_leaves_the_collection_as_committed_and_a_rerun_completes(
    reference, tmp_path, method, k, committed, first_part
):
    source, whole = reference
    arguments = [method, str(k), str(source), str(tmp_path / "c"), str(COMMIT)]
    killed = subprocess.run([sys.executable, "-c", KILLED_INGEST, *arguments], timeout=300)
    assert killed.returncode == -signal.SIGKILL
    assert pq.ParquetFile(tmp_path / "c" / CATALOG).metadata.num_rows == first_part  # rows on disk
    coll = open_collection(tmp_path / "c")  # validates: every file agrees with the manifest
    assert len(coll) == committed
    pd.testing.assert_frame_equal(coll.catalog, whole.catalog.iloc[:committed])
    assert coll.find_rows(whole.ids_at(np.arange(N))).tolist() == [*range(committed), *[-1] * (N - committed)]
    report = ingest(source, tmp_path / "c", commit_every=COMMIT, progress=False)
    assert (report.already_present, report.stored) == (committed, N - committed)
    done = open_collection(tmp_path / "c")
    pd.testing.assert_frame_equal(done.catalog, whole.catalog)
    np.testing.assert_array_equal(done.images, whole.images)
    assert done.rows_of(done.ids_at(np.arange(N))).tolist() == list(range(N))
    named = {part["file"] for part in done.manifest["catalog"]["parts"]}
    assert {f"{CATALOG_DIR}/{f.name}" for f in (done.path / CATALOG_DIR).glob("*")} == named  # no leftovers


def test_an_ivf_index_takes_new_rows_in_shards_of_their_own_merged_as_they_grow(tmp_path):
    vectors = embedding_like(8000, seed=5)
    coll = vector_collection(tmp_path / "v", vectors[:4000])
    built = build_index(coll, COMPRESSED, progress=False)
    shapes, saved, found = [], [built.lists], []
    for first, last in ((4000, 4500), (4500, 5000), (5000, 5300), (5300, 8000)):
        append_vectors(coll.path, vectors[first:last])
        assert add_to_index(open_collection(coll.path), progress=False) == last - first
        info = read_info(coll)
        shapes.append([(part.first, part.ntotal) for part in info.parts])
        saved.append(info.parts[0].lists)
        queries, truth = vectors[:last:53], brute_force(vectors[:last], vectors[:last:53], 10, "cosine")
        found.append(
            recall(load_index(open_collection(coll.path), device="cpu").search(queries, 10)[1], truth)
        )
    assert shapes == [
        [(0, 4000), (4000, 500)],  # the built index is not written again: the new rows are a shard
        [(0, 4000), (4000, 1000)],  # two shards of 500 merged
        [(0, 4000), (4000, 1000), (5000, 300)],
        [(0, 8000)],  # 2700 rows more: the shards hold no more than them, and then no more than the first
    ]
    assert saved[:4] == [built.lists] * 4 and saved[4] != built.lists
    on_disk = {str(f.relative_to(coll.path / INDEX_DIR)) for f in (coll.path / INDEX_DIR).rglob("*.ivfdata")}
    assert on_disk == {read_info(coll).lists}  # the files of merged shards are gone
    assert min(found) >= 0.95  # searched over their shards, as the rows of one index
    queries, truth = vectors[::97], brute_force(vectors, vectors[::97], 10, "cosine")
    build_index(open_collection(coll.path), COMPRESSED, progress=False)
    fresh = recall(load_index(open_collection(coll.path), device="cpu").search(queries, 10)[1], truth)
    assert found[-1] >= fresh - 0.01  # as good as an index built afresh over every row


# A child process that adds the newly embedded rows to the index of the collection at argv[1] and SIGKILLs
# itself right after saving the first index file (a new shard), before index.json names it.
KILLED_INDEX_ADD = """
import os, signal, sys
from galsearch.embedder import open_collection
from galsearch.index import store
save = store._save_part
def save_then_die(*args):
    save(*args)
    os.kill(os.getpid(), signal.SIGKILL)
store._save_part = save_then_die
store.add_to_index(open_collection(sys.argv[1]), progress=False)
"""


def test_a_killed_index_add_leaves_the_index_as_saved_and_a_rerun_adds(tmp_path):
    vectors = embedding_like(4500, seed=6)
    coll = vector_collection(tmp_path / "v", vectors[:4000])
    built = build_index(coll, COMPRESSED, progress=False)
    append_vectors(coll.path, vectors[4000:])
    killed = subprocess.run([sys.executable, "-c", KILLED_INDEX_ADD, str(coll.path)], timeout=300)
    assert killed.returncode == -signal.SIGKILL
    assert read_info(coll) == built  # index.json untouched: the shard written is not part of the index
    assert (coll.path / INDEX_DIR / "shard-001" / "index.faiss").is_file()
    assert add_to_index(open_collection(coll.path), progress=False) == 500
    info = read_info(coll)
    assert [(part.first, part.ntotal) for part in info.parts] == [(0, 4000), (4000, 500)]
    on_disk = {str(f.relative_to(coll.path / INDEX_DIR)) for f in (coll.path / INDEX_DIR).rglob("*.ivfdata")}
    assert on_disk == {part.lists for part in info.parts}  # what the killed add left is gone
    rows = load_index(open_collection(coll.path), device="cpu").search(vectors[4000::50], 1)[1]
    np.testing.assert_array_equal(rows[:, 0], np.arange(4000, 4500, 50))


def test_an_uncompressed_ivf_index_takes_new_rows_in_a_shard_too(tmp_path):
    vectors = embedding_like(4500, seed=7)
    coll = vector_collection(tmp_path / "v", vectors[:4000])
    built = build_index(coll, "IVF64,Flat", progress=False)
    append_vectors(coll.path, vectors[4000:])
    assert add_to_index(open_collection(coll.path), progress=False) == 500
    info = read_info(coll)
    assert [(part.first, part.ntotal) for part in info.parts] == [(0, 4000), (4000, 500)]
    assert info.parts[0].file_bytes == built.file_bytes  # the built index is not written again
    queries = vectors[::45]
    found = load_index(open_collection(coll.path), device="cpu").search(queries, 10)[1]
    assert recall(found, brute_force(vectors, queries, 10, "cosine")) >= 0.95
