"""Partitioned work on a Dask cluster, its results handed back in partition order to the one writer.

The cluster is an address (``dask=tcp://host:8786``, a running ``dask scheduler``) or a number of local
worker processes (``workers=N``, bound to 127.0.0.1). Tasks read their inputs from shared files and return
small results; the caller commits them in order, so what is on disk is always a valid prefix. A worker
that dies costs the tasks it held (Dask runs them again elsewhere); a driver that dies costs the tasks in
flight, which the next run repeats.
"""

from __future__ import annotations

import logging
import os
import uuid
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from .errors import ClusterError

if TYPE_CHECKING:
    from distributed import Client

PARTITION_ROWS = 4096  # rows (or files) per task: seconds of work, few enough tasks for the scheduler
CONNECT_TIMEOUT = "20s"
# Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_ set, which makes glibc allocate every large
# array afresh with mmap: torch then embedded 17-34% slower on CPUs here. Local workers start without it.
WORKER_CONFIG = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}


@contextmanager
def dask_client(address: str | None = None, workers: int | None = None) -> Iterator[Client]:
    """A client of the scheduler at ``address``, or of a local cluster of ``workers`` processes.

    The local cluster runs one task at a time per process (each task uses its share of the CPUs), listens
    on 127.0.0.1 only, has no dashboard and no per-worker memory limit.
    """
    import dask
    from distributed import Client, LocalCluster

    if (address is None) == (workers is None):
        raise ValueError("give a scheduler address or a number of local workers, not both or neither")
    if address is not None:
        try:
            client = Client(address, timeout=CONNECT_TIMEOUT, direct_to_workers=True)
        except (OSError, TimeoutError) as exc:
            raise ClusterError(
                f"cannot reach the Dask scheduler at {address} ({exc}); start one with `dask scheduler`"
            ) from exc
        with client:
            yield client
        return
    if workers < 1:
        raise ClusterError(f"a local cluster needs at least 1 worker, got {workers}")
    with kept_environment(), warnings.catch_warnings(), dask.config.set(WORKER_CONFIG):
        # the scheduler's health endpoint takes another port if 8787 is taken: nothing to warn about
        warnings.filterwarnings("ignore", "Port 8787 is already in use", UserWarning)
        # memory_limit=0: Dask counts the pages of memory-mapped files a worker has read (embeddings read at
        # random for k-NN scores: the whole 12.8 GB file at 10M) as its memory and kills it past its share
        # of the RAM, though the kernel can drop them at any time
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            memory_limit=0,
        )
    # closing, a nanny warns when its worker (torch's teardown) takes over 4 s to exit, then ends it: noise
    logging.getLogger("distributed.nanny").setLevel(logging.ERROR)
    with kept_environment(), cluster, Client(cluster, direct_to_workers=True) as client:
        yield client


@contextmanager
def kept_environment() -> Iterator[None]:
    """Put this process's environment back as it was when the block ends. Dask's nannies set their
    workers' variables (OMP_NUM_THREADS=1 and the like) in the environment of the process that starts
    them, before spawning; without this, every process that one starts later ran torch on one thread."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def row_ranges(start: int, stop: int, rows: int) -> list[tuple[int, int]]:
    """``start:stop`` cut into (first, stop) ranges of ``rows`` rows, the last one shorter."""
    if rows < 1:
        raise ValueError(f"a partition needs at least 1 row, got {rows}")
    return [(first, min(first + rows, stop)) for first in range(start, stop, rows)]


def in_order(
    client: Client, func: Callable[..., Any], partitions: Iterable[tuple], **shared: Any
) -> Iterator[Any]:
    """Yield ``func(*partition, **shared)`` for each partition, in order, computed on the cluster.

    At most twice as many tasks as the cluster has task slots are in flight, so finished results wait
    in memory only while an earlier one is still running. Tasks not yet yielded are cancelled when the
    caller stops early. Task keys are ``<func name>-<partition number>-<run token>``.
    """
    from distributed import KilledWorker

    window = max(2, 2 * sum(client.nthreads().values()))
    token = uuid.uuid4().hex[:12]
    todo = enumerate(partitions)
    pending: deque = deque()

    def submit_next() -> None:
        for number, partition in todo:
            key = f"{func.__name__}-{number}-{token}"
            pending.append(client.submit(func, *partition, key=key, pure=False, **shared))
            return

    for _ in range(window):
        submit_next()
    try:
        while pending:
            future = pending.popleft()
            try:
                result = future.result()
            except KilledWorker as exc:
                raise ClusterError(
                    f"Dask workers died running {future.key} again and again ({exc}); see the worker logs "
                    "(out of memory?) and run the same command again to continue"
                ) from exc
            future.release()
            submit_next()
            yield result
    finally:
        client.cancel(list(pending))


def slots_per_host(client: Client) -> dict[str, int]:
    """The number of task slots (worker threads, all workers together) on each host of the cluster."""
    from distributed.comm import get_address_host

    slots: dict[str, int] = {}
    for address, threads in client.nthreads().items():
        host = get_address_host(address)
        slots[host] = slots.get(host, 0) + threads
    return slots


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity where the system tells it)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cpus_per_task(slots: dict[str, int]) -> int:
    """On a worker: its host's CPUs divided among the task slots of all workers there (at least 1)."""
    from distributed import get_worker
    from distributed.comm import get_address_host

    worker = get_worker()
    return max(1, usable_cpus() // slots.get(get_address_host(worker.address), worker.state.nthreads))
