"""A collection: one directory holding everything about one set of galaxies.

Layout (all paths relative to the collection directory)::

    manifest.json     format version, counts, image shape, preprocessing (band names among it), encoder
                      fingerprint, display (the bands shown as red, green and blue)
    catalog.parquet   one row per galaxy: id, source, optional ra/dec, metadata columns (the first rows)
    catalog/          the rest of the catalog (see embedder/catalog.py): ``part-N.parquet``, rows appended
                      after catalog.parquet's, in order; ``column-NAME-N.parquet``, a column set for every
                      row by :meth:`Collection.set_columns`
    images.u8         uint8 array (galaxies, H, W, C), C-order, row-aligned with the catalog
    embeddings.f32    float32 array (embedded, D), row-aligned with the catalog
    index/ ratings.sqlite heads/   written by the index, rating and fine-tuning commands
    cache/            arrays derived from the embeddings or the catalog (see embedder/cache.py, catalog.py)

The manifest is the commit point: array files are appended and catalog files written first (new files,
or a part replaced by a longer one that begins with the same rows), then the manifest is replaced
atomically, so a crash leaves the last committed state readable (bytes past the committed counts, rows
past a part's committed rows and files the manifest does not name are ignored, and dropped by the next
write). The manifest's ``catalog`` lists the parts after catalog.parquet with their rows (catalog.parquet
holds the rest of the galaxies) and the column files; appending galaxies writes a part, merging it with
the parts before it while they hold no more rows than it (so a collection keeps a few parts, each row
rewritten a few times however many appends made it), and the parts' id indexes are merged with it.
Collections of format 1 (the whole catalog in catalog.parquet) are read as they are and become format 2
on their next write.
"""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .catalog import ROW_GROUP, Catalog, CatalogFile, IdIndex, PartIds
from .display import composite, default_rgb, fallback_bands, rgb_channels
from .errors import CollectionError
from .storage import (
    append_records,
    atomic_write,
    atomic_write_json,
    exclusive_lock,
    merged_parts,
    safe_name,
    utc_now,
)
from .stretch import Stretch

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

FORMAT = "galsearch-collection"
FORMAT_VERSION = 2  # 2: the catalog in parts and column files (the manifest's "catalog"); 1 is read too
MANIFEST = "manifest.json"
CATALOG = "catalog.parquet"
CATALOG_DIR = "catalog"
IMAGES = "images.u8"
EMBEDDINGS = "embeddings.f32"
CACHE = "cache"
LOCK = ".lock"


def _write_parquet(path: Path, frame: pd.DataFrame | pa.Table) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    if isinstance(frame, pa.Table):
        pq.write_table(frame, buffer, row_group_size=ROW_GROUP)
    else:
        frame.to_parquet(buffer, index=False, row_group_size=ROW_GROUP)
    path.parent.mkdir(exist_ok=True)
    atomic_write(path, lambda f: f.write(buffer.getvalue()))


