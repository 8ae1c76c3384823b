"""Survey-scale search: build time, memory, latency and recall of galsearch's indexes at millions of vectors.

    python benchmarks/scale.py [--sizes 1000000,10000000] [--dim 320] [--queries 200] [--shards 4]
                               [--factory F ...] [--work DIR]

For each size, writes a real collection of synthetic clustered embeddings (benchmarks/synthetic.py; reused
from --work when it is there) and prints one markdown table with a line for each index built by
``build_index``: the automatic choice, the compressed structure re-ranked from disk (when the automatic
choice is another), each of them split into --shards shards searched in threads, and any --factory asked
for. Columns: build time; index file size; how much a search process grows when it loads the index, its
peak RSS (counting the pages of embeddings.f32 that re-ranking mapped: shared, reclaimable page cache)
and its private memory after searching; p50/p99 latency of single queries; per-query time in one batch;
recall@10 against exact search (over the memmap, in chunks) for held-out queries. Each index is searched
in a fresh process, so that the memory figures are its own. Targets at 10M vectors of dim 320 on 2 cores
/ 24 GB: p50 <= 5 ms with recall@10 >= 0.95, index RAM <= 4 GB, build <= 30 min.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
from synthetic import write_collection

from galsearch.embedder.collection import open_collection
from galsearch.index.compressed import available_memory, compressed_factory
from galsearch.index.store import auto_factory, build_index, exact_search, ivf_lists, load_index, normalized

K = 10
QUERIES_FILE, TRUTH_FILE = "benchmark-queries.npy", "benchmark-truth.npy"


@dataclass
class Line:
    """One index of the table."""

    index: str
    shards: int
    build_s: float
    file_bytes: int
    measured: dict


def memory_status(field: str) -> int:
    """Bytes of a /proc/self/status field: VmRSS (resident now), RssAnon (private memory now) or VmHWM
    (peak resident; unlike ru_maxrss, not inherited from the parent this process was started from)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(f"{field}:"))


def measure(path: Path) -> dict:
    """Load the collection's index and search it (in this process, started for it): memory and speed."""
    queries, truth = np.load(path / QUERIES_FILE), np.load(path / TRUTH_FILE)
    coll = open_collection(path)
    before = memory_status("VmRSS")
    index = load_index(coll, device="cpu")
    grown = memory_status("VmRSS") - before
    times = []
    for query in queries:
        start = time.perf_counter()
        index.search(query[None], K)
        times.append(1000 * (time.perf_counter() - start))
    start = time.perf_counter()
    found = index.search(queries, K)[1]
    batch_ms = 1000 * (time.perf_counter() - start) / len(queries)
    hits = [len(np.intersect1d(f, t)) for f, t in zip(found, truth, strict=True)]
    return {
        "load_rss": grown,
        "peak_rss": memory_status("VmHWM"),  # with pages of embeddings.f32 that re-ranking mapped
        "private": memory_status("RssAnon"),
        "p50_ms": statistics.median(times),
        "p99_ms": float(np.percentile(times, 99)),
        "batch_ms": batch_ms,
        "recall": float(np.mean(hits)) / K,
    }


def collection_of(work: Path, n: int, dim: int, queries: int) -> Path:
    """The synthetic collection of ``n`` vectors with its held-out queries and their exact neighbours."""
    path = work / f"synthetic-{n}x{dim}"
    if (path / TRUTH_FILE).is_file() and len(np.load(path / QUERIES_FILE)) == queries:
        return path
    shutil.rmtree(path, ignore_errors=True)
    start = time.perf_counter()
    coll, held_out = write_collection(path, n, dim, queries)
    print(f"wrote {n:,} vectors to {path} in {time.perf_counter() - start:.0f} s", flush=True)
    held_out = normalized(held_out)
    truth = exact_search(coll.embeddings, np.arange(n), held_out, K, "cosine")[1]
    np.save(path / QUERIES_FILE, held_out)
    np.save(path / TRUTH_FILE, truth)
    return path


def run(path: Path, factory: str | None, shards: int) -> Line:
    """Build one index of the collection here, then measure it in a fresh process."""
    info = build_index(open_collection(path), factory, shards=shards, progress=False)
    done = subprocess.run(
        [sys.executable, __file__, "--measure", str(path)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"measuring {info.factory} failed:\n{done.stderr}")
    name = info.factory + (f", re-rank {info.rerank} x k" if info.rerank else "")
    params = ",".join(f"{k}={v}" for k, v in info.search_params.items())
    return Line(
        f"{name} {params}".strip(), shards, info.build_seconds, info.disk_bytes, json.loads(done.stdout)
    )


def print_header(n: int, dim: int, queries: int) -> None:
    print(f"\n### {n:,} vectors of dim {dim}, cosine, k={K}, {queries} held-out queries\n")
    print(
        "| index | shards | build s | file MiB | load RSS MiB | peak RSS MiB | private MiB | p50 ms "
        "| p99 ms | batch ms/query | recall@10 |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |", flush=True)


def print_line(line: Line) -> None:
    m = line.measured
    print(
        f"| {line.index} | {line.shards} | {line.build_s:.0f} | {line.file_bytes / 2**20:.0f} "
        f"| {m['load_rss'] / 2**20:.0f} | {m['peak_rss'] / 2**20:.0f} | {m['private'] / 2**20:.0f} "
        f"| {m['p50_ms']:.2f} "
        f"| {m['p99_ms']:.2f} | {m['batch_ms']:.3f} | {m['recall']:.3f} |",
        flush=True,
    )


def benchmark(work: Path, n: int, dim: int, queries: int, shards: int, factories: list[str]) -> None:
    """Every index of one size, as one table printed a line at a time: the compressed structure first."""
    path = collection_of(work, n, dim, queries)
    runs: list[tuple[str | None, int]] = []
    if compressed_factory(dim, ivf_lists(n)) != auto_factory(n, dim):
        runs += [(compressed_factory(dim, ivf_lists(-(-n // count))), count) for count in (1, shards)]
    runs += [(None, 1), (None, shards)]  # None: the automatic choice
    runs += [(factory, 1) for factory in factories]
    print_header(n, dim, queries)
    for factory, count in runs:
        print_line(run(path, factory, count))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1000000,10000000", help="comma-separated collection sizes")
    parser.add_argument("--dim", type=int, default=320)
    parser.add_argument("--queries", type=int, default=200, help="held-out queries (each timed alone)")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--factory", action="append", default=[], help="also measure this structure")
    parser.add_argument(
        "--work", type=Path, help="where the collections are kept (default: a temporary folder)"
    )
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # the search process of one index
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return
    print(
        f"machine: {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
        f"{available_memory() / 2**30:.1f} GiB available, load {os.getloadavg()[0]:.2f}, "
        f"faiss {faiss.__version__} with {faiss.omp_get_max_threads()} threads, "
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}"
    )
    with contextlib.nullcontext(args.work) if args.work else tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        for n in (int(s) for s in args.sizes.split(",")):
            benchmark(work, n, args.dim, args.queries, args.shards, args.factory)
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
