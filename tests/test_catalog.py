"""Narrow catalog reads: chosen rows and columns, ids found through the id index, filters by column."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import galsearch.embedder.catalog
import galsearch.embedder.collection
from galsearch.embedder import Collection, CollectionError, open_collection
from galsearch.embedder.catalog import IdIndex
from galsearch.embedder.collection import CATALOG
from galsearch.index.filters import filter_rows

ROWS_PER_GROUP = 7  # so that a small catalog has many row groups
FILTERS = [
    "mag < 20",
    "mag < 20 and class_name != 'merger'",
    "class_name in ['ring', 'merger'] | isnull(z)",
    "notnull(z) & (abs(dec) > 30)",
    "log10(mag) > 1.3 and ra < 180",
    "'n' < class_name <= 'spiral' or isnull(class_name)",
    "class_name == class_name and not class_name != 'ring'",
]


def galaxies(n: int, start: int = 0, seed: int = 0) -> pd.DataFrame:
    """Catalog rows with numbers, text and missing values of both."""
    rng = np.random.default_rng(seed)
    z = rng.uniform(0, 1, n)
    z[rng.random(n) < 0.2] = np.nan
    classes = rng.choice(np.array(["spiral", "merger", "ring", None], dtype=object), n)
    return pd.DataFrame(
        {
            "id": [f"J{start + i:06d}+{i % 7}" for i in range(n)],
            "source": "test",
            "ra": rng.uniform(0, 360, n),
            "dec": rng.uniform(-90, 90, n),
            "mag": rng.normal(20, 1.5, n),
            "class_name": classes,
            "z": z,
        }
    )


def add(coll: Collection, rows: pd.DataFrame) -> None:
    with coll.writing():
        coll.append_galaxies(np.zeros((len(rows), 2, 2, 1), np.uint8), rows)


@pytest.fixture
def grouped(tmp_path, monkeypatch) -> Collection:
    """A 100-galaxy collection whose catalog file holds row groups of ROWS_PER_GROUP rows."""
    monkeypatch.setattr(galsearch.embedder.collection, "ROW_GROUP", ROWS_PER_GROUP)
    coll = Collection.create(tmp_path / "c", (2, 2, 1), {})
    add(coll, galaxies(100))
    assert pq.ParquetFile(tmp_path / "c" / CATALOG).metadata.num_row_groups == 15
    return open_collection(coll.path)  # nothing of the catalog read yet


def test_rows_and_columns_read_narrowly_equal_the_whole_catalog(grouped):
    rows = np.array([99, 0, 7, 6, 50, 7, 13, 14])  # any order, repeats, group edges
    narrow = {
        "all": grouped.catalog_rows(rows),
        "some": grouped.catalog_rows(rows, ["mag", "id"]),
        "none": grouped.catalog_rows(np.array([], dtype=int), ["id"]),
        "columns": grouped.catalog_columns(["class_name", "z"]),
    }
    assert grouped._catalog is None  # none of that loaded the whole catalog
    whole = pd.read_parquet(grouped.path / CATALOG)
    pd.testing.assert_frame_equal(narrow["all"], whole.iloc[rows].reset_index(drop=True))
    pd.testing.assert_frame_equal(narrow["some"], whole.iloc[rows][["mag", "id"]].reset_index(drop=True))
    pd.testing.assert_frame_equal(narrow["none"], whole.iloc[[]][["id"]].reset_index(drop=True))
    pd.testing.assert_frame_equal(narrow["columns"], whole[["class_name", "z"]])
    pd.testing.assert_frame_equal(grouped.catalog_rows(rows), narrow["all"])  # from memory, now loaded
    with pytest.raises(IndexError):
        open_collection(grouped.path).catalog_rows([100])


def test_ids_are_found_as_the_whole_catalog_finds_them(grouped):
    whole = pd.read_parquet(grouped.path / CATALOG)
    wanted = whole["id"].sample(30, random_state=1).tolist()
    expected = pd.Index(whole["id"]).get_indexer(wanted)
    assert np.array_equal(grouped.rows_of(wanted), expected)
    assert np.array_equal(grouped.find_rows(["nope", wanted[0], ""]), [-1, expected[0], -1])
    with pytest.raises(CollectionError, match="nope"):
        grouped.rows_of(["nope", wanted[0]])
    assert len(list((grouped.path / "cache").glob("ids-*.arrow"))) == 1  # kept for the next process
    assert np.array_equal(open_collection(grouped.path).rows_of(wanted), expected)


@pytest.mark.parametrize("where", FILTERS)
def test_a_filter_reads_its_columns_and_matches_the_whole_catalog(grouped, where):
    expected = filter_rows(pd.read_parquet(grouped.path / CATALOG), where)
    assert np.array_equal(filter_rows(grouped, where), expected)
    assert grouped._catalog is None


def test_appended_galaxies_are_found_and_the_old_id_index_kept(grouped):
    grouped.rows_of("J000000+0")  # the index of 100 rows is written
    (first_index,) = (grouped.path / "cache").glob("ids-*.arrow")
    before = [f.stat().st_mtime_ns for f in (grouped.path / CATALOG, first_index)]
    more = galaxies(30, start=100, seed=1)
    add(grouped, more)
    assert np.array_equal(grouped.rows_of(more["id"].iloc[[29, 0]].tolist()), [129, 100])
    reopened = open_collection(grouped.path)
    assert np.array_equal(reopened.rows_of(["J000129+1", "J000005+5"]), [129, 5])
    assert [f.stat().st_mtime_ns for f in (grouped.path / CATALOG, first_index)] == before  # not rewritten
    assert pq.ParquetFile(grouped.path / CATALOG).metadata.num_rows == 100
    pd.testing.assert_frame_equal(
        reopened.catalog_rows([128, 3], ["id"]),
        reopened.catalog.iloc[[128, 3]][["id"]].reset_index(drop=True),
    )
    assert len(list((grouped.path / "cache").glob("ids-*.arrow"))) == 2  # one per catalog part


def test_a_column_set_before_an_append_reads_as_missing_on_the_new_rows(grouped):
    with grouped.writing():
        grouped.set_columns({"x": np.arange(100, dtype=float)})
    add(grouped, galaxies(10, start=100, seed=1))
    reopened = open_collection(grouped.path)
    rows = reopened.catalog_rows([0, 105], ["x"])["x"].tolist()
    assert rows[0] == 0.0 and np.isnan(rows[1])
    add(reopened, galaxies(150, start=110, seed=2))  # parts merge across the column's edge
    reopened = open_collection(grouped.path)
    picked = reopened.catalog_rows([3, 105, 200])
    assert len(picked) == 3 and picked["x"].iloc[0] == 3.0 and picked["x"].iloc[1:].isna().all()
    pd.testing.assert_frame_equal(picked, reopened.catalog.iloc[[3, 105, 200]].reset_index(drop=True))


def test_a_catalog_with_duplicate_ids_is_refused(grouped):
    table = pq.read_table(grouped.path / CATALOG)
    ids = table.column("id").to_pylist()
    ids[60] = ids[3]
    pq.write_table(table.set_column(0, "id", pa.array(ids)), grouped.path / CATALOG)
    with pytest.raises(CollectionError, match=re.escape("duplicate ids, e.g. ['J000003+3']")):
        open_collection(grouped.path)


def test_ids_sharing_a_hash_are_told_apart(monkeypatch):
    monkeypatch.setattr(galsearch.embedder.catalog, "id_hashes", lambda ids: np.zeros(len(ids), np.uint64))
    index = IdIndex.build(pa.chunked_array([["b", "a", "c", "a", "d"]]))
    assert index.find(["a", "d", "b", "x"]).tolist() == [1, 4, 0, -1]
    assert index.duplicates() == ["a"]


def test_id_hashes_are_64_bit_fnv1a():
    hashes = galsearch.embedder.catalog.id_hashes(pa.array(["", "a", "foobar", "é"]))
    assert hashes.tolist() == [0xCBF29CE484222325, 0xAF63DC4C8601EC8C, 0x85944171F73967E8, 0x0AC21707B7181E01]
