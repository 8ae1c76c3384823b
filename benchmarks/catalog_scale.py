"""Catalog reads at survey scale: what `search --id` needs from a catalog of millions of galaxies.

Writes a catalog-only collection per size (ids like ``J123456.78+123456.7``, ra, dec, a magnitude and a
class name; images 1 x 1 pixel in a sparse file, no embeddings) under ``--work``, then times, each in a
fresh process so that its peak resident memory is its own:

- open: opening the collection, the first time (building the id index, ``cache/ids-*.arrow``) and after;
- rows_of: the row of one id; result rows: 10 random rows, every column (what a search shows);
- filter: the rows passing a filter on one column (``mag < 18``) and on two (``... and class_name ==
  'merger'``), reading only those columns;
- whole catalog: the same lookup and rows the old way, the catalog read whole into pandas.

    python benchmarks/catalog_scale.py --rows 1000000 10000000 --work /tmp/catalog-scale
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from fresh_process import arguments, in_process
from sparse_collection import made_once, write_sparse_collection

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CHUNK = 1_000_000
CLASSES = np.array(["spiral", "elliptical", "merger", "irregular", "star"])
FILTERS = {"filter, 1 column": "mag < 18", "filter, 2 columns": "mag < 18 and class_name == 'merger'"}


def iau_ids(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """IAU-style names ``JHHMMSS.ss+DDMMSS.s`` of positions (degrees), as 19-byte strings."""
    centiseconds = np.round(ra / 15 * 360_000).astype(np.int64) % (24 * 360_000)
    deciarcsec = np.minimum(np.round(np.abs(dec) * 36_000).astype(np.int64), 90 * 36_000 - 1)
    fields = [
        centiseconds // 360_000,  # hours
        centiseconds // 6000 % 60,  # minutes
        centiseconds // 100 % 60,  # seconds
        None,
        centiseconds % 100,  # centiseconds
        deciarcsec // 36_000,  # degrees
        deciarcsec // 600 % 60,  # arcminutes
        deciarcsec // 10 % 60,  # arcseconds
        None,
        deciarcsec % 10,  # tenths
    ]
    chars = np.empty((len(ra), 19), dtype=np.uint8)
    chars[:, 0] = ord("J")
    column = 1
    for i, field in enumerate(fields):
        if field is None:
            chars[:, column] = ord(".")
            column += 1
        else:
            width = 1 if i == 9 else 2
            for place in range(width):
                chars[:, column + place] = ord("0") + field // 10 ** (width - 1 - place) % 10
            column += width
        if i == 4:  # after the right ascension: the declination's sign
            chars[:, column] = np.where(dec < 0, ord("-"), ord("+"))
            column += 1
    return chars.view("S19").reshape(-1)


def unique_positions(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` positions uniform on the sky whose IAU names differ."""
    rng = np.random.default_rng(seed)
    ra, dec = rng.uniform(0, 360, n), np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    while True:
        _, first = np.unique(iau_ids(ra, dec), return_index=True)
        again = np.setdiff1d(np.arange(n), first)
        if not len(again):
            return ra, dec
        ra[again], dec[again] = (
            rng.uniform(0, 360, len(again)),
            np.degrees(np.arcsin(rng.uniform(-1, 1, len(again)))),
        )


def write_collection(path: Path, n: int) -> None:
    """A catalog-only collection of ``n`` galaxies (1 x 1 images in a sparse file, no embeddings)."""
    import pyarrow as pa

    ra, dec = unique_positions(n)
    rng = np.random.default_rng(1)
    schema = pa.schema(
        [
            ("id", pa.string()),
            ("source", pa.string()),
            ("ra", pa.float64()),
            ("dec", pa.float64()),
            ("mag", pa.float64()),
            ("class_name", pa.string()),
        ]
    )

    def chunk(start: int, size: int) -> tuple[dict, None]:
        part = slice(start, start + size)
        columns = {
            "id": pa.array(iau_ids(ra[part], dec[part])).cast(pa.string()),
            "source": pa.array(np.full(size, "synthetic")),
            "ra": ra[part],
            "dec": dec[part],
            "mag": rng.normal(19.5, 1.2, size),
            "class_name": pa.array(CLASSES[rng.integers(0, len(CLASSES), size)]),
        }
        return columns, None

    write_sparse_collection(path, n, schema, chunk, CHUNK)


def measure(path: Path, what: str) -> dict[str, float]:
    """Run one measurement in this process; returns seconds (best of 3 for repeatable reads), imports
    not counted."""
    import pandas as pd
    import pyarrow.parquet  # noqa: F401  (imports are not what is measured)

    from embedder.collection import CATALOG, open_collection
    from index.filters import filter_rows

    out: dict[str, float] = {}
    start = time.perf_counter()
    if what == "whole catalog":
        catalog = pd.read_parquet(path / CATALOG)
        galaxy = str(catalog["id"].iloc[len(catalog) // 2])
        row = pd.Index(catalog["id"]).get_indexer([galaxy])
        catalog.iloc[np.r_[row, np.arange(9)]]
        out["seconds"] = time.perf_counter() - start
        return out
    coll = open_collection(path)
    out["open"] = time.perf_counter() - start
    n = len(coll)
    rng = np.random.default_rng(2)
    galaxy = str(coll.catalog_rows([n // 2], ["id"])["id"].iloc[0])
    runs = {
        "rows_of": lambda: coll.rows_of(galaxy),
        "result rows": lambda: coll.catalog_rows(rng.choice(n, 10, replace=False)),
        **{name: (lambda where=where: filter_rows(coll, where)) for name, where in FILTERS.items()},
    }
    if what in runs:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            runs[what]()
            times.append(time.perf_counter() - start)
        out["seconds"] = min(times)
    return out


def main() -> None:
    args = arguments(__doc__, measure, "catalog-scale-")
    if args is None:
        return
    work = args.work
    print("| galaxies | read | seconds | peak RSS (MB) |")
    print("|---:|---|---:|---:|")
    for n in args.rows:
        path = work / f"catalog-{n}"
        made_once(path, n, write_collection, "catalog")
        for what in (
            "open (first: id index built)",
            "open",
            "rows_of",
            "result rows",
            *FILTERS,
            "whole catalog",
        ):
            if what.startswith("open (first"):
                for index in (path / "cache").glob("ids-*.arrow"):
                    index.unlink()
            result = in_process(__file__, path, what)
            seconds = result.get("seconds", result.get("open"))
            print(f"| {n:,} | {what} | {seconds:.3f} | {result['peak_rss_mb']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
