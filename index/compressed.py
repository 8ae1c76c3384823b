"""Compressed indexes whose shortlist is re-ranked exactly against the float embeddings on disk.

An IVF index of 4-bit PQ codes (fast-scan) holds a vector in ``dim / 8`` bytes instead of ``4 dim``; alone it
finds only part of the true neighbours, but the true neighbours are almost always among its best few
hundred. Those candidates are scored again exactly from the collection's memory-mapped ``embeddings.f32``
(read in row order), so recall is that of exact search on the shortlist at the RAM cost of the codes.
FAISS has no GPU version of fast-scan PQ: where FAISS-GPU builds the index, 8-bit IVF-PQ of the same size
is used instead.

FAISS reads a fast-scan index's inverted lists whole (its in-file format cannot be memory-mapped), so they
are saved in a lists file of their own, laid out as FAISS's on-disk inverted lists (each list's packed code
blocks, then its ids), and mapped read-only when the index is loaded: a search reads the pages of the
lists it probes, and opening the index costs the same at any size.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path
from typing import IO

import faiss
import numpy as np

RERANK_FACTOR = 20  # shortlist = RERANK_FACTOR x k candidates re-scored exactly (10: recall@10 0.94 at 10M)
MAX_COMPRESSED_LISTS = 4096  # k-means and list assignment cost grow with the lists; 4096 suits up to ~10^8
RAM_FRACTION = 0.25  # float vectors (+ graph) held in RAM may take at most this share of available memory
HNSW_BYTES_PER_VECTOR = 32 * 2 * 4 + 40  # HNSW32: 64 level-0 links of 4 bytes, upper levels and levels
GPU_PQ_BYTES = (1, 2, 3, 4, 8, 12, 16, 20, 24, 28, 32, 40, 48, 56, 64, 96)  # code sizes FAISS-GPU IVFPQ takes
QUERY_BLOCK = 256  # queries re-ranked together (their candidates gathered from disk at once)
LIST_ALIGN = 64  # bytes: each inverted list starts on a cache line of the lists file


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
    _prefetch(vectors, wanted)
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


def _prefetch(vectors: np.ndarray, rows: np.ndarray) -> None:
    """Ask the kernel to read the rows ``rows`` of a file mapped by ``np.memmap`` at once, in parallel,
    rather than a page fault at a time when they are gathered (a shortlist of a file not in the page cache:
    hundreds of random reads). Other arrays, slices of memmaps and systems without posix_fadvise: no-op."""
    if not (
        isinstance(vectors, np.memmap)
        and isinstance(vectors.base, mmap.mmap)
        and hasattr(os, "posix_fadvise")
    ):
        return
    row_bytes = vectors.strides[0]
    with open(vectors.filename, "rb") as f:
        for row in rows.tolist():
            os.posix_fadvise(f.fileno(), vectors.offset + row * row_bytes, row_bytes, os.POSIX_FADV_WILLNEED)


# ---- fast-scan inverted lists in a file of their own -------------------------------------------------


def has_block_lists(index: faiss.Index) -> bool:
    """Whether ``index`` is a fast-scan IVF index holding its inverted lists in memory (the lists that
    :func:`write_lists` saves apart)."""
    ivf = faiss.try_extract_index_ivf(index)
    lists = faiss.downcast_InvertedLists(ivf.invlists) if ivf is not None else None
    return isinstance(lists, faiss.BlockInvertedLists)


def write_lists(index: faiss.Index, write: IO[bytes], file: Path) -> int:
    """Write the in-memory lists of a fast-scan IVF ``index`` (see :func:`has_block_lists`) to ``write``,
    the file object that becomes ``file``, and describe them in the index as lists of that file;
    returns the bytes written. Once ``file`` is in place, :func:`map_lists` makes the index searchable."""
    ivf = faiss.extract_index_ivf(index)
    blocks = faiss.downcast_InvertedLists(ivf.invlists)
    code_size = ivf.code_size
    listed = faiss.OnDiskOneListVector()
    offset = 0
    for number in range(ivf.nlist):
        size = blocks.list_size(number)
        packed = -(-size // blocks.n_per_block) * blocks.block_size  # bytes of code blocks, the last padded
        capacity = -(-packed // code_size)  # entries whose codes hold the blocks: ids start after them
        entry = faiss.OnDiskOneList()
        entry.size, entry.capacity, entry.offset = size, capacity, offset
        listed.push_back(entry)
        if size:
            write.write(faiss.rev_swig_ptr(blocks.get_codes(number), packed).tobytes())
            write.write(bytes(capacity * code_size - packed))
            write.write(faiss.rev_swig_ptr(blocks.get_ids(number), size).tobytes())
        end = offset + capacity * code_size + 8 * size
        offset = -(-(offset + capacity * (code_size + 8)) // LIST_ALIGN) * LIST_ALIGN
        write.write(bytes(offset - end))
    lists = faiss.OnDiskInvertedLists(ivf.nlist, code_size, file.name)
    lists.lists.swap(listed)
    lists.totsize = offset
    lists.read_only = True
    ivf.replace_invlists(lists, True)
    lists.this.disown()  # the index owns them now
    return offset


def map_lists(index: faiss.Index, file: Path) -> None:
    """Map the lists file ``file`` of an ``index`` read with FAISS's IO_FLAG_SKIP_IVF_DATA, read-only;
    ValueError when the file is not the one the index describes."""
    lists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(index).invlists)
    if not isinstance(lists, faiss.OnDiskInvertedLists) or Path(lists.filename).name != file.name:
        raise ValueError(f"the index does not describe its inverted lists as those of {file.name}")
    if (size := file.stat().st_size) != lists.totsize:
        raise ValueError(f"{file.name} holds {size} bytes, but the index's lists take {lists.totsize}")
    lists.filename, lists.read_only = str(file), True
    lists.prefetch_nthread = 0  # a search reads the few lists it probes itself
    lists.do_mmap()


def load_lists(index: faiss.Index) -> None:
    """Copy the mapped lists of a fast-scan IVF ``index`` into memory, so that vectors can be added."""
    ivf = faiss.extract_index_ivf(index)
    mapped = faiss.downcast_InvertedLists(ivf.invlists)
    packer = ivf.get_CodePacker()
    blocks = faiss.BlockInvertedLists(ivf.nlist, packer)
    packer.this.disown()  # the lists own their packer
    for number in range(ivf.nlist):
        if size := mapped.list_size(number):
            blocks.add_entries(number, size, mapped.get_ids(number), mapped.get_codes(number))
    ivf.replace_invlists(blocks, True)
    blocks.this.disown()


def empty_copy(index: faiss.Index) -> faiss.Index:
    """``index``, an IVF index read mapped (or its lists mapped), with empty in-memory lists in place of
    its own: the same training (quantizer, codes), no vectors, ready to take rows of its own."""
    ivf = faiss.extract_index_ivf(index)
    if isinstance(faiss.downcast_index(ivf), faiss.IndexIVFFastScan):
        packer = ivf.get_CodePacker()
        lists = faiss.BlockInvertedLists(ivf.nlist, packer)
        packer.this.disown()  # the lists own their packer
    else:
        lists = faiss.ArrayInvertedLists(ivf.nlist, ivf.code_size)
    ivf.replace_invlists(lists, True)
    lists.this.disown()  # the index owns them now
    ivf.ntotal = index.ntotal = 0
    return index
