"""Compressed indexes whose shortlist is re-ranked exactly against the float embeddings on disk.

An IVF index of 4-bit PQ codes (fast-scan) holds a vector in ``dim / 8`` bytes instead of ``4 dim``; alone it
finds only part of the true neighbours, but the true neighbours are almost always among its best few
hundred. Those candidates are scored again exactly from the collection's memory-mapped ``embeddings.f32``
(read in row order), so recall is that of exact search on the shortlist at the RAM cost of the codes.
FAISS has no GPU version of fast-scan PQ: where FAISS-GPU builds the index, 8-bit IVF-PQ of the same size
is used instead.
"""

from __future__ import annotations

import os

import faiss
import numpy as np

RERANK_FACTOR = 20  # shortlist = RERANK_FACTOR x k candidates re-scored exactly (10: recall@10 0.94 at 10M)
MAX_COMPRESSED_LISTS = 4096  # k-means and list assignment cost grow with the lists; 4096 suits up to ~10^8
RAM_FRACTION = 0.25  # float vectors (+ graph) held in RAM may take at most this share of available memory
HNSW_BYTES_PER_VECTOR = 32 * 2 * 4 + 40  # HNSW32: 64 level-0 links of 4 bytes, upper levels and levels
GPU_PQ_BYTES = (1, 2, 3, 4, 8, 12, 16, 20, 24, 28, 32, 40, 48, 56, 64, 96)  # code sizes FAISS-GPU IVFPQ takes
QUERY_BLOCK = 256  # queries re-ranked together (their candidates gathered from disk at once)


def available_memory() -> int:
    """Bytes of memory available to new work (MemAvailable on Linux, else physical memory)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def fits_in_memory(n: int, dim: int, graph: bool, memory: int) -> bool:
    """Whether ``n`` float vectors (and an HNSW graph over them) fit in RAM_FRACTION of ``memory`` bytes."""
    return n * (4 * dim + (HNSW_BYTES_PER_VECTOR if graph else 0)) <= RAM_FRACTION * memory


def compressed_factory(dim: int, lists: int, gpu: bool = False) -> str:
    """The compressed IVF structure with (at most) ``lists`` lists: 4-bit fast-scan PQ of ``dim / 8`` bytes
    a vector, its vectors assigned to lists through an HNSW graph of the centroids (a flat search of 4096
    centroids would take most of the build at 10M vectors); on a FAISS GPU, 8-bit PQ of the same size."""
    lists = min(lists, MAX_COMPRESSED_LISTS)
    if gpu:
        m = max(b for b in GPU_PQ_BYTES if dim % b == 0 and b <= max(1, dim // 8))
        return f"IVF{lists},PQ{m}"
    m = next(m for m in (dim // 4, dim // 2, dim) if m and dim % m == 0)
    return f"IVF{lists}_HNSW32,PQ{m}x4fs"


def is_lossy(index: faiss.Index) -> bool:
    """Whether ``index`` stores compressed codes (its scores are approximate) rather than float vectors."""
    index = faiss.downcast_index(index)
    return not isinstance(index, faiss.IndexFlat | faiss.IndexIVFFlat | faiss.IndexHNSWFlat)


def rerank_shortlist(
    vectors: np.ndarray, queries: np.ndarray, candidates: np.ndarray, k: int, metric: str
) -> tuple[np.ndarray, np.ndarray]:
    """Exact scores and rows (m, k) of the best ``k`` of each query's candidate rows (-1: none), best first.

    ``queries`` are prepared as the index stores vectors (unit length for cosine); rows of ``vectors`` (a
    memmap) are read once per block of queries, in ascending order.
    """
    worst = -np.inf if metric == "cosine" else np.inf
    scores = np.full((len(queries), k), worst, np.float32)
    rows = np.full((len(queries), k), -1, np.int64)
    for first in range(0, len(queries), QUERY_BLOCK):
        block = slice(first, first + QUERY_BLOCK)
        scores[block], rows[block] = _rerank_block(vectors, queries[block], candidates[block], k, metric)
    return scores, rows


def _rerank_block(
    vectors: np.ndarray, queries: np.ndarray, candidates: np.ndarray, k: int, metric: str
) -> tuple[np.ndarray, np.ndarray]:
    worst = -np.inf if metric == "cosine" else np.inf
    scores = np.full((len(queries), k), worst, np.float32)
    rows = np.full((len(queries), k), -1, np.int64)
    valid = candidates >= 0
    wanted = np.unique(candidates[valid])
    if not len(wanted):
        return scores, rows
    exact = np.array(vectors[wanted], dtype=np.float32, order="C")
    if metric == "cosine":
        faiss.normalize_L2(exact)
    gathered = exact[np.searchsorted(wanted, np.where(valid, candidates, wanted[0]))]
    if metric == "cosine":
        keys = -np.einsum("csd,cd->cs", gathered, queries)
    else:
        keys = ((gathered - queries[:, None, :]) ** 2).sum(axis=2)
    keys[~valid] = np.inf
    take = min(k, keys.shape[1])
    order = np.argsort(keys, axis=1, kind="stable")[:, :take]
    best = np.take_along_axis(keys, order, axis=1)
    found = np.where(np.isfinite(best), np.take_along_axis(candidates, order, axis=1), -1)
    scores[:, :take] = np.where(found >= 0, -best if metric == "cosine" else best, worst)
    rows[:, :take] = found
    return scores, rows
