"""Embedding throughput on a local Dask cluster against one process, on the demo collection.

    python benchmarks/dask_embed.py [--collection DIR] [--encoder SPEC] [--threads N] [--workers 1,2,4]
                                    [--batch-size N] [--partition-rows N] [--repeats N]

Each run embeds a fresh unembedded copy of the collection; the best of ``--repeats`` runs is shown.
Throughput is rows over the embedding time that ``embed`` reports (from the first row to the last
commit); startup is the rest of the wall time (loading the encoder, and for a cluster starting its
processes). CPU time counts every process (this one, with the scheduler of a local cluster, and the
workers) while ``embed`` runs: it depends far less than throughput on how busy the machine is.
``--threads N`` pins this process and the workers it starts to N CPUs, split evenly between the
workers (with more workers than CPUs, each still gets one). Target: one worker within 10% of one
process, with identical embeddings; more workers than cores show the cost of a cluster's processes,
not a speed-up.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import psutil
import torch

from galsearch.embedder import DEFAULT_ENCODER, embed, ingest, open_collection
from galsearch.embedder.demo import build_demo, default_demo_path
from galsearch.embedder.distributed import dask_client


def unembedded_copy(collection: Path, workdir: Path) -> Path:
    """A new collection with the same images and ids, nothing embedded."""
    coll = open_collection(collection)
    source = workdir / "images.npz"
    np.savez(source, images=np.array(coll.images), ids=coll.catalog["id"].to_numpy(str))
    ingest(source, workdir / "fresh", progress=False)
    return workdir / "fresh"


def cpu_seconds() -> float:
    """CPU time this process has used (user + system)."""
    times = psutil.Process().cpu_times()
    return times.user + times.system


def run(fresh: Path, target: Path, workers: int | None, args: argparse.Namespace) -> tuple[float, ...]:
    """Embed a copy of ``fresh`` at ``target`` in one process or on a local cluster of ``workers``.

    Returns images/s while embedding, startup seconds, and CPU seconds per 1000 images of every process
    (this one and the workers) from the call of ``embed`` to its return.
    """
    shutil.copytree(fresh, target)
    options = dict(
        batch_size=args.batch_size, device="cpu", progress=False, partition_rows=args.partition_rows
    )
    start = time.perf_counter()
    if workers is None:
        cpu = cpu_seconds()
        report = embed(target, args.encoder, **options)
        cpu = cpu_seconds() - cpu
    else:
        with dask_client(workers=workers) as client:
            cpu = cpu_seconds() + sum(client.run(cpu_seconds).values())
            report = embed(target, args.encoder, dask=client.scheduler.address, **options)
            cpu = cpu_seconds() + sum(client.run(cpu_seconds).values()) - cpu
    wall = time.perf_counter() - start
    return report.embedded / report.seconds, wall - report.seconds, 1000 * cpu / report.embedded


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--collection", type=Path, help="default: the demo collection (built if needed)")
    parser.add_argument("--encoder", default=DEFAULT_ENCODER)
    parser.add_argument("--threads", type=int, help="CPUs to use in all (default: all this process may)")
    parser.add_argument("--workers", default="1,2,4", help="local cluster sizes to run (default 1,2,4)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--partition-rows", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=1, help="runs of each; the best is shown")
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    if args.threads:
        os.sched_setaffinity(0, cpus[: args.threads])  # inherited by the workers this process starts
    threads = len(os.sched_getaffinity(0))
    load = os.getloadavg()[0]
    torch.set_num_threads(threads)
    collection = args.collection or build_demo(default_demo_path(), progress=False).path
    coll = open_collection(collection)
    sizes = [None, *(int(w) for w in args.workers.split(","))]  # None: one process, no cluster
    best: dict[int | None, tuple[float, float, float]] = {}
    difference: dict[int | None, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        fresh = unembedded_copy(collection, workdir)
        for repeat in range(args.repeats):  # interleaved, so that a change of load touches every size
            for n in sizes:
                target = workdir / f"run-{repeat}-{n or 0}"
                rate, startup, cpu = run(fresh, target, n, args)
                old = best.get(n, (0.0, float("inf"), float("inf")))
                best[n] = (max(rate, old[0]), min(startup, old[1]), min(cpu, old[2]))
                vectors = np.array(open_collection(target).embeddings)
                if n is None:
                    reference = vectors
                difference[n] = max(difference.get(n, 0.0), float(np.abs(vectors - reference).max()))
                shutil.rmtree(target)
    side, _, channels = coll.image_shape
    print(f"collection {collection}: {len(coll)} images {side}x{side}x{channels}; encoder {args.encoder}")
    print(
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, "
        f"{threads} of {os.cpu_count()} CPUs, load average {load:.1f} then {os.getloadavg()[0]:.1f}; batch "
        f"{args.batch_size}, {args.partition_rows} rows per partition, best of {args.repeats}\n"
    )
    print(
        "| run | workers | threads per worker | images/s | vs one process | startup s "
        "| CPU s per 1000 images | max abs diff |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    single = best[None][0]
    for n in sizes:
        rate, startup, cpu = best[n]
        name, per_worker = (
            ("one process", threads) if n is None else (f"`--workers {n}`", max(1, threads // n))
        )
        print(
            f"| {name} | {n or ''} | {per_worker} | {rate:.0f} | {rate / single:.0%} | {startup:.1f} | "
            f"{cpu:.1f} | {difference[n]:.1e} |"
        )


if __name__ == "__main__":
    main()