class Collection:
    """An open, validated collection directory (use :func:`open_collection` or :meth:`create`)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.manifest = self._read_manifest()
        self._forget_catalog()
        self.validate()

    # ---- creation and validation -------------------------------------------------------------

    @classmethod
    def create(
        cls, path: str | Path, image_shape: tuple[int, int, int], preprocessing: dict, name: str | None = None
    ) -> Collection:
        """Create an empty collection for images of ``image_shape`` (H, W, C)."""
        path = Path(path)
        if (path / MANIFEST).exists():
            raise CollectionError(f"{path} already holds a collection")
        if path.exists() and not path.is_dir():
            raise CollectionError(f"{path} exists and is not a directory")
        path.mkdir(parents=True, exist_ok=True)
        h, w, c = (int(v) for v in image_shape)
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "name": name or path.resolve().name,
            "created": utc_now(),
            "updated": utc_now(),
            "counts": {"galaxies": 0, "embedded": 0},
            "images": {"file": IMAGES, "dtype": "uint8", "shape": [h, w, c]},
            "preprocessing": preprocessing,
            "encoder": None,
            "embeddings": None,
            "sources": [],
            "catalog": _empty_layout(),
        }
        (path / IMAGES).touch()
        import pandas as pd

        _write_parquet(
            path / CATALOG, pd.DataFrame({"id": pd.Series(dtype=str), "source": pd.Series(dtype=str)})
        )
        atomic_write_json(path / MANIFEST, manifest)
        return cls(path)

    def _read_manifest(self) -> dict:
        if not self.path.is_dir():
            raise CollectionError(f"no collection at {self.path}: directory does not exist")
        file = self.path / MANIFEST
        if not file.is_file():
            raise CollectionError(f"{self.path} is not a galsearch collection: {MANIFEST} is missing")
        try:
            manifest = json.loads(file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CollectionError(f"{file} is not valid JSON ({exc}); the collection is damaged") from exc
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise CollectionError(f"{file} is not a galsearch collection manifest")
        version = manifest.get("format_version")
        if version not in (1, FORMAT_VERSION):
            newer = isinstance(version, int) and version > FORMAT_VERSION
            raise CollectionError(
                f"{self.path} has collection format version {version}; this galsearch reads versions 1 to "
                f"{FORMAT_VERSION}"
                + ("; it was written by a newer galsearch: upgrade galsearch" if newer else "")
            )
        layout = manifest.setdefault("catalog", _empty_layout())  # format 1: the whole catalog in one file
        if not isinstance(layout, dict) or not {"parts", "columns", "next"} <= layout.keys():
            raise CollectionError(
                f"{file} has no valid catalog layout ({layout!r}); the collection is damaged"
            )
        return manifest

    def validate(self) -> None:
        """Check that every file exists and agrees with the manifest; list every problem found.

        The catalog is checked through its file's metadata and its id index (see :mod:`embedder.catalog`);
        its other columns are read (and a damaged file reported) when they are first used.
        """
        problems: list[str] = []
        n, m = self.counts["galaxies"], self.counts["embedded"]
        problems += self._catalog_problems()
        if not problems:
            try:
                duplicates = self._id_index().duplicates() if "id" in self._layout().names else None
            except Exception as exc:  # pyarrow raises several types for damaged files
                problems.append(f"the catalog cannot be read: {exc}")
            else:
                if duplicates is None:
                    problems.append(f"{CATALOG} has no 'id' column")
                elif duplicates:
                    problems.append(f"{CATALOG} has duplicate ids, e.g. {duplicates[:5]}")
        for file, rows, row_bytes in (
            (IMAGES, n, self.image_row_bytes),
            (EMBEDDINGS, m, 4 * self.embedding_dim if self.embedding_dim else 0),
        ):
            if rows == 0:
                continue
            have = (self.path / file).stat().st_size if (self.path / file).is_file() else None
            if have is None:
                problems.append(f"{file} is missing but the manifest counts {rows} rows")
            elif have < rows * row_bytes:
                problems.append(
                    f"{file} holds {have // row_bytes} complete rows but the manifest counts {rows}"
                )
        if m > n:
            problems.append(f"manifest counts {m} embeddings for only {n} galaxies")
        if m and not self.manifest.get("encoder"):
            problems.append("embeddings exist but the manifest has no encoder fingerprint")
        if len(self.bands) != self.image_shape[2]:
            stored = self.image_shape[2]
            problems.append(f"the manifest names bands {self.bands} for {stored} stored channels")
        else:
            try:
                rgb_channels(self.bands, self.display_rgb)
            except CollectionError as exc:
                problems.append(f"the manifest's display cannot be shown: {exc}")
        if problems:
            raise CollectionError(f"collection {self.path} is inconsistent:\n  - " + "\n  - ".join(problems))

    def _catalog_problems(self) -> list[str]:
        """What is wrong with the catalog's files: missing, unreadable, or shorter than the manifest says."""
        problems = []
        for file, rows in self._catalog_files():
            try:
                have = CatalogFile(self.path / file).num_rows
            except FileNotFoundError:
                problems.append(f"{file} is missing")
                continue
            except Exception as exc:  # pyarrow raises several types for damaged files
                problems.append(f"{file} cannot be read: {exc}")
                continue
            if rows < 0:
                problems.append(f"the manifest's catalog parts hold more rows than its {len(self)} galaxies")
            elif have < rows:
                problems.append(f"{file} has {have} rows but the manifest counts {rows} galaxies in it")
        return problems

    def _catalog_files(self) -> list[tuple[str, int]]:
        """The catalog's part files with the rows of each, then its column files with theirs."""
        layout = self.manifest["catalog"]
        later = [(part["file"], int(part["rows"])) for part in layout["parts"]]
        parts = [(CATALOG, len(self) - sum(rows for _, rows in later)), *later]
        return parts + [(column["file"], int(column["rows"])) for column in layout["columns"].values()]

    # ---- reading -----------------------------------------------------------------------------

    @property
    def counts(self) -> dict[str, int]:
        """Number of galaxies and of embedded galaxies."""
        return self.manifest["counts"]

    def __len__(self) -> int:
        return self.counts["galaxies"]

    def __repr__(self) -> str:
        return f"Collection({str(self.path)!r}, galaxies={len(self)}, embedded={self.counts['embedded']})"

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of every stored image."""
        return tuple(self.manifest["images"]["shape"])

    @property
    def image_row_bytes(self) -> int:
        return math.prod(self.image_shape)

    @property
    def preprocessing(self) -> dict:
        """How raw pixels became stored images (stretch, size, channels, crop)."""
        return self.manifest["preprocessing"]

    @property
    def bands(self) -> list[str]:
        """The stored channels' band names: as recorded at ingest, else L (1 channel), R G B (3) or
        band0, band1, ... (any other number)."""
        recorded = self.preprocessing.get("bands")
        return [str(b) for b in recorded] if recorded else fallback_bands(self.image_shape[2])

    @property
    def display_rgb(self) -> list[str]:
        """The bands shown as red, green and blue: as set by :meth:`set_display`, else
        :func:`embedder.display.default_rgb` of :attr:`bands`."""
        chosen = (self.manifest.get("display") or {}).get("rgb")
        return [str(b) for b in chosen] if chosen else default_rgb(self.bands)

    @property
    def display_channels(self) -> tuple[int, int, int]:
        """The stored channel numbers shown as red, green and blue."""
        return rgb_channels(self.bands, self.display_rgb)

    def rgb(self, rows: int | slice | np.ndarray | list[int], grey: bool = False) -> np.ndarray:
        """Pictures of the galaxies at ``rows`` (one row number: (H, W, 3); a slice or row numbers:
        (n, H, W, 3) uint8) showing the :attr:`display_rgb` bands as red, green and blue.

        ``grey``: a display of one band (the same band as red, green and blue) comes as one channel,
        (..., H, W, 1), as grey picture files and grey colour maps take it.
        """
        channels = self.display_channels
        if isinstance(rows, slice) or np.ndim(rows) == 0:
            stored = self.images[rows]
        else:
            stored = read_rows(self.images, np.asarray(rows, dtype=np.int64))
        if grey and len(set(channels)) == 1:
            return np.ascontiguousarray(stored[..., [channels[0]]])
        return composite(stored, channels)

    @property
    def stretch(self) -> Stretch:
        """The stretch that turned raw pixels into the stored 8-bit images."""
        return Stretch(**self.preprocessing["stretch"])

    @property
    def crop(self) -> float:
        """The central fraction of each cutout kept at ingest (1: all of it, as before crops existed)."""
        return self.preprocessing.get("crop", 1.0)

    @property
    def encoder(self) -> dict | None:
        """Fingerprint of the encoder that made the embeddings, or None before any embedding."""
        return self.manifest.get("encoder")

    @property
    def embedding_dim(self) -> int | None:
        return (self.manifest.get("embeddings") or {}).get("dim")

    @property
    def catalog(self) -> pd.DataFrame:
        """The whole catalog as a DataFrame, one row per galaxy in storage order.

        For a few rows or columns, :meth:`catalog_rows` and :meth:`catalog_columns` read only those.
        """
        if self._catalog is None:
            try:
                self._catalog = self._layout().table().to_pandas()
            except CollectionError:
                raise
            except Exception as exc:  # pyarrow raises several types for damaged files
                raise CollectionError(f"the catalog of {self.path} cannot be read: {exc}") from exc
        return self._catalog

    @property
    def columns(self) -> list[str]:
        """The catalog's column names (read from the files' schemas while the catalog is not loaded)."""
        if self._catalog is not None:
            return [str(c) for c in self._catalog.columns]
        return list(self._layout().names)

    def catalog_rows(self, rows: np.ndarray | list[int], columns: list[str] | None = None) -> pd.DataFrame:
        """Catalog rows ``rows`` in that order (of ``columns``, default all), read without the rest."""
        if self._catalog is not None:
            frame = self._catalog.iloc[np.asarray(rows, dtype=np.int64)]
            return (frame if columns is None else frame[list(columns)]).reset_index(drop=True)
        return self._layout().rows(rows, columns)

    def catalog_columns(self, names: list[str]) -> pd.DataFrame:
        """Every row of the catalog columns ``names``, read without the others."""
        if self._catalog is not None:
            return self._catalog[list(names)].reset_index(drop=True)
        return self._layout().columns(names)

    def catalog_batches(self, names: list[str], rows: int) -> Iterator[pa.RecordBatch]:
        """Every row of the catalog columns ``names`` as Arrow record batches of about ``rows`` rows, in
        order, text columns as dictionaries: a pass over millions of rows holding one batch at a time."""
        return self._layout().batches(names, rows)

    def _layout(self) -> Catalog:
        if self._file is None:
            files = [CatalogFile(self.path / file, rows) for file, rows in self._catalog_files()]
            parts = len(self.manifest["catalog"]["parts"]) + 1
            self._file = Catalog(
                files[:parts], dict(zip(self.manifest["catalog"]["columns"], files[parts:], strict=True))
            )
        return self._file

    def _part_names(self) -> list[str | None]:
        """The names the parts' id indexes are kept under (None: catalog.parquet, as in format 1)."""
        return [None, *(part["file"] for part in self.manifest["catalog"]["parts"])]

    def _id_index(self) -> PartIds:
        if self._ids is None:
            layout = self._layout()
            indexes = [
                IdIndex.of(part, self.path / CACHE, name)
                for part, name in zip(layout.parts, self._part_names(), strict=True)
            ]
            self._ids = PartIds(indexes, layout.starts)
        return self._ids

    def _forget_catalog(self) -> None:
        self._catalog: pd.DataFrame | None = None
        self._file: Catalog | None = None
        self._ids: PartIds | None = None

    def info(self) -> dict[str, Any]:
        """What ``galsearch info`` shows, JSON-ready: counts, image shape, preprocessing, encoder, columns."""
        h, w, c = self.image_shape
        return {
            "path": str(self.path),
            "name": self.manifest["name"],
            "created": self.manifest.get("created"),
            "updated": self.manifest.get("updated"),
            "galaxies": len(self),
            "embedded": self.counts["embedded"],
            "image_shape": [h, w, c],
            "bands": self.bands,
            "display_rgb": self.display_rgb,
            "crop": self.crop,
            "stretch": self.stretch.to_dict(),
            "encoder": self.encoder,
            "embedding_dim": self.embedding_dim,
            "columns": self.columns,
            "sources": self.manifest.get("sources", []),
        }

    @property
    def images(self) -> np.ndarray:
        """All stored images as a read-only memory map of shape (galaxies, H, W, C)."""
        return self._memmap(IMAGES, np.uint8, (len(self), *self.image_shape))

    @property
    def embeddings(self) -> np.ndarray:
        """Embeddings made so far as a read-only memory map of shape (embedded, D)."""
        dim = self.embedding_dim or 0
        return self._memmap(EMBEDDINGS, np.float32, (self.counts["embedded"], dim))

    def embedding_rows(self, start: int, stop: int) -> np.ndarray:
        """Embeddings of rows ``start`` to ``stop`` read into memory: a pass over every embedding in such
        chunks keeps only a chunk resident, where one through :attr:`embeddings` maps them all."""
        dim = self.embedding_dim or 0
        count = max(min(stop, self.counts["embedded"]) - start, 0)
        with open(self.path / EMBEDDINGS, "rb") as f:
            f.seek(start * dim * 4)
            return np.fromfile(f, dtype=np.float32, count=count * dim).reshape(count, dim)

    def _memmap(self, file: str, dtype: type, shape: tuple[int, ...]) -> np.ndarray:
        if math.prod(shape) == 0:
            return np.zeros(shape, dtype=dtype)
        return np.memmap(self.path / file, dtype=dtype, mode="r", shape=shape)

    def ids_at(self, rows: np.ndarray | list[int]) -> list[str]:
        """The ids of the galaxies at catalog ``rows``, without reading the catalog."""
        return self._id_index().ids_at(np.asarray(rows, dtype=np.int64))

    def find_rows(self, ids: list[str]) -> np.ndarray:
        """Catalog row numbers of the given ids, -1 for ids not in the collection."""
        return self._id_index().find(ids)

    def rows_of(self, ids: list[str] | str) -> np.ndarray:
        """Catalog row numbers of the given ids; raises with the unknown ids listed."""
        ids = [ids] if isinstance(ids, str) else [str(i) for i in ids]
        rows = self.find_rows(ids)
        missing = [i for i, r in zip(ids, rows, strict=True) if r < 0]
        if missing:
            shown = [m if len(m) <= 80 else m[:77] + "..." for m in missing[:10]]
            more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
            raise CollectionError(f"id(s) not in collection {self.path.name}: {shown}{more}")
        return rows

    # ---- writing -----------------------------------------------------------------------------

    @contextmanager
    def writing(self) -> Iterator[Collection]:
        """Hold the collection's writer lock; re-reads the manifest so writes build on the latest state."""
        with exclusive_lock(self.path / LOCK, f"collection {self.path}"):
            self.manifest = self._read_manifest()
            self._forget_catalog()
            yield self

    def _commit(self) -> None:
        self.manifest["format_version"] = FORMAT_VERSION
        self.manifest["updated"] = utc_now()
        atomic_write_json(self.path / MANIFEST, self.manifest)

    def append_galaxies(self, images: np.ndarray, rows: pd.DataFrame) -> None:
        """Append uint8 images (n, H, W, C) and their catalog rows, then commit (inside :meth:`writing`).

        The rows are written as a new catalog part (merged with the parts before it while they hold no
        more rows), their ids indexed on their own: the cost follows the rows appended, not the collection.
        Ids already in the collection, or repeated among the rows, are refused before anything is written.
        """
        if images.dtype != np.uint8 or images.shape[1:] != self.image_shape:
            raise CollectionError(
                f"images must be uint8 of shape (n, {', '.join(map(str, self.image_shape))}), "
                f"got {images.dtype} {images.shape}"
            )
        if len(images) != len(rows):
            raise CollectionError(f"{len(images)} images but {len(rows)} catalog rows")
        if "id" not in rows.columns:
            raise CollectionError(f"catalog rows need an 'id' column; they have {list(rows.columns)}")
        import pyarrow as pa

        table = pa.Table.from_pandas(rows.reset_index(drop=True), preserve_index=False)
        index = IdIndex.build(table.column("id").cast(pa.large_string()))
        n = len(self)
        present = [
            galaxy
            for galaxy, row in zip(rows["id"], self.find_rows(list(rows["id"])), strict=True)
            if row >= 0
        ]
        again = index.duplicates() + present
        if again:
            raise CollectionError(
                f"id(s) already in collection {self.path.name}: {sorted(map(str, again))[:10]}"
            )
        append_records(self.path / IMAGES, n * self.image_row_bytes, np.ascontiguousarray(images).tobytes())
        self._append_part(table, index)
        self.counts["galaxies"] = n + len(images)
        self._commit()
        self._tidy()

    def _append_part(self, table: pa.Table, index: IdIndex) -> None:
        """Write ``table`` as the catalog's last part, merged with the parts before it that hold no more
        rows than it (and than each other, merged), and record it in the manifest (not yet committed)."""
        import pyarrow as pa

        layout, names = self._layout(), self._part_names()
        first, total = merged_parts([part.num_rows for part in layout.parts], table.num_rows)
        catalog = self.manifest["catalog"]
        if first == len(layout.parts):
            name = f"{CATALOG_DIR}/part-{catalog['next']:06d}.parquet"
            catalog["next"] += 1
        else:
            name = names[first] or CATALOG
            merged = [part.read(part.names, 0, part.num_rows) for part in layout.parts[first:]]
            offsets = np.append(layout.starts[first:-1], layout.num_rows) - layout.starts[first]
            index = IdIndex.merge([*self._id_index().indexes[first:], index], offsets.tolist())
            table = pa.concat_tables([*merged, table], promote_options="permissive")
        _write_parquet(self.path / name, table)
        written = CatalogFile(self.path / name, total)
        index.keep(IdIndex.file(written, self.path / CACHE, None if name == CATALOG else name))
        kept = catalog["parts"][: max(first - 1, 0)]
        catalog["parts"] = kept + ([{"file": name, "rows": total}] if name != CATALOG else [])

    def _tidy(self) -> None:
        """Remove the catalog files and id indexes that the committed manifest no longer names."""
        self._forget_catalog()
        named = {file for file, _ in self._catalog_files()}
        folder = self.path / CATALOG_DIR
        for file in folder.glob("*.parquet") if folder.is_dir() else []:
            if f"{CATALOG_DIR}/{file.name}" not in named:
                file.unlink(missing_ok=True)
        layout = self._layout()
        kept = {
            IdIndex.file(part, self.path / CACHE, name)
            for part, name in zip(layout.parts, self._part_names(), strict=True)
        }
        for file in (self.path / CACHE).glob("ids-*.arrow"):
            if re.fullmatch(r"ids-[0-9a-f]{16}\.arrow", file.name) and file not in kept:
                file.unlink(missing_ok=True)

    def set_columns(self, columns: dict[str, np.ndarray | pd.Series]) -> None:
        """Add or replace catalog columns (one value per galaxy in row order); commit (in :meth:`writing`).

        Each column is written to a file of its own: the cost follows the column, not the catalog.
        """
        import pandas as pd

        n, catalog = len(self), self.manifest["catalog"]
        for name, values in columns.items():
            if name in ("id", "source"):
                raise CollectionError(f"the catalog column {name!r} cannot be replaced")
            if len(values) != n:
                raise CollectionError(f"column {name!r} has {len(values)} values for {n} galaxies")
        for name, values in columns.items():
            file = f"{CATALOG_DIR}/column-{safe_name(str(name), 'column')}-{catalog['next']:06d}.parquet"
            catalog["next"] += 1
            _write_parquet(self.path / file, pd.DataFrame({name: np.asarray(values)}))
            catalog["columns"][str(name)] = {"file": file, "rows": n}
        self._commit()
        self._tidy()

    def set_display(self, rgb: list[str]) -> None:
        """Show the bands ``rgb`` (names of :attr:`bands`) as red, green and blue from now on, everywhere;
        commits under the writer lock, which it takes itself (not to be called inside :meth:`writing`)."""
        with self.writing():
            rgb_channels(self.bands, rgb)
            self.manifest["display"] = {"rgb": [str(b) for b in rgb]}
            self._commit()

    def record_source(self, entry: dict[str, Any]) -> None:
        """Add a provenance entry (what was ingested, when, how many) to the manifest and commit."""
        self.manifest["sources"].append({"time": utc_now(), **entry})
        self._commit()

    def start_embeddings(self, encoder: dict, dim: int) -> None:
        """Discard existing embeddings and start new ones made by ``encoder`` (inside :meth:`writing`)."""
        self.manifest["encoder"] = encoder
        self.manifest["embeddings"] = {"file": EMBEDDINGS, "dtype": "float32", "dim": int(dim)}
        self.counts["embedded"] = 0
        self._commit()
        (self.path / EMBEDDINGS).unlink(missing_ok=True)

    def append_embeddings(self, vectors: np.ndarray) -> None:
        """Append float32 embeddings for the next rows and commit (inside :meth:`writing`)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        m, dim = self.counts["embedded"], self.embedding_dim
        if vectors.ndim != 2 or vectors.shape[1] != dim or m + len(vectors) > len(self):
            raise CollectionError(f"cannot append embeddings of shape {vectors.shape} at row {m} (dim {dim})")
        append_records(self.path / EMBEDDINGS, m * dim * 4, vectors.tobytes())
        self.counts["embedded"] = m + len(vectors)
        self._commit()


def _empty_layout() -> dict[str, Any]:
    """The manifest's catalog of a new collection (or of format 1): all in catalog.parquet."""
    return {"parts": [], "columns": {}, "next": 1}


def read_rows(array: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Rows of a memory-mapped array, in the order given, read from disk in ascending order."""
    order = np.argsort(rows)
    out = np.empty((len(rows), *array.shape[1:]), dtype=array.dtype)
    out[order] = array[rows[order]]
    return out


def open_collection(path: str | Path) -> Collection:
    """Open and validate the collection at ``path``."""
    return Collection(path)


def image_rows(path: str | Path, image_shape: tuple[int, int, int], start: int, stop: int) -> np.ndarray:
    """Images ``start:stop`` of the collection at ``path`` as a read-only memory map, without opening the
    collection (for Dask workers, which read their rows' pixels from the shared files themselves)."""
    row_bytes = math.prod(image_shape)
    return np.memmap(
        Path(path) / IMAGES, np.uint8, mode="r", offset=start * row_bytes, shape=(stop - start, *image_shape)
    )
