"""A sharded index: contiguous row ranges, each its own FAISS index, searched in parallel and merged.

Locally the shards are searched in threads (FAISS releases the GIL). Given a Dask scheduler address,
each shard is searched on a worker, which loads it once and keeps it for later queries; the workers read
the collection at the same path as here (a shared file system).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from galsearch.embedder.errors import GalsearchError

from .store import IndexInfo, IndexSettingError, VectorIndex, load_part

# Shards loaded by this process for Dask searches: (collection path, shard file, device) -> (state, index)
_WORKER_SHARDS: dict[tuple[str, str, str | None], tuple[tuple, VectorIndex]] = {}


class ShardedIndex:
    """The shards of the index of the collection at ``path``, searched as one index (rows are catalog rows):
    here, or on the workers of the Dask cluster whose scheduler is at ``dask``."""

    def __init__(self, path: Path, info: IndexInfo, device: str | None = None, dask: str | None = None):
        self.path, self.info, self.device = Path(path), info, device
        self.metric = info.metric
        self.firsts = [part.first for part in info.parts]
        self._searcher = _DaskShards(dask, self) if dask else _LocalShards(self)

    @property
    def ntotal(self) -> int:
        """Number of indexed vectors, over all shards."""
        return self.info.ntotal

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Scores and rows (m, k) of the ``k`` nearest rows over all shards, as :meth:`VectorIndex.search`."""
        if k < 1:
            raise IndexSettingError(f"k must be at least 1, got {k}")
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if allowed is not None:
            allowed = np.asarray(allowed, dtype=np.int64)
        shares = [self._local_rows(allowed, part.first, part.ntotal) for part in self.info.parts]
        results = self._searcher.search(queries, k, shares)
        return self._merged(results, k)

    def close(self) -> None:
        """Stop the threads of local shards, or let go of the Dask client."""
        self._searcher.close()

    @staticmethod
    def _local_rows(allowed: np.ndarray | None, first: int, count: int) -> np.ndarray | None:
        if allowed is None:
            return None
        return allowed[(allowed >= first) & (allowed < first + count)] - first

    def _merged(self, results: list[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
        """The best ``k`` of the shards' results, rows made global; shards earlier in the table win ties."""
        scores = np.concatenate([scores for scores, _ in results], axis=1)
        rows = np.concatenate(
            [
                np.where(rows >= 0, rows + first, -1)
                for (_, rows), first in zip(results, self.firsts, strict=True)
            ],
            axis=1,
        )
        keys = -scores if self.metric == "cosine" else scores
        order = np.argsort(keys, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(scores, order, axis=1), np.take_along_axis(rows, order, axis=1)


class _LocalShards:
    """Every shard loaded in this process, searched in one thread each."""

    def __init__(self, sharded: ShardedIndex):
        info = sharded.info
        self.shards = [load_part(sharded.path, info, part, sharded.device) for part in info.parts]
        self.pool = ThreadPoolExecutor(len(self.shards), thread_name_prefix="shard")

    def search(
        self, queries: np.ndarray, k: int, shares: list[np.ndarray | None]
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        return list(
            self.pool.map(lambda shard, allowed: shard.search(queries, k, allowed), self.shards, shares)
        )

    def close(self) -> None:
        self.pool.shutdown()


class _DaskShards:
    """Each shard searched on one Dask worker (shard i on worker i mod n), which keeps it loaded."""

    def __init__(self, address: str, sharded: ShardedIndex):
        from dask.distributed import Client

        self.sharded = sharded
        try:
            self.client = Client(address, set_as_default=False, timeout="20s")
        except OSError as exc:
            raise GalsearchError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
        workers = sorted(self.client.scheduler_info()["workers"])
        if not workers:
            self.client.close()
            raise GalsearchError(f"the Dask cluster at {address} has no workers")
        self.placement = [workers[i % len(workers)] for i in range(len(sharded.info.parts))]

    def search(
        self, queries: np.ndarray, k: int, shares: list[np.ndarray | None]
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        sharded = self.sharded
        futures = [
            self.client.submit(
                search_shard,
                str(sharded.path),
                sharded.info,
                number,
                sharded.device,
                queries,
                k,
                allowed,
                workers=[worker],
                allow_other_workers=True,  # a lost worker's shards move to another
                pure=False,
            )
            for number, (worker, allowed) in enumerate(zip(self.placement, shares, strict=True))
        ]
        return self.client.gather(futures)

    def close(self) -> None:
        self.client.close()


def search_shard(
    path: str,
    info: IndexInfo,
    number: int,
    device: str | None,
    queries: np.ndarray,
    k: int,
    allowed: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Search shard ``number`` of the index of the collection at ``path`` (on a Dask worker), loading it
    on first use and again only when it has changed."""
    part = info.parts[number]
    key, state = (path, part.file, device), (info.built, part.ntotal, part.file_bytes, part.lists)
    cached = _WORKER_SHARDS.get(key)
    if cached is None or cached[0] != state:
        _WORKER_SHARDS[key] = state, load_part(Path(path), info, part, device)
    return _WORKER_SHARDS[key][1].search(queries, k, allowed)
