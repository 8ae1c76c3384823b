"""Narrow reads of a collection's catalog: chosen rows, chosen columns, and ids looked up by hash.

A catalog of ten million galaxies is gigabytes as a pandas DataFrame; commands that need a few rows
(search results), a few columns (a filter) or the rows of some ids read only those from the parquet
files, whose row groups (:data:`ROW_GROUP` rows each) are the unit of reading.

A catalog is stored in parts (:class:`Catalog`): parquet files of rows appended in order, each read up to
the number of rows the collection's manifest counts in it (rows past it were written by a writer that did
not commit), and column files, each holding one column set for the first rows of the catalog (later rows
take the column from the parts). Appending rows writes a part; replacing a column writes its file.

Ids are found through an id index per part, kept in the collection as ``cache/ids-DIGEST.arrow``: every
id of the part with its row, sorted by the id's 64-bit FNV-1a hash, in an uncompressed Arrow file that is
memory-mapped, so a lookup touches a few pages (a binary search of the hashes, then the ids compared
exactly) whatever the catalog's size. ``DIGEST`` names the part file's state (size, modification time,
rows): a part is indexed when it is written (parts merged: their indexes merged), a part changed by other
means is indexed afresh on its first lookup (the ids found more than once are kept with it, so opening a
collection checks them without a pass over its ids), and a collection that cannot be written to keeps its
indexes in memory.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np

from .errors import CollectionError
from .storage import atomic_write

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

INDEX_FORMAT = 2  # of the id index file (2: the duplicate ids in its metadata); in its name's digest
ROW_GROUP = 16_384  # rows per parquet row group: a row read decodes one group of each column read
FNV_OFFSET = np.uint64(0xCBF29CE484222325)
FNV_PRIME = np.uint64(0x100000001B3)


class CatalogFile:
    """One parquet file of a catalog, read up to ``rows`` rows (default: all): rows, columns, row groups."""

    def __init__(self, path: Path, rows: int | None = None):
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.path = Path(path)
        stat = self.path.stat()
        with pq.ParquetFile(self.path) as file:  # not pq.read_table, which imports pyarrow.dataset, pandas
            meta = file.metadata
            self.schema = file.schema_arrow
            self.names = [name for name in self.schema.names if not name.startswith("__index")]
            self.text = {
                f.name for f in self.schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
            }
            sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        self.file_rows = int(meta.num_rows)
        self.num_rows = self.file_rows if rows is None else min(int(rows), self.file_rows)
        starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
        groups = int(np.searchsorted(starts, self.num_rows, side="left"))  # groups holding the rows read
        self.starts = np.append(starts[:groups], self.num_rows) if groups else np.zeros(1, np.int64)
        self.state = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "rows": self.num_rows}

    def read(self, names: Sequence[str], start: int, stop: int, dictionary: bool = False) -> pa.Table:
        """Rows ``start`` to ``stop`` of the columns ``names`` (text columns as Arrow dictionaries with
        ``dictionary``), reading only the row groups that hold them."""
        import pyarrow.parquet as pq

        first = int(np.searchsorted(self.starts, start, side="right")) - 1
        last = int(np.searchsorted(self.starts, stop, side="left"))
        read_dictionary = [name for name in names if name in self.text] if dictionary else None
        with pq.ParquetFile(self.path, read_dictionary=read_dictionary) as file:
            table = file.read_row_groups(list(range(max(first, 0), last)), columns=list(names))
        return table.slice(start - self.starts[max(first, 0)], stop - start)

    def take(self, names: Sequence[str], rows: np.ndarray) -> pa.Table:
        """The rows ``rows`` (in that order, repeats kept) of the columns ``names``, reading only the
        row groups that hold them."""
        import pyarrow.parquet as pq

        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        groups = np.searchsorted(self.starts, rows, side="right") - 1
        needed = np.unique(groups)
        sizes = np.diff(self.starts)[needed]
        placed = np.cumsum(sizes) - sizes  # where each needed group starts in the table read
        local = placed[np.searchsorted(needed, groups)] + rows - self.starts[groups]
        with pq.ParquetFile(self.path) as file:
            table = file.read_row_groups(needed.tolist(), columns=list(names))
        return table.take(local)


@dataclass(frozen=True)
class _Segment:
    """Catalog rows ``first`` to ``end`` of some columns, held by ``file`` from its row ``offset`` on."""

    file: CatalogFile  # compared and hashed by identity: segments of one file object are one read
    first: int
    end: int
    offset: int

    def read(
        self, types: dict[str, pa.DataType], start: int, stop: int, rows: np.ndarray | None, dictionary: bool
    ) -> dict[str, pa.Array | pa.ChunkedArray]:
        """The segment's rows among ``start`` to ``stop`` (only the sorted catalog ``rows`` among them,
        if given) of the columns ``types`` names, as those types (nulls where the file lacks a column)."""
        import pyarrow as pa

        lo, hi = max(self.first, start), min(self.end, stop)
        present = [name for name in types if name in self.file.names]
        shift = self.offset - self.first  # catalog row + shift = the file's row
        if rows is None:
            table, count = self.file.read(present, lo + shift, hi + shift, dictionary), hi - lo
        else:
            chosen = rows[np.searchsorted(rows, lo) : np.searchsorted(rows, hi)] + shift
            table, count = self.file.take(present, chosen), len(chosen)  # no columns: a table of no rows
        return {
            name: table.column(name).cast(target) if name in present else pa.nulls(count, target)
            for name, target in types.items()
        }


class Catalog:
    """A catalog stored as ``parts`` (files of rows appended in order) and ``overlays`` (a column's file
    of its values for the first rows, later rows taking the column from the parts)."""

    def __init__(self, parts: list[CatalogFile], overlays: dict[str, CatalogFile]):
        import pyarrow as pa

        self.parts, self.overlays = parts, overlays
        self.starts = np.concatenate([[0], np.cumsum([p.num_rows for p in parts], dtype=np.int64)])
        self.num_rows = int(self.starts[-1])
        names = [name for part in parts for name in part.names]
        self.names = list(dict.fromkeys([*names, *overlays]))
        self.types: dict[str, pa.DataType] = {}
        for name in self.names:
            types = [f.schema.field(name).type for f in (*parts, *overlays.values()) if name in f.names]
            try:
                unified = pa.unify_schemas(
                    [pa.schema([(name, t)]) for t in types], promote_options="permissive"
                )
            except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                raise CollectionError(f"the catalog column {name!r} has types {types} in its files") from exc
            self.types[name] = unified.field(name).type
        self.text = {n for n, t in self.types.items() if pa.types.is_string(t) or pa.types.is_large_string(t)}
        self.metadata = parts[0].schema.metadata if parts else None

    def _segments(self, name: str) -> list[_Segment]:
        """Where the column ``name`` is read: its overlay's rows, then those of the parts past them."""
        start = self.overlays[name].num_rows if name in self.overlays else 0
        segments = [_Segment(self.overlays[name], 0, start, 0)] if start else []
        for part, first, end in zip(self.parts, self.starts[:-1], self.starts[1:], strict=True):
            if end > start:
                segments.append(_Segment(part, int(max(first, start)), int(end), int(max(start - first, 0))))
        return segments

    def _plan(self, names: Sequence[str], start: int, stop: int) -> dict[_Segment, list[str]]:
        """The segments holding rows ``start`` to ``stop`` of the columns ``names``, each with the columns
        read from it: columns read from the same rows of the same file share one read."""
        plan: dict[_Segment, list[str]] = {}
        for name in names:
            for segment in self._segments(name):
                if segment.first < stop and segment.end > start:
                    plan.setdefault(segment, []).append(name)
        return plan

    def _gather(
        self, names: Sequence[str], start: int, stop: int, rows: np.ndarray | None, dictionary: bool = False
    ) -> pa.Table:
        """Rows ``start`` to ``stop`` of the columns ``names``, or only the sorted ``rows`` among them."""
        import pyarrow as pa

        pieces: dict[str, list[tuple[int, pa.Array | pa.ChunkedArray]]] = {name: [] for name in names}
        for segment, wanted in self._plan(names, start, stop).items():
            types = {name: self._type(name, dictionary) for name in wanted}
            for name, column in segment.read(types, start, stop, rows, dictionary).items():
                pieces[name].append((segment.first, column))
        columns = {name: self._joined(name, pieces[name], dictionary) for name in names}
        return pa.table(columns, metadata=self.metadata) if names else pa.table({})

    def _joined(
        self, name: str, pieces: list[tuple[int, pa.Array | pa.ChunkedArray]], dictionary: bool
    ) -> pa.ChunkedArray:
        """The column ``name`` from its pieces (each with the catalog row it starts at), in row order."""
        import pyarrow as pa

        ordered = [piece for _, piece in sorted(pieces, key=lambda item: item[0])]
        chunks = [a for c in ordered for a in (c.chunks if isinstance(c, pa.ChunkedArray) else [c])]
        return pa.chunked_array(chunks, type=self._type(name, dictionary))

    def _type(self, name: str, dictionary: bool) -> pa.DataType:
        import pyarrow as pa

        if dictionary and name in self.text:
            return pa.dictionary(pa.int32(), self.types[name])
        return self.types[name]

    def table(self, names: Sequence[str] | None = None) -> pa.Table:
        """Every row of the columns ``names`` (default: all), as Arrow."""
        return self._gather(self.names if names is None else list(names), 0, self.num_rows, None)

    def columns(self, names: Sequence[str]) -> pd.DataFrame:
        """Every row of the columns ``names``, as a DataFrame."""
        return self.table(names).to_pandas()

    def batches(self, names: Sequence[str], rows: int) -> Iterator[pa.RecordBatch]:
        """Every row of the columns ``names``, in order, in batches of about ``rows`` rows (whole row
        groups of each part), text columns as Arrow dictionaries: a reader holds one batch at a time."""
        for part, first in zip(self.parts, self.starts[:-1], strict=True):
            groups = len(part.starts) - 1
            step = max(1, rows * groups // max(part.num_rows, 1))
            for g in range(0, groups, step):
                lo, hi = first + part.starts[g], first + part.starts[min(g + step, groups)]
                table = self._gather(list(names), int(lo), int(hi), None, dictionary=True)
                yield from table.unify_dictionaries().combine_chunks().to_batches()

    def rows(self, rows: np.ndarray, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """The catalog rows ``rows`` (in that order, repeats kept) of ``columns`` (default: all), reading
        only the row groups that hold them."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if len(rows) and (rows.min() < 0 or rows.max() >= self.num_rows):
            raise IndexError(f"catalog rows must lie in 0..{self.num_rows - 1}")
        order = np.argsort(rows, kind="stable")
        names = self.names if columns is None else list(columns)
        table = self._gather(names, 0, self.num_rows, rows[order])
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        return table.take(inverse).to_pandas()


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
    def build(cls, ids: pa.ChunkedArray | pa.Array) -> IdIndex:
        """The index of a catalog's id column (row i holds ids[i])."""
        import pyarrow as pa

        ids = ids.cast(pa.large_string())
        ids = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
        return cls._sorted(id_hashes(ids), np.arange(len(ids), dtype=np.int64), ids)

    @classmethod
    def merge(cls, indexes: Sequence[IdIndex], offsets: Sequence[int]) -> IdIndex:
        """One index of several catalog parts, part i's rows starting at ``offsets[i]``: their sorted
        hashes merged (no id hashed again)."""
        import pyarrow as pa

        hashes = np.concatenate([index.hashes for index in indexes])
        rows = np.concatenate([index.rows + offset for index, offset in zip(indexes, offsets, strict=True)])
        ids = pa.chunked_array([c for index in indexes for c in index.ids.cast(pa.large_string()).chunks])
        return cls._sorted(
            hashes, rows, ids.combine_chunks() if ids.num_chunks else pa.array([], pa.large_string())
        )

    @classmethod
    def _sorted(cls, hashes: np.ndarray, rows: np.ndarray, ids: pa.Array) -> IdIndex:
        import pyarrow as pa

        order = np.argsort(hashes, kind="stable")
        table = pa.table({"hash": hashes[order], "row": rows[order], "id": ids.take(order)})
        duplicates = _duplicates(hashes[order], table.column("id"))
        return cls(table.replace_schema_metadata({"duplicates": json.dumps(duplicates)}))

    @staticmethod
    def file(catalog: CatalogFile, folder: Path, part: str | None = None) -> Path:
        """Where the index of ``catalog`` (named ``part`` unless it is the first part) is kept."""
        key = {"catalog": catalog.state, "format": INDEX_FORMAT, **({"part": part} if part else {})}
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        return folder / f"ids-{digest}.arrow"

    @classmethod
    def of(cls, catalog: CatalogFile, folder: Path, part: str | None = None) -> IdIndex:
        """The index of ``catalog``, memory-mapped from ``folder`` (built and written there when absent)."""
        import pyarrow as pa

        file = cls.file(catalog, folder, part)
        try:
            return cls(pa.ipc.open_file(pa.memory_map(str(file))).read_all())
        except (OSError, pa.ArrowInvalid):  # absent, or damaged: build it again
            pass
        index = cls.build(catalog.read(["id"], 0, catalog.num_rows).column("id"))
        index.keep(file)
        return index

    def keep(self, file: Path) -> None:
        """Write the index to ``file`` (in a collection's cache), unless the collection is read-only."""
        try:
            file.parent.mkdir(exist_ok=True)
            atomic_write(file, self.write)
        except OSError:  # a read-only collection: keep the index in memory
            pass

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


class PartIds:
    """The id indexes of a catalog's parts as one: rows are catalog rows (part i starts at ``starts[i]``)."""

    def __init__(self, indexes: list[IdIndex], starts: np.ndarray):
        self.indexes, self.starts = indexes, starts

    def find(self, ids: Sequence[str]) -> np.ndarray:
        """The catalog row of each id, -1 for ids not in the catalog."""
        found = np.full(len(ids), -1, dtype=np.int64)
        for index, start in zip(self.indexes, self.starts, strict=False):
            rows = index.find(ids)
            hit = (found < 0) & (rows >= 0)
            found[hit] = rows[hit] + start
        return found

    def ids_at(self, rows: np.ndarray) -> list[str]:
        """The ids of the catalog rows ``rows``."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        part = np.searchsorted(self.starts, rows, side="right") - 1
        ids = np.empty(len(rows), dtype=object)
        for number in np.unique(part):
            chosen = np.flatnonzero(part == number)
            ids[chosen] = self.indexes[number].ids_at(rows[chosen] - self.starts[number])
        return ids.tolist()

    def duplicates(self) -> list[str]:
        """Ids found more than once in one part (appends refuse ids of earlier parts)."""
        return list(dict.fromkeys(galaxy for index in self.indexes for galaxy in index.duplicates()))


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
