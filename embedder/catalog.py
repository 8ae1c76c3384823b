"""Narrow reads of a collection's catalog file: chosen rows, chosen columns, and ids looked up by hash.

A catalog of ten million galaxies is gigabytes as a pandas DataFrame; commands that need a few rows
(search results), a few columns (a filter) or the rows of some ids read only those from the parquet
file, whose row groups (:data:`ROW_GROUP` rows each) are the unit of reading.

Ids are found through an id index kept in the collection, ``cache/ids-DIGEST.arrow``: every id with its
row, sorted by the id's 64-bit FNV-1a hash, in an uncompressed Arrow file that is memory-mapped, so a
lookup touches a few pages (a binary search of the hashes, then the ids compared exactly) whatever the
catalog's size. ``DIGEST`` names the catalog file's state (size, modification time, rows): a rewritten
catalog is indexed afresh on its first lookup (the ids found more than once are kept with it, so opening a
collection checks them without a pass over its ids), and a collection that cannot be written to keeps its
index in memory.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np

from .storage import atomic_write

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

INDEX_FORMAT = 2  # of the id index file (2: the duplicate ids in its metadata); in its name's digest
ROW_GROUP = 16_384  # rows per parquet row group: a row read decodes one group of each column read
FNV_OFFSET = np.uint64(0xCBF29CE484222325)
FNV_PRIME = np.uint64(0x100000001B3)


class CatalogFile:
    """The layout of one state of a catalog parquet file: rows, columns and row-group boundaries."""

    def __init__(self, path: Path):
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.path = Path(path)
        stat = self.path.stat()
        with pq.ParquetFile(self.path) as file:  # not pq.read_table, which imports pyarrow.dataset, pandas
            meta = file.metadata
            schema = file.schema_arrow
            self.names = [name for name in schema.names if not name.startswith("__index")]
            self.text = {
                f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
            }
            sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        self.num_rows = int(meta.num_rows)
        self.starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])  # row group g: starts[g:g+2]
        self.state = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "rows": self.num_rows}

    def columns(self, names: Sequence[str]) -> pd.DataFrame:
        """Every row of the columns ``names``, as a DataFrame."""
        import pyarrow.parquet as pq

        with pq.ParquetFile(self.path) as file:
            return file.read(columns=list(names)).to_pandas()

    def batches(self, names: Sequence[str], rows: int) -> Iterator[pa.RecordBatch]:
        """Every row of the columns ``names``, in order, in batches of whole row groups of about ``rows``
        rows, text columns as Arrow dictionaries: a reader holds one batch rather than whole columns."""
        import pyarrow.parquet as pq

        groups = len(self.starts) - 1
        step = max(1, rows * groups // max(self.num_rows, 1))
        dictionary = [name for name in names if name in self.text]
        with pq.ParquetFile(self.path, read_dictionary=dictionary) as file:
            for first in range(0, groups, step):
                table = file.read_row_groups(
                    list(range(first, min(first + step, groups))), columns=list(names)
                )
                yield from table.unify_dictionaries().combine_chunks().to_batches()

    def column(self, name: str) -> pa.ChunkedArray:
        """Every row of the column ``name``, as Arrow (an id column stays compact strings)."""
        import pyarrow.parquet as pq

        with pq.ParquetFile(self.path) as file:
            return file.read(columns=[name]).column(name)

    def rows(self, rows: np.ndarray, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """The catalog rows ``rows`` (in that order, repeats kept) of ``columns`` (default: all), reading
        only the row groups that hold them."""
        import pyarrow.parquet as pq

        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if len(rows) and (rows.min() < 0 or rows.max() >= self.num_rows):
            raise IndexError(f"catalog rows must lie in 0..{self.num_rows - 1}")
        groups = np.searchsorted(self.starts, rows, side="right") - 1
        needed = np.unique(groups)
        sizes = np.diff(self.starts)[needed]
        placed = np.cumsum(sizes) - sizes  # where each needed group starts in the table read
        local = placed[np.searchsorted(needed, groups)] + rows - self.starts[groups]
        with pq.ParquetFile(self.path) as file:
            names = self.names if columns is None else list(columns)
            table = file.read_row_groups(needed.tolist(), columns=names)
        return table.take(local).to_pandas()


def id_hashes(ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The 64-bit FNV-1a hash of each id's UTF-8 bytes (uint64), computed a byte position at a time."""
    import pyarrow as pa

    ids = ids.cast(pa.large_string())
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks()
    offsets = np.frombuffer(ids.buffers()[1], dtype=np.int64)[ids.offset : ids.offset + len(ids) + 1]
    data = ids.buffers()[2]
    data = np.frombuffer(data, dtype=np.uint8) if data is not None else np.empty(0, np.uint8)
    starts, lengths = offsets[:-1], np.diff(offsets)
    hashes = np.full(len(ids), FNV_OFFSET, dtype=np.uint64)
    shortest = int(lengths.min()) if len(ids) else 0
    for j in range(int(lengths.max()) if len(ids) else 0):
        live = slice(None) if j < shortest else np.flatnonzero(lengths > j)
        hashes[live] = (hashes[live] ^ data[starts[live] + j]) * FNV_PRIME
    return hashes


