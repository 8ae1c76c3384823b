"""Nightly batches onto a large collection: what appending N galaxies costs, and search quality after.

Onto an existing collection with embeddings and an index (e.g. the 10M one that
``benchmarks/catalog_scale.py --rows 10000000 --dim 320 --work DIR`` makes), appends ``--batches``
batches of ``--batch-rows`` galaxies (catalog rows like catalog_scale's, 1-pixel images, clustered
embeddings from the same mixture as the collection's: benchmarks/synthetic.py), each as a nightly run
would: the catalog and images (``append_galaxies``), the embeddings (``append_embeddings``), the index
(``add_to_index``). Per batch it prints the seconds of each step, the disk the collection grew by, its
catalog parts, and the seconds a new process takes to open the collection and find one new id (the first
command after an append, which used to rebuild the id index).

After the batches, recall@10 of the index against exact search (cosine, every embedding read in chunks)
for queries from the old rows and from the new, next to the index's recall on the same old-row queries
before the batches; ``--fresh`` also builds the index afresh over all rows (as ``galsearch index
--rebuild`` does) and measures it the same way. The collection is put back as it was at the end (and at
the start, if an earlier run was stopped): arrays truncated, manifest and index files restored from
hard links kept beside it, catalog parts and their id indexes removed.

    python benchmarks/nightly.py /tmp/coldstart/search-10000000x320 --batches 3
    python benchmarks/nightly.py /tmp/coldstart/search-1000000x320 --batches 10 --fresh
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from catalog_scale import CLASSES, iau_ids, unique_positions

K = 10
CHUNK_ROWS = 500_000  # embeddings read at a time for the exact search
FIND_NEW_ID = (
    "import sys, time\n"
    "start = time.perf_counter()\n"
    "from galsearch.embedder.collection import open_collection\n"
    "open_collection(sys.argv[1]).rows_of(sys.argv[2])\n"
    "print(time.perf_counter() - start)\n"
)


def mixture(n: int, dim: int, seed: int, clusters: int = 200, rank: int = 16) -> np.ndarray:
    """``n`` more unit vectors from the mixture of ``synthetic.clustered_chunks(..., seed=0)`` (the same
    centres and subspaces, drawn from them with ``seed``)."""
    import faiss

    shape = np.random.default_rng(0)  # as clustered_chunks draws its mixture
    centres = shape.standard_normal((clusters, dim), dtype=np.float32)
    bases = shape.standard_normal((clusters, rank, dim), dtype=np.float32) / np.sqrt(rank)
    rng = np.random.default_rng(seed)
    members = rng.integers(clusters, size=n)
    vectors = 0.3 * rng.standard_normal((n, dim), dtype=np.float32)
    for c in np.unique(members):
        rows = np.flatnonzero(members == c)
        vectors[rows] += centres[c] + rng.standard_normal((len(rows), rank), dtype=np.float32) @ bases[c]
    faiss.normalize_L2(vectors)
    return vectors


def batch_rows(n: int, seed: int):  # -> pd.DataFrame
    """Catalog rows of ``n`` new galaxies, as catalog_scale writes them."""
    import pandas as pd

    ra, dec = unique_positions(n, seed)
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "id": iau_ids(ra, dec).astype(str),
            "source": "nightly",
            "ra": ra,
            "dec": dec,
            "mag": rng.normal(19.5, 1.2, n),
            "class_name": CLASSES[rng.integers(0, len(CLASSES), n)],
        }
    )


def disk_bytes(path: Path) -> int:
    """Bytes of the files under ``path`` (their sizes: a sparse file counts whole)."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def backup_of(path: Path) -> Path:
    return path.with_name(path.name + ".nightly-backup")


def save(path: Path) -> None:
    """Keep what appending changes (manifest, index files as hard links, the list of id indexes)."""
    backup = backup_of(path)
    shutil.copytree(path / "index", backup / "index", copy_function=os.link)
    shutil.copy2(path / "manifest.json", backup / "manifest.json")
    names = [f.name for f in (path / "cache").glob("ids-*.arrow")]
    (backup / "ids.txt").write_text("\n".join(names))


def restore(path: Path) -> None:
    """Put the collection back as :func:`save` found it."""
    import json

    backup = backup_of(path)
    manifest = json.loads((backup / "manifest.json").read_text())
    counts, shape = manifest["counts"], manifest["images"]["shape"]
    dim = manifest["embeddings"]["dim"]
    os.truncate(path / "images.u8", counts["galaxies"] * int(np.prod(shape)))
    os.truncate(path / "embeddings.f32", counts["embedded"] * dim * 4)
    shutil.rmtree(path / "index")
    shutil.copytree(backup / "index", path / "index", copy_function=os.link)
    shutil.rmtree(path / "catalog", ignore_errors=True)
    kept = set((backup / "ids.txt").read_text().split())
    for file in (path / "cache").glob("ids-*.arrow"):
        if file.name not in kept:
            file.unlink()
    shutil.copy2(backup / "manifest.json", path / "manifest.json")
    shutil.rmtree(backup)


