"""Catalog reads at survey scale: what `search --id` needs from a catalog of millions of galaxies.

Writes a catalog-only collection per size (ids like ``J123456.78+123456.7``, ra, dec, a magnitude and a
class name; images 1 x 1 pixel in a sparse file, no embeddings) under ``--work``, then times, each in a
fresh process so that its peak resident memory is its own:

- open: opening the collection, the first time (building the id index, ``cache/ids-*.arrow``) and after;
- rows_of: the row of one id; result rows: 10 random rows, every column (what a search shows);
- filter: the rows passing a filter on one column (``mag < 18``), on the text column (``class_name ==
  'merger'``) and on both, reading only those columns: the first call in the process and the best of 3;
- whole catalog: the same lookup and rows the old way, the catalog read whole into pandas.

With ``--dim D`` the collections also hold clustered embeddings of width D (benchmarks/synthetic.py) and
the compressed index galsearch builds at 10M (built once, kept in ``--work``), and ``galsearch search
COLLECTION --id ID -k 10`` (and with a text ``--where``) is timed end to end, as a user runs it: a new
process each time, wall seconds from start to exit, median of several runs. "cold" runs follow the
eviction of every file of the collection from the page cache (``posix_fadvise``: no root needed), so
the index, catalog, id index and embeddings come from disk; Python, the libraries and galsearch's own
files stay cached. ``--code DIR`` times the commands of the galsearch source tree in DIR instead (an
older checkout, to compare): then only the command rows run, since the others run this tree's code.

    python benchmarks/catalog_scale.py --rows 1000000 10000000 --work /tmp/catalog-scale
    python benchmarks/catalog_scale.py --rows 10000000 --dim 320 --work /tmp/search-scale [--code OLD]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
from fresh_process import arguments, in_process
from sparse_collection import made_once, write_sparse_collection

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CHUNK = 1_000_000
CLASSES = np.array(["spiral", "elliptical", "merger", "irregular", "star"])
FILTERS = {
    "filter, number column": "mag < 18",
    "filter, text column": "class_name == 'merger'",
    "filter, both": "mag < 18 and class_name == 'merger'",
}
COLD_RUNS, WARM_RUNS = 3, 5
REPO = Path(__file__).resolve().parent.parent
# a galsearch command in a new process, reporting its peak resident memory on stderr as it exits
COMMAND = (
    "import sys\n"
    "from galsearch.ui.cli import main\n"
    "status = main(sys.argv[1:])\n"
    "with open('/proc/self/status') as f:\n"
    "    sys.stderr.write(next(line for line in f if line.startswith('VmHWM:')))\n"
    "sys.exit(status)\n"
)


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


def write_collection(path: Path, n: int, dim: int = 0) -> None:
    """A collection of ``n`` galaxies (1 x 1 images in a sparse file); with ``dim``, clustered unit
    embeddings of that width (:func:`synthetic.clustered_chunks`), else none."""
    import pyarrow as pa
    from synthetic import CHUNK as VECTOR_CHUNK
    from synthetic import clustered_chunks

    ra, dec = unique_positions(n)
    vectors = clustered_chunks(n, dim, seed=0) if dim else None
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

    def chunk(start: int, size: int) -> tuple[dict, np.ndarray | None]:
        part = slice(start, start + size)
        columns = {
            "id": pa.array(iau_ids(ra[part], dec[part])).cast(pa.string()),
            "source": pa.array(np.full(size, "synthetic")),
            "ra": ra[part],
            "dec": dec[part],
            "mag": rng.normal(19.5, 1.2, size),
            "class_name": pa.array(CLASSES[rng.integers(0, len(CLASSES), size)]),
        }
        if vectors is None:
            return columns, None
        return columns, np.concatenate([next(vectors) for _ in range(-(-size // VECTOR_CHUNK))])

    write_sparse_collection(path, n, schema, chunk, CHUNK, dim or None)


def measure(path: Path, what: str) -> dict[str, float]:
    """Run one measurement in this process; returns seconds (best of 3 for repeatable reads), imports
    not counted."""
    import pandas as pd
    import pyarrow.parquet  # noqa: F401  (imports are not what is measured)

    from galsearch.embedder.collection import CATALOG, open_collection
    from galsearch.index.filters import filter_rows

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
        out["seconds"], out["first"] = min(times), times[0]
    return out


def build_index_once(path: Path, n: int, dim: int) -> None:
    """Build the compressed index of the collection at ``path`` unless it has one, printing the time."""
    from galsearch.embedder.collection import open_collection
    from galsearch.index.compressed import compressed_factory
    from galsearch.index.store import build_index, has_index, ivf_lists

    coll = open_collection(path)
    if not has_index(coll):
        info = build_index(coll, compressed_factory(dim, ivf_lists(n)), progress=False)
        print(
            f"| {n:,} | build {info.summary()} (benchmark set-up) | {info.build_seconds:.0f} | | {load()} |"
        )


def evict(path: Path) -> None:
    """Drop the clean pages of every file of the collection at ``path`` from the page cache."""
    for file in path.rglob("*"):
        if file.is_file():
            descriptor = os.open(file, os.O_RDONLY)
            try:
                os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(descriptor)


def command(code: Path, args: list[str]) -> tuple[float, float, str]:
    """Wall seconds of ``galsearch ARGS`` run in a new process from the source tree ``code``, its peak
    resident memory (MB) and a digest of what it printed."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", COMMAND, *args], cwd=code, capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"galsearch {' '.join(args)} failed:\n{done.stderr}")
    peak = int(done.stderr.rsplit("VmHWM:", 1)[1].split()[0]) / 1024
    return seconds, peak, hashlib.sha256(done.stdout.encode()).hexdigest()[:8]