class IdIndex:
    """Catalog rows of ids, from ids sorted by hash (see the module's description)."""

    def __init__(self, table: pa.Table):
        """An index from its table: ``hash``, ``row`` and ``id`` columns sorted by hash, and the ids that
        occur more than once in the schema's ``duplicates`` metadata (JSON), found when it was built."""
        self.table = table
        self.hashes = _numpy(table.column("hash"), np.uint64)
        self.rows = _numpy(table.column("row"), np.int64)
        self.ids = table.column("id")
        self._duplicates: list[str] = json.loads(table.schema.metadata[b"duplicates"])
        self._places: np.ndarray | None = None

    @classmethod
    def build(cls, ids: pa.ChunkedArray) -> IdIndex:
        """The index of a catalog's id column (row i holds ids[i])."""
        import pyarrow as pa

        ids = ids.cast(pa.large_string()).combine_chunks()
        hashes = id_hashes(ids)
        order = np.argsort(hashes, kind="stable")
        table = pa.table({"hash": hashes[order], "row": order.astype(np.int64), "id": ids.take(order)})
        duplicates = _duplicates(hashes[order], table.column("id"))
        return cls(table.replace_schema_metadata({"duplicates": json.dumps(duplicates)}))

    @classmethod
    def of(cls, catalog: CatalogFile, folder: Path) -> IdIndex:
        """The index of ``catalog``, memory-mapped from ``folder`` (built and written there when absent)."""
        import pyarrow as pa

        key = json.dumps({"catalog": catalog.state, "format": INDEX_FORMAT}, sort_keys=True)
        file = folder / f"ids-{hashlib.sha256(key.encode()).hexdigest()[:16]}.arrow"
        try:
            return cls(pa.ipc.open_file(pa.memory_map(str(file))).read_all())
        except (OSError, pa.ArrowInvalid):  # absent, or damaged: build it again
            pass
        index = cls.build(catalog.column("id"))
        try:
            folder.mkdir(exist_ok=True)
            atomic_write(file, index.write)
            for older in folder.glob("ids-*.arrow"):
                if older != file and re.fullmatch(r"ids-[0-9a-f]{16}\.arrow", older.name):
                    older.unlink(missing_ok=True)
        except OSError:  # a read-only collection: keep the index in memory
            pass
        return index

    def write(self, f: IO[bytes]) -> None:
        """Write the index to the binary file ``f`` as an uncompressed Arrow file."""
        import pyarrow as pa

        with pa.ipc.new_file(f, self.table.schema) as writer:
            writer.write_table(self.table)

    def find(self, ids: Sequence[str]) -> np.ndarray:
        """The catalog row of each id, -1 for ids not in the catalog."""
        import pyarrow as pa
        import pyarrow.compute as pc

        ids = [str(i) for i in ids]
        wanted = id_hashes(pa.array(ids, pa.large_string()))
        first = np.searchsorted(self.hashes, wanted, side="left")
        last = np.searchsorted(self.hashes, wanted, side="right")
        found = np.full(len(ids), -1, dtype=np.int64)
        single = np.flatnonzero(last - first == 1)  # the usual case: one id with that hash
        if len(single):
            asked = pa.array([ids[i] for i in single], pa.large_string())
            same = pc.equal(self.ids.take(first[single]), asked)
            hit = single[same.to_numpy(zero_copy_only=False)]
            found[hit] = self.rows[first[hit]]
        for i in np.flatnonzero(last - first > 1):  # a hash shared by several ids
            shared = self.ids.slice(first[i], last[i] - first[i]).to_pylist()
            if ids[i] in shared:
                found[i] = self.rows[first[i] + shared.index(ids[i])]
        return found

    def ids_at(self, rows: np.ndarray) -> list[str]:
        """The ids of the catalog rows ``rows`` (read from the index, not the catalog)."""
        if self._places is None:  # the index position of each catalog row: 8 bytes a galaxy, made once
            self._places = np.empty(len(self.rows), dtype=np.int64)
            self._places[self.rows] = np.arange(len(self.rows))
        return self.ids.take(self._places[np.asarray(rows, dtype=np.int64)]).to_pylist()

    def duplicates(self) -> list[str]:
        """Ids that occur more than once in the catalog (each listed once), as found when the index was
        built: opening a collection checks them without a pass over its ids."""
        return list(self._duplicates)


def _duplicates(hashes: np.ndarray, ids: pa.ChunkedArray) -> list[str]:
    """The ids that occur more than once, from the ids sorted by their ``hashes``."""
    from collections import Counter

    same_hash = np.flatnonzero(hashes[1:] == hashes[:-1])
    if not len(same_hash):
        return []
    shared = np.union1d(same_hash, same_hash + 1)  # ids whose hash another id has: few, or an error
    counts = Counter(ids.take(shared).to_pylist())
    return [galaxy for galaxy, count in counts.items() if count > 1]


def _numpy(column: pa.ChunkedArray, dtype: type) -> np.ndarray:
    """A numeric Arrow column without nulls as numpy, without a copy when it is one chunk (Arrow's own
    to_numpy imports pandas, which `galsearch info` does not need)."""
    array = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    data = array.buffers()[1]
    if data is None:
        return np.empty(0, dtype=dtype)
    return np.frombuffer(data, dtype=dtype)[array.offset : array.offset + len(array)]