def exact_top(coll, queries: np.ndarray, limit: int) -> np.ndarray:  # coll: Collection
    """Rows of the K nearest embeddings (cosine) to each query among the first ``limit`` rows, from one
    pass over the embeddings, CHUNK_ROWS at a time."""
    import faiss

    queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    best_scores, best_rows = np.full((len(queries), K), -np.inf), np.full((len(queries), K), -1)
    for start in range(0, limit, CHUNK_ROWS):
        chunk = coll.embedding_rows(start, min(start + CHUNK_ROWS, limit))
        faiss.normalize_L2(chunk)
        scores = queries @ chunk.T
        top = np.argpartition(-scores, K - 1, axis=1)[:, :K]
        merged_scores = np.hstack([best_scores, np.take_along_axis(scores, top, axis=1)])
        merged_rows = np.hstack([best_rows, top + start])
        keep = np.argsort(-merged_scores, axis=1)[:, :K]
        best_scores = np.take_along_axis(merged_scores, keep, axis=1)
        best_rows = np.take_along_axis(merged_rows, keep, axis=1)
    return best_rows


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth, strict=True)]))


def shape(coll) -> str:  # coll: Collection
    """The index's shards (rows each) and search parameters."""
    from galsearch.index.store import read_info

    parts = read_info(coll).parts
    sizes = " + ".join(f"{part.ntotal / 1e6:.1f}M" for part in parts)
    return f"{sizes} rows, {parts[0].search_params}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("collection", type=Path)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--batch-rows", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=100, help="of old rows, and as many of new rows")
    parser.add_argument("--fresh", action="store_true", help="also build the index afresh and measure it")
    args = parser.parse_args()

    from galsearch.embedder.collection import open_collection
    from galsearch.index.store import add_to_index, build_index, load_index, read_info

    path = args.collection
    if backup_of(path).exists():
        restore(path)
    coll = open_collection(path)
    n0, dim = len(coll), coll.embedding_dim
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()} ({os.cpu_count()} cores), load {load}")
    print(f"{path}: {n0:,} galaxies, index {read_info(coll).factory}\n")
    rng = np.random.default_rng(7)
    picks = np.sort(rng.choice(n0, args.queries, replace=False))
    old_queries = np.stack([coll.embedding_rows(int(r), int(r) + 1)[0] for r in picks])
    before = exact_top(coll, old_queries, n0)
    recall_before = recall(load_index(coll).search(old_queries, K)[1], before)
    shape_before = shape(coll)

    save(path)
    try:
        print(
            "| batch | galaxies after | catalog + images (s) | embeddings (s) | index add (s) | total (s) "
            "| disk growth (MB) | catalog parts | new process: open + find a new id (s) | load |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for batch in range(1, args.batches + 1):
            rows = batch_rows(args.batch_rows, seed=1000 + batch)
            vectors = mixture(args.batch_rows, dim, seed=2000 + batch)
            size = disk_bytes(path)
            started = time.perf_counter()
            coll = open_collection(path)
            with coll.writing():
                present = coll.find_rows(rows["id"].tolist()) >= 0  # a few of 10M positions share a name
                rows, vectors = rows[~present], vectors[~present]
                coll.append_galaxies(np.zeros((len(rows), 1, 1, 1), np.uint8), rows)
            catalog = time.perf_counter()
            with coll.writing():
                coll.append_embeddings(vectors)
            embedded = time.perf_counter()
            add_to_index(coll, progress=False)
            done = time.perf_counter()
            grown = (disk_bytes(path) - size) / 1e6
            parts = len(coll.manifest["catalog"]["parts"]) + 1
            newest = str(rows["id"].iloc[-1])
            child = subprocess.run(
                [sys.executable, "-c", FIND_NEW_ID, str(path), newest],
                check=True,
                capture_output=True,
                text=True,
            )
            print(
                f"| {batch} | {len(coll):,} | {catalog - started:.1f} | {embedded - catalog:.1f} "
                f"| {done - embedded:.1f} | {done - started:.1f} | {grown:,.0f} | {parts} "
                f"| {float(child.stdout):.2f} | {os.getloadavg()[0]:.1f} |",
                flush=True,
            )
        coll = open_collection(path)
        n = len(coll)
        picks = np.sort(rng.choice(np.arange(n0, n), args.queries, replace=False))
        new_queries = np.stack([coll.embedding_rows(int(r), int(r) + 1)[0] for r in picks])
        queries = np.vstack([old_queries, new_queries])
        truth = exact_top(coll, queries, n)
        old, new = slice(0, args.queries), slice(args.queries, None)
        print(f"\n| recall@{K} ({args.queries} queries each) | index | old-row queries | new-row queries |")
        print("|---|---|---:|---:|")
        print(f"| before the batches ({n0:,} rows) | {shape_before} | {recall_before:.4f} | |")
        found = load_index(coll).search(queries, K)[1]
        print(
            f"| added to ({n:,} rows) | {shape(coll)} | {recall(found[old], truth[old]):.4f} "
            f"| {recall(found[new], truth[new]):.4f} |"
        )
        if args.fresh:
            started = time.perf_counter()
            build_index(coll, read_info(coll).factory, progress=False)
            found = load_index(coll).search(queries, K)[1]
            print(
                f"| built afresh ({n:,} rows, {time.perf_counter() - started:.0f} s) | {shape(coll)} "
                f"| {recall(found[old], truth[old]):.4f} | {recall(found[new], truth[new]):.4f} |"
            )
    finally:
        restore(path)
    print(f"\nload {' / '.join(f'{x:.1f}' for x in os.getloadavg())} at the end")


if __name__ == "__main__":
    main()