def time_commands(path: Path, n: int, code: Path) -> None:
    """Print the rows of ``galsearch search`` in new processes: after the collection's files are evicted,
    and warm (median of the runs, their range, and the digest of the results, the same in every run)."""
    import pyarrow.parquet as pq

    from galsearch.embedder.collection import CATALOG

    with pq.ParquetFile(path / CATALOG) as file:
        galaxy = str(file.read_row_group(file.num_row_groups // 2, columns=["id"]).column("id")[0])
    search = ["search", str(path), "--id", galaxy, "-k", "10"]
    for name, args, runs, cold in (
        ("`search --id`, cold", search, COLD_RUNS, True),
        ("`search --id`, warm", search, WARM_RUNS, False),
        ("`search --id --where` (text), cold", [*search, "--where", FILTERS["filter, text column"]], 1, True),
        (
            "`search --id --where` (text), warm",
            [*search, "--where", FILTERS["filter, text column"]],
            3,
            False,
        ),
    ):
        results = []
        for _ in range(runs):
            if cold:
                evict(path)
            results.append(command(code, args))
        seconds = [result[0] for result in results]
        digests = ",".join(sorted({result[2] for result in results}))
        spread = f", runs {min(seconds):.2f}-{max(seconds):.2f}" if runs > 1 else ""
        peak = max(result[1] for result in results)
        print(
            f"| {n:,} | {name} (median of {runs}{spread}; output {digests}) "
            f"| {statistics.median(seconds):.3f} | {peak:.0f} | {load()} |",
            flush=True,
        )


def load() -> str:
    """The 1-minute load average now."""
    return f"{os.getloadavg()[0]:.1f}"


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dim", type=int, default=0, help="also embeddings of this width, an index, searches"
    )
    parser.add_argument(
        "--code", type=Path, default=REPO, help="the galsearch source tree whose commands to time"
    )


def main() -> None:
    args = arguments(__doc__, measure, "catalog-scale-", options)
    if args is None:
        return
    work, code = args.work, args.code.resolve()
    print(f"commands from {code}\n")
    print("| galaxies | read | seconds | peak RSS (MB) | load |")
    print("|---:|---|---:|---:|---:|")
    for n in args.rows:
        path = work / (f"search-{n}x{args.dim}" if args.dim else f"catalog-{n}")
        made_once(path, n, partial(write_collection, dim=args.dim), "collection")
        if args.dim:
            build_index_once(path, n, args.dim)
        reads = ("open (first: id index built)", "open", "rows_of", "result rows", *FILTERS, "whole catalog")
        for what in reads if code == REPO else ():
            if what.startswith("open (first"):
                for index in (path / "cache").glob("ids-*.arrow"):
                    index.unlink()
            result = in_process(__file__, path, what)
            seconds = result.get("seconds", result.get("open"))
            if "first" in result:
                print(f"| {n:,} | {what}, first call | {result['first']:.3f} | | {load()} |")
                what = f"{what}, best of 3"
            print(f"| {n:,} | {what} | {seconds:.3f} | {result['peak_rss_mb']:.0f} | {load()} |", flush=True)
        if args.dim:
            time_commands(path, n, code)


if __name__ == "__main__":
    main()
