"""Synthetic collections for the scale benchmarks, written straight to the collection's files.

Images are 1 pixel each in a sparse file (no disk used); the catalog is written a chunk at a time, and
with it, optionally, float32 embeddings. Heavy imports happen inside, so that a benchmark's child
process that only measures does not load them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import numpy as np

Chunk = Callable[[int, int], tuple[dict, np.ndarray | None]]


def write_sparse_collection(
    path: Path, n: int, schema, chunk: Chunk, chunk_rows: int, dim: int | None = None
) -> None:
    """``n`` galaxies at ``path``: ``chunk(start, size)`` gives the catalog columns (pyarrow ``schema``)
    of rows ``start`` to ``start + size`` and, with ``dim``, their (size, dim) embeddings."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from galsearch.embedder.catalog import ROW_GROUP
    from galsearch.embedder.collection import CATALOG, EMBEDDINGS, IMAGES, MANIFEST, Collection
    from galsearch.embedder.storage import atomic_write_json

    coll = Collection.create(path, (1, 1, 1), {}, name=path.name)
    with ExitStack() as files:
        catalog = files.enter_context(pq.ParquetWriter(path / CATALOG, schema))
        vectors = files.enter_context(open(path / EMBEDDINGS, "wb")) if dim else None
        for start in range(0, n, chunk_rows):
            columns, embeddings = chunk(start, min(chunk_rows, n - start))
            catalog.write_table(pa.table(columns, schema=schema), row_group_size=ROW_GROUP)
            if vectors:
                vectors.write(np.ascontiguousarray(embeddings, dtype=np.float32).tobytes())
    with open(path / IMAGES, "r+b") as f:
        f.truncate(n)
    manifest = coll.manifest
    manifest["counts"] = {"galaxies": n, "embedded": n if dim else 0}
    if dim:
        manifest["encoder"] = {"architecture": "synthetic-clusters", "dim": dim}
        manifest["embeddings"] = {"file": EMBEDDINGS, "dtype": "float32", "dim": dim}
    atomic_write_json(path / MANIFEST, manifest)


def made_once(path: Path, n: int, write: Callable[[Path, int], None], what: str) -> None:
    """Write the collection of ``n`` galaxies at ``path`` with ``write`` unless it is there, printing
    the time it took as a benchmark table row."""
    if not (path / "manifest.json").exists():
        start = time.perf_counter()
        write(path, n)
        print(f"| {n:,} | write the {what} (benchmark set-up) | {time.perf_counter() - start:.1f} | |")
