"""The persisted FAISS index of a collection: build, load (with incremental add) and search.

An index is named by its FAISS factory string and metric, stored beside it::

    COLLECTION/index/index.faiss   the FAISS index; FAISS id i = catalog row i (rows are added in order)
    COLLECTION/index/index-TOKEN.ivfdata   a fast-scan index's inverted lists (see :mod:`index.compressed`)
    COLLECTION/index/index.json    factory, metric, dim, ntotal, encoder fingerprint, search parameters,
                                   re-rank factor, build time, file sizes, lists file, shards

A sharded index splits the rows into contiguous shards, each a FAISS index of the same structure in
``index/shard-NNN/index.faiss`` (FAISS id i = row ``first + i``); ``index.json`` lists them. Rows embedded
later go to a new shard of an IVF index (trained as its last shard, merged with the shards before it while
they hold no more rows: see :func:`add_to_index`), so an index built whole becomes sharded as it grows;
other indexes add them to their last shard. Compressed indexes re-rank a shortlist exactly
(:mod:`index.compressed`).

Loading maps the files instead of reading them (FAISS's IO_FLAG_MMAP_IFC, and the lists file of a fast-scan
index): a new process searches at once whatever the index's size, reading only the pages a search touches,
and processes that search the same index share those pages.

``cosine`` indexes hold L2-normalised vectors under the inner-product metric (scores are cosine
similarities, higher is better); ``l2`` indexes hold the raw vectors (scores are squared L2 distances,
lower is better).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any, Literal, Protocol

import faiss
import numpy as np

from galsearch.embedder.collection import EMBEDDINGS, Collection
from galsearch.embedder.embed import IDENTITY_KEYS, same_encoder
from galsearch.embedder.errors import CollectionError, GalsearchError
from galsearch.embedder.storage import atomic_write, atomic_write_json, merged_parts, utc_now

from .compressed import (
    RERANK_FACTOR,
    available_memory,
    compressed_factory,
    empty_copy,
    fits_in_memory,
    has_block_lists,
    is_lossy,
    load_lists,
    map_lists,
    rerank_shortlist,
    write_lists,
)

Metric = Literal["cosine", "l2"]
METRICS = {"cosine": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}
INDEX_DIR = "index"
INDEX_FILE = "index.faiss"
INFO_FILE = "index.json"
FORMAT = "galsearch-index"

# From benchmarks/search.py on 2 CPU cores at dim 320: an exact (Flat) query costs ~0.1 ms per 1000 vectors
# (7-11 ms at 100k), HNSW32 ~0.1-0.2 ms at 100k with recall@10 >= 0.99 and grows ~log n; HNSW builds at
# ~6k vectors/s, so past a few million vectors IVF (k-means and adds run in parallel or on a GPU) is used.
# Where float vectors (and HNSW's graph) would take too much of the available memory, compressed codes
# re-ranked from disk are used instead (index/compressed.py, benchmarks/scale.py).
FLAT_BELOW = 20_000
HNSW_BELOW = 2_000_000
HNSW_EF_CONSTRUCTION = 128  # FAISS's 40 leaves recall@10 stuck near 0.97 on clustered data, whatever efSearch
TRAIN_PER_LIST = 50  # k-means training vectors per inverted list (FAISS asks for at least 39)
MIN_TRAIN = 100_000
RECALL_K = 10
TARGET_RECALL = 0.98  # recall@10 efSearch / nprobe are tuned to at build (0.95 promised, with a margin)
CALIBRATION_QUERIES = 200
CHUNK_ROWS = 50_000  # rows read from the embeddings memmap at a time (64 MB at dim 320)
GPU_MAX_K = 2048  # FAISS GPU indexes return at most this many neighbours
SEED = 0
SHARD_PREFIX = "shard-"  # shard N's files are in index/shard-NNN/ (see _shard_file)
LISTS_SUFFIX = ".ivfdata"
MAPPED = faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY  # how indexes are read to be searched


class StaleIndexError(CollectionError):
    """The index was built from embeddings that have changed since; it must be rebuilt."""


class IndexSettingError(GalsearchError):
    """A factory string, metric, device or k that cannot be used."""


def _shard_file(number: int) -> str:
    """The index file of shard ``number``, relative to the index directory: ``shard-NNN/index.faiss``."""
    return f"{SHARD_PREFIX}{number:03d}/{INDEX_FILE}"


def _shard_number(file: str) -> int | None:
    """The number of the shard whose index file is ``file`` (as :func:`_shard_file` names it), or None
    for another file (the ``index.faiss`` of an index without shards)."""
    found = re.fullmatch(rf"{re.escape(SHARD_PREFIX)}(\d+)/{re.escape(INDEX_FILE)}", file)
    return int(found[1]) if found else None


def normalized(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, as contiguous float32 (zero rows stay zero)."""
    vectors = np.array(vectors, dtype=np.float32, order="C")
    faiss.normalize_L2(vectors)
    return vectors


@dataclass
class ShardInfo:
    """One FAISS index file of a collection's index: rows ``first`` to ``first + ntotal``."""

    file: str  # relative to the index directory
    first: int
    ntotal: int
    file_bytes: int
    search_params: dict[str, int]
    lists: str = ""  # a fast-scan index's lists file, relative to the index directory ("": in the file)
    lists_bytes: int = 0


@dataclass
class IndexInfo:
    """What ``index.json`` records about a collection's index."""

    factory: str
    metric: Metric
    dim: int
    ntotal: int
    encoder: dict[str, Any]
    search_params: dict[str, int]
    built: str
    build_seconds: float
    file_bytes: int = 0
    format: str = FORMAT
    rerank: int = 0  # shortlist of rerank x k candidates re-scored exactly from the embeddings (0: none)
    shards: list[ShardInfo] = field(default_factory=list)  # empty: one index in index.faiss
    lists: str = ""  # without shards: the lists file of a fast-scan index, as ShardInfo.lists
    lists_bytes: int = 0

    def summary(self) -> str:
        """One human-readable line."""
        params = ", ".join(f"{k}={v}" for k, v in self.search_params.items())
        extra = (f", re-ranking {self.rerank} x k" if self.rerank else "") + (
            f", {len(self.shards)} shards" if self.shards else ""
        )
        return (
            f"{self.factory} ({self.metric}{', ' + params if params else ''}{extra}) over {self.ntotal} "
            f"vectors of dim {self.dim}, {self.disk_bytes / 2**20:.1f} MiB, "
            f"built in {self.build_seconds:.1f} s"
        )

    @property
    def parts(self) -> list[ShardInfo]:
        """The index files: the shards, or the one ``index.faiss``."""
        return self.shards or [
            ShardInfo(
                INDEX_FILE, 0, self.ntotal, self.file_bytes, self.search_params, self.lists, self.lists_bytes
            )
        ]

    @property
    def disk_bytes(self) -> int:
        """Bytes of every file of the index, lists files included."""
        return sum(part.file_bytes + part.lists_bytes for part in self.parts)


class _Searcher(Protocol):
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...


class SearchIndex(Protocol):
    """What queries search: one :class:`VectorIndex`, or a sharded index of them (:mod:`index.shards`)."""

    metric: Metric

    @property
    def ntotal(self) -> int: ...

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]: ...


# ---- choosing and building -----------------------------------------------------------------------


def auto_factory(n: int, dim: int, memory: int | None = None, gpu: bool = False) -> str:
    """The FAISS factory string galsearch uses for ``n`` vectors of dimension ``dim``.

    Float vectors while they (with HNSW's graph) fit in a share of ``memory`` bytes (default: what is
    available now); beyond, compressed codes whose shortlist is re-ranked (``gpu``: a FAISS-GPU structure).
    """
    memory = available_memory() if memory is None else memory
    if n < FLAT_BELOW:
        return "Flat"
    if n < HNSW_BELOW and fits_in_memory(n, dim, True, memory):
        return "HNSW32"
    if n >= HNSW_BELOW and fits_in_memory(n, dim, False, memory):
        return f"IVF{ivf_lists(n)},Flat"
    return compressed_factory(dim, ivf_lists(n), gpu)


def ivf_lists(n: int) -> int:
    """Number of inverted lists for ``n`` vectors: the power of two nearest 4 sqrt(n)."""
    return 2 ** round(math.log2(4 * math.sqrt(max(n, 1))))


def index_vectors(
    vectors: np.ndarray,
    factory: str | None = None,
    metric: Metric = "cosine",
    device: str | None = None,
    progress: bool = True,
    rerank: int | None = None,
) -> VectorIndex:
    """An in-memory index over ``vectors`` (an array or memmap; FAISS id i = row i), ready to search.

    ``rerank``: re-score a shortlist of ``rerank`` x k candidates exactly (default: RERANK_FACTOR for
    compressed structures, none for float ones; 0: never).
    """
    factory = factory or auto_factory(*vectors.shape, gpu=_faiss_gpu(device))
    index, rerank = _build(vectors, factory, metric, device, progress, rerank)
    return VectorIndex(index, factory, metric, vectors, device, rerank)


def _build(
    vectors: np.ndarray, factory: str, metric: Metric, device: str | None, progress: bool, rerank: int | None
) -> tuple[faiss.Index, int]:
    """Create, train (on a seeded sample), fill with every row of ``vectors`` in order, and calibrate.

    Returns the index and its re-rank factor. On a FAISS GPU when one is asked for and the structure has
    a GPU version (k-means and adds are faster). The last rows are added after calibration, which uses
    them as queries the index has not seen.
    """
    index = _new_index(factory, vectors.shape[1], metric)
    rerank = _rerank_factor(index, rerank)
    on_gpu = _to_faiss_gpu(index) if _faiss_gpu(device) else None
    work = index if on_gpu is None else on_gpu
    if not work.is_trained:
        try:
            work.train(_training_sample(vectors, index, metric))
        except RuntimeError as exc:
            raise IndexSettingError(f"cannot train {factory} on {len(vectors)} vectors: {exc}") from None
    held_out = min(CALIBRATION_QUERIES, len(vectors) // 10)
    _add_rows(work, vectors[: len(vectors) - held_out], metric, progress)
    if on_gpu is not None:
        index = faiss.index_gpu_to_cpu(on_gpu)
    _calibrate(index, vectors, metric, rerank)
    _add_rows(index, vectors, metric, progress=False)
    return index, rerank


def _rerank_factor(index: faiss.Index, rerank: int | None) -> int:
    """The re-rank factor asked for, or by default RERANK_FACTOR for compressed codes and 0 for floats."""
    if rerank is None:
        return RERANK_FACTOR if is_lossy(index) else 0
    if rerank < 0:
        raise IndexSettingError(f"the re-rank factor must be 0 (none) or more, got {rerank}")
    return rerank


def _new_index(factory: str, dim: int, metric: Metric) -> faiss.Index:
    if metric not in METRICS:
        raise IndexSettingError(f"metric must be one of {sorted(METRICS)}, got {metric!r}")
    try:
        index = faiss.index_factory(dim, factory, METRICS[metric])
    except RuntimeError as exc:
        raise IndexSettingError(
            f"FAISS cannot make an index from factory string {factory!r}: {exc}"
        ) from None
    if (hnsw := _hnsw(index)) is not None:
        hnsw.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    return index


def _training_sample(vectors: np.ndarray, index: faiss.Index, metric: Metric) -> np.ndarray:
    """A seeded random sample of rows, large enough for the index's k-means."""
    ivf = faiss.try_extract_index_ivf(index)
    size = min(len(vectors), max(MIN_TRAIN, TRAIN_PER_LIST * ivf.nlist if ivf else 0))
    rows = np.sort(np.random.default_rng(SEED).choice(len(vectors), size, replace=False))
    return _prepared(vectors[rows], metric)


def _add_rows(index: faiss.Index, vectors: np.ndarray, metric: Metric, progress: bool) -> int:
    """Add ``vectors[index.ntotal:]`` a chunk at a time; returns how many were added."""
    from tqdm.auto import tqdm

    start = index.ntotal
    with tqdm(total=len(vectors) - start, desc="index", unit="vec", disable=not progress) as bar:
        for first in range(start, len(vectors), CHUNK_ROWS):
            chunk = _prepared(vectors[first : first + CHUNK_ROWS], metric)
            index.add(chunk)
            bar.update(len(chunk))
    return index.ntotal - start


def _prepared(vectors: np.ndarray, metric: Metric) -> np.ndarray:
    """Rows as FAISS stores them: contiguous float32, unit length for cosine."""
    if metric == "cosine":
        return normalized(vectors)
    return np.array(vectors, dtype=np.float32, order="C")


def _calibrate(index: faiss.Index, vectors: np.ndarray, metric: Metric, rerank: int) -> None:
    """Set the smallest efSearch / nprobe whose recall@10 (after any re-ranking) reaches TARGET_RECALL for
    rows not yet added."""
    name, candidates = _knob(index)
    queries = _prepared(vectors[index.ntotal :], metric)
    if name is None or not len(queries):
        return
    k = min(RECALL_K, index.ntotal)
    truth = exact_search(vectors, np.arange(index.ntotal), queries, k, metric)[1]
    previous = 0.0
    for value in candidates:  # stop at the target, or where searching more stops paying (PQ's limit)
        _set_search_params(index, {name: value})
        found = index.search(queries, k * max(rerank, 1))[1]
        recall = _recall(rerank_shortlist(vectors, queries, found, k, metric)[1] if rerank else found, truth)
        if recall >= TARGET_RECALL or recall - previous < 0.002:
            return
        previous = recall


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of each row of ``truth`` that the same row of ``found`` holds."""
    hits = [len(np.intersect1d(f, t)) for f, t in zip(found, truth, strict=True)]
    return float(np.mean(hits)) / truth.shape[1]


def _knob(index: faiss.Index) -> tuple[str | None, list[int]]:
    """The search parameter that trades speed for recall, and the values to try, fastest first."""
    if _hnsw(index) is not None:
        return "efSearch", [16, 32, 64, 128, 256, 512, 1024, 2048]
    if (ivf := faiss.try_extract_index_ivf(index)) is not None:
        return "nprobe", [2**i for i in range(ivf.nlist.bit_length()) if 2**i < ivf.nlist] + [ivf.nlist]
    return None, []


def search_params(index: faiss.Index) -> dict[str, int]:
    """The efSearch (HNSW) or nprobe (IVF) an index searches with; empty for other structures."""
    if (hnsw := _hnsw(index)) is not None:
        return {"efSearch": hnsw.hnsw.efSearch}
    if (ivf := faiss.try_extract_index_ivf(index)) is not None:
        return {"nprobe": ivf.nprobe}
    return {}


def _set_search_params(index: faiss.Index, params: dict[str, int]) -> None:
    faiss.ParameterSpace().set_index_parameters(index, ",".join(f"{k}={v}" for k, v in params.items()))


def _hnsw(index: faiss.Index) -> faiss.IndexHNSW | None:
    index = faiss.downcast_index(index)
    return index if isinstance(index, faiss.IndexHNSW) else None


# ---- the collection's index on disk --------------------------------------------------------------


def build_index(
    collection: Collection,
    factory: str | None = None,
    metric: Metric = "cosine",
    device: str | None = None,
    progress: bool = True,
    shards: int = 1,
    rerank: int | None = None,
) -> IndexInfo:
    """Build the index over all current embeddings of ``collection`` and save it (replacing any old one).

    ``shards`` > 1 splits the rows into that many contiguous shards, each its own index (searched in
    parallel, or on Dask workers); ``rerank`` as for :func:`index_vectors`. By default the structure
    follows the shard size and the memory available to each shard.
    """
    with collection.writing():
        vectors = collection.embeddings
        if not len(vectors):
            raise CollectionError(
                f"{collection.path} has no embeddings: run `galsearch embed {collection.path}` first"
            )
        if not 1 <= shards <= len(vectors):
            raise IndexSettingError(
                f"shards must be from 1 to the {len(vectors)} embedded rows, got {shards}"
            )
        bounds = np.linspace(0, len(vectors), shards + 1).round().astype(int)
        largest = int(np.diff(bounds).max())
        factory = factory or auto_factory(
            largest, vectors.shape[1], available_memory() // shards, _faiss_gpu(device)
        )
        started = time.perf_counter()
        directory = collection.path / INDEX_DIR
        parts = []
        for number, (first, last) in enumerate(itertools.pairwise(bounds)):
            index, rerank = _build(vectors[first:last], factory, metric, device, progress, rerank)
            file = INDEX_FILE if shards == 1 else _shard_file(number)
            part = ShardInfo(file, int(first), 0, 0, search_params(index))
            parts.append(_save_part(directory, part, index))
            del index
        info = IndexInfo(
            factory=factory,
            metric=metric,
            dim=vectors.shape[1],
            ntotal=len(vectors),
            encoder={key: collection.encoder.get(key) for key in IDENTITY_KEYS},
            search_params=parts[0].search_params,
            built=utc_now(),
            build_seconds=round(time.perf_counter() - started, 3),
            file_bytes=sum(part.file_bytes for part in parts),
            rerank=rerank,
            shards=parts if shards > 1 else [],
            lists=parts[0].lists if shards == 1 else "",
            lists_bytes=parts[0].lists_bytes if shards == 1 else 0,
        )
        _commit(directory, info)
        return info


def add_to_index(collection: Collection, progress: bool = True) -> int:
    """Add the rows embedded since the index was saved, save it, return how many.

    An IVF index takes them in a shard of its own (an empty copy of its last shard: the same training),
    merged with the shards before it while they hold no more rows than it (their rows added to the first
    of them), so that adding rows costs about what is added, not the index's size, and an index keeps a
    few shards however many adds made it. Other indexes (flat, HNSW) take them in their last shard.
    Fast-scan indexes saved by an older galsearch, their lists inside the index file, are saved again with
    a lists file (read whole until then; see :mod:`index.compressed`).
    """
    with collection.writing():
        info = _current_info(collection)
        directory = collection.path / INDEX_DIR
        added = collection.counts["embedded"] - info.ntotal
        parts = _grown(directory, info, collection, progress) if added else list(info.parts)
        for number, part in enumerate(parts):
            if not part.lists and part in info.parts:
                index = _read_part(directory, part, info)
                if has_block_lists(index):
                    parts[number] = _save_part(directory, part, index)
                del index
        if parts != info.parts:
            single = len(parts) == 1
            info = replace(
                info,
                ntotal=parts[-1].first + parts[-1].ntotal,
                file_bytes=sum(part.file_bytes for part in parts),
                shards=[] if single else parts,
                lists=parts[0].lists if single else "",
                lists_bytes=parts[0].lists_bytes if single else 0,
            )
            _commit(directory, info)
    return added


def _grown(directory: Path, info: IndexInfo, collection: Collection, progress: bool) -> list[ShardInfo]:
    """The index's parts once the rows embedded since it was saved are added (see :func:`add_to_index`)."""
    parts, last = list(info.parts), info.parts[-1]
    vectors = collection.embeddings
    template = _read_part(directory, last, info)
    if faiss.try_extract_index_ivf(template) is None:
        del template
        index = _read_part(directory, last, info, writable=True)
        _add_rows(index, vectors[last.first :], info.metric, progress)
        return [*parts[:-1], _save_part(directory, last, index)]
    first, _ = merged_parts([part.ntotal for part in parts], len(vectors) - info.ntotal)
    if first == len(parts):
        index = empty_copy(template)
        numbers = [number for part in parts if (number := _shard_number(part.file)) is not None]
        file = _shard_file(max(numbers, default=0) + 1)  # after index.faiss (shard 0's rows): shard 1
        part = ShardInfo(file, info.ntotal, 0, 0, last.search_params)
    else:
        del template
        part = parts[first]
        index = _read_part(directory, part, info, writable=True)
    _add_rows(index, vectors[part.first :], info.metric, progress)
    return [*parts[:first], _save_part(directory, part, index)]


def load_index(collection: Collection, device: str | None = None, dask: str | None = None) -> SearchIndex:
    """The collection's saved index, checked against its embeddings and extended with rows embedded since.

    A sharded index searches its shards in threads, or with ``dask`` (a scheduler address) on the Dask
    cluster's workers, each loading its shards once.
    """
    info = _current_info(collection)
    if info.ntotal < collection.counts["embedded"]:
        add_to_index(collection, progress=False)
        info = _current_info(collection)
    if not info.shards:
        return load_part(collection.path, info, info.parts[0], device)
    from .shards import ShardedIndex  # shards builds on this module

    return ShardedIndex(collection.path, info, device, dask)


def load_part(path: Path, info: IndexInfo, part: ShardInfo, device: str | None = None) -> VectorIndex:
    """One index file of the collection at ``path``, over its rows of the memory-mapped embeddings."""
    index = _read_part(path / INDEX_DIR, part, info)
    vectors = np.memmap(
        path / EMBEDDINGS,
        dtype=np.float32,
        mode="r",
        offset=4 * info.dim * part.first,
        shape=(part.ntotal, info.dim),
    )
    return VectorIndex(index, info.factory, info.metric, vectors, device, info.rerank)


def has_index(collection: Collection) -> bool:
    """Whether the collection has a saved index (current or not)."""
    return (collection.path / INDEX_DIR / INFO_FILE).is_file()


def read_info(collection: Collection) -> IndexInfo:
    """The contents of the collection's ``index/index.json``; raises if there is no index."""
    file = collection.path / INDEX_DIR / INFO_FILE
    if not file.is_file():
        raise CollectionError(f"{collection.path} has no index: run `galsearch index {collection.path}`")
    try:
        info = IndexInfo(**_json(file))
        info.search_params = dict(info.search_params)
        info.dim, info.ntotal, info.file_bytes = int(info.dim), int(info.ntotal), int(info.file_bytes)
        info.rerank, info.lists_bytes = int(info.rerank), int(info.lists_bytes)
        info.lists = _inside(info.lists)
        info.shards = [_shard_info(shard) for shard in info.shards]
        ends = [part.first + part.ntotal for part in info.parts]
        if [part.first for part in info.parts] != [0, *ends[:-1]] or ends[-1] != info.ntotal:
            raise ValueError(f"its shards do not cover rows 0 to {info.ntotal} in order")
    except (ValueError, TypeError) as exc:
        raise CollectionError(f"{file} is damaged ({exc}): {_rebuild_hint(collection.path)}") from None
    if info.format != FORMAT or info.metric not in METRICS or not isinstance(info.encoder, dict):
        raise CollectionError(
            f"{file} is not a galsearch index description: {_rebuild_hint(collection.path)}"
        )
    return info


def _shard_info(shard: dict) -> ShardInfo:
    part = ShardInfo(**shard)
    part.file, part.lists = _inside(part.file), _inside(part.lists)
    part.first, part.ntotal, part.file_bytes = int(part.first), int(part.ntotal), int(part.file_bytes)
    part.search_params, part.lists_bytes = dict(part.search_params), int(part.lists_bytes)
    return part


def _inside(file: str) -> str:
    """A file name of ``index.json``, refused unless it stays inside the index directory."""
    if not isinstance(file, str) or Path(file).is_absolute() or ".." in Path(file).parts:
        raise ValueError(f"file {file!r} is outside the index directory")
    return file


def _json(file: Path) -> dict:
    try:
        data = json.loads(file.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise TypeError("not a JSON object")
    return data


def _current_info(collection: Collection) -> IndexInfo:
    """The index description, after checking that it was built from the current embeddings."""
    info = read_info(collection)
    encoder, embedded = collection.encoder, collection.counts["embedded"]
    reason = None
    if encoder is None or not same_encoder(info.encoder, encoder):
        reason = "they were re-made with another encoder"
    elif info.dim != collection.embedding_dim:
        reason = f"their dimension is {collection.embedding_dim}, the index's {info.dim}"
    elif info.ntotal > embedded:
        reason = f"the index holds {info.ntotal} vectors but only {embedded} galaxies are embedded now"
    if reason:
        raise StaleIndexError(
            f"the index of {collection.path} is out of date: the embeddings changed since it was built "
            f"({reason}); run `galsearch index {collection.path} --rebuild`"
        )
    return info


def _read_part(directory: Path, part: ShardInfo, info: IndexInfo, writable: bool = False) -> faiss.Index:
    """One index file, memory-mapped (``writable``: read into memory, so that rows can be added); refuses
    files whose size or contents disagree with ``index.json``."""
    hint = _rebuild_hint(directory.parent)
    file = directory / part.file
    _check_size(file, part.file_bytes, hint)
    try:
        if part.lists:  # the index file holds the rest, a few MB read at once (not page by page)
            _check_size(directory / part.lists, part.lists_bytes, hint)
            index = faiss.read_index(str(file), faiss.IO_FLAG_SKIP_IVF_DATA)
            map_lists(index, directory / part.lists)
            if writable:
                load_lists(index)
        else:
            index = faiss.read_index(str(file), 0 if writable else MAPPED)
    except (RuntimeError, MemoryError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[-1][:200]
        raise CollectionError(f"{file} cannot be read ({reason}): {hint}") from None
    if (index.ntotal, index.d, index.metric_type) != (part.ntotal, info.dim, METRICS[info.metric]):
        raise CollectionError(
            f"{file} holds {index.ntotal} vectors of dim {index.d} but {INFO_FILE} says {part.ntotal} of "
            f"dim {info.dim} ({info.metric}): {hint}"
        )
    _set_search_params(index, part.search_params)
    return index


def _check_size(file: Path, written: int, hint: str) -> None:
    """Refuse a missing file, or one whose size is not the ``written`` bytes ``index.json`` records."""
    size = file.stat().st_size if file.is_file() else None
    if size is None:
        raise CollectionError(f"{file} is missing: {hint}")
    if size == 0 or size != written:
        raise CollectionError(f"{file} is damaged ({size} bytes, but {written} were written): {hint}")


def _save_part(directory: Path, part: ShardInfo, index: faiss.Index) -> ShardInfo:
    """Atomically write the index file of ``part`` (and a fast-scan index's lists file, under a new name,
    after which ``index`` searches them mapped); returns the part as written."""
    file = directory / part.file
    file.parent.mkdir(parents=True, exist_ok=True)
    lists, lists_bytes = "", 0
    if has_block_lists(index):
        lists = str(Path(part.file).with_name(f"{file.stem}-{uuid.uuid4().hex[:12]}{LISTS_SUFFIX}"))
        atomic_write(directory / lists, lambda f: write_lists(index, f, directory / lists))
        lists_bytes = (directory / lists).stat().st_size
    atomic_write(file, lambda f: faiss.write_index(index, faiss.PyCallbackIOWriter(f.write)))
    if lists:
        map_lists(index, directory / lists)
    return replace(
        part, ntotal=index.ntotal, file_bytes=file.stat().st_size, lists=lists, lists_bytes=lists_bytes
    )


def _commit(directory: Path, info: IndexInfo) -> None:
    """Atomically write ``index.json`` (the commit point), then remove index files it no longer lists
    (processes that mapped them keep their pages until they let go)."""
    atomic_write_json(directory / INFO_FILE, asdict(info))
    listed = {directory / name for part in info.parts for name in (part.file, part.lists) if name}
    shards = Path(f"{SHARD_PREFIX}*", INDEX_FILE)
    patterns = (INDEX_FILE, f"*{LISTS_SUFFIX}", str(shards), str(shards.with_name(f"*{LISTS_SUFFIX}")))
    for file in [file for pattern in patterns for file in directory.glob(pattern)]:
        if file not in listed and file.is_file():
            file.unlink()
            if file.parent != directory and not any(file.parent.iterdir()):
                file.parent.rmdir()


def _rebuild_hint(path: Path) -> str:
    return f"rebuild it with `galsearch index {path} --rebuild`"


# ---- searching -----------------------------------------------------------------------------------


@dataclass
class VectorIndex:
    """A FAISS index over ``vectors`` (FAISS id i = row i = catalog row i), ready to search."""

    index: faiss.Index  # on the CPU: what is saved, and what filtered searches use
    factory: str
    metric: Metric
    vectors: np.ndarray  # the indexed vectors as stored (a memmap): exact fallback, re-ranking, torch search
    device: str | None = None  # None: CUDA when torch sees a GPU
    rerank: int = 0  # re-score a shortlist of rerank x k candidates exactly (0: none)
    _fast: _Searcher = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._fast = _accelerated(self.index, self.vectors, self.metric, self.device)

    @property
    def ntotal(self) -> int:
        """Number of indexed vectors."""
        return self.index.ntotal

    @property
    def search_params(self) -> dict[str, int]:
        """The HNSW efSearch or IVF nprobe in use."""
        return search_params(self.index)

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Scores and rows (m, k) of the ``k`` nearest rows to each query, best first; rows -1 past the end.

        Scores are cosine similarities (``cosine``) or squared L2 distances (``l2``). ``allowed`` restricts
        the results to those row numbers (a metadata filter).
        """
        if k < 1:
            raise IndexSettingError(f"k must be at least 1, got {k}")
        queries = self._queries(queries)
        wanted = k * self.rerank if self.rerank else k
        if allowed is not None:
            scores, rows = self._search_allowed(queries, wanted, self._allowed(allowed))
        elif wanted <= GPU_MAX_K:
            scores, rows = self._fast.search(queries, wanted)
        else:
            scores, rows = self.index.search(queries, wanted)
        if self.rerank:
            scores, rows = rerank_shortlist(self.vectors, queries, rows, k, self.metric)
        scores[rows < 0] = -np.inf if self.metric == "cosine" else np.inf
        return scores, rows

    def _queries(self, queries: np.ndarray) -> np.ndarray:
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if queries.ndim != 2 or queries.shape[1] != self.index.d:
            raise ValueError(f"queries must have shape (m, {self.index.d}), got {queries.shape}")
        return _prepared(queries, self.metric)

    def _allowed(self, allowed: np.ndarray) -> np.ndarray:
        """Sorted unique allowed rows that are indexed (rows not embedded yet cannot be found)."""
        allowed = np.asarray(allowed, dtype=np.int64)
        if not (allowed[1:] > allowed[:-1]).all():  # a filter's rows are sorted and unique already
            allowed = np.unique(allowed)
        if len(allowed) and allowed[0] < 0:
            raise ValueError(f"allowed rows must be row numbers >= 0, got {allowed[0]}")
        return allowed[allowed < self.ntotal]

    def _search_allowed(
        self, queries: np.ndarray, k: int, allowed: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Search with a FAISS ID selector; queries it leaves short are answered exactly among ``allowed``."""
        bits = np.zeros(self.ntotal, dtype=bool)
        bits[allowed] = True
        bitmap = np.packbits(bits, bitorder="little")  # must outlive the search below
        selector = faiss.IDSelectorBitmap(self.ntotal, faiss.swig_ptr(bitmap))
        scores, rows = self.index.search(queries, k, params=_filtered_params(self.index, selector))
        want = min(k, len(allowed))
        short = rows[:, want - 1] < 0 if want else np.zeros(len(rows), dtype=bool)
        if short.any():
            scores[short], rows[short] = exact_search(self.vectors, allowed, queries[short], k, self.metric)
        return scores, rows


def _filtered_params(index: faiss.Index, selector: faiss.IDSelector) -> faiss.SearchParameters:
    """Search parameters with ``selector`` that keep the index's efSearch / nprobe / k_factor."""
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexPreTransform):
        return _filtered_params(index.index, selector)
    if isinstance(index, faiss.IndexRefine):
        base = _filtered_params(index.base_index, selector)
        return faiss.IndexRefineSearchParameters(k_factor=index.k_factor, base_index_params=base)
    if isinstance(index, faiss.IndexHNSW):
        return faiss.SearchParametersHNSW(sel=selector, efSearch=index.hnsw.efSearch)
    if isinstance(index, faiss.IndexIVF):
        return faiss.SearchParametersIVF(sel=selector, nprobe=index.nprobe)
    return faiss.SearchParameters(sel=selector)


def exact_search(
    vectors: np.ndarray, rows: np.ndarray, queries: np.ndarray, k: int, metric: Metric
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top ``k`` among ``vectors[rows]`` for queries already prepared (unit length for cosine)."""
    heap = faiss.ResultHeap(len(queries), k, keep_max=metric == "cosine")
    for first in range(0, len(rows), CHUNK_ROWS):
        part = rows[first : first + CHUNK_ROWS]
        scores, found = faiss.knn(
            queries, _prepared(vectors[part], metric), min(k, len(part)), metric=METRICS[metric]
        )
        heap.add_result(scores, np.where(found >= 0, part[found], -1))
    heap.finalize()
    return heap.D, heap.I


# ---- GPUs ----------------------------------------------------------------------------------------


# Device files that a CUDA (or ROCm, or WSL) GPU driver provides: without any, torch cannot see a GPU, and
# a search on the CPU does not import it.
GPU_DEVICE_FILES = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/dxg", "/dev/kfd")


def _cuda_available() -> bool:
    """Whether torch sees a CUDA GPU (torch is imported only where a GPU driver is present)."""
    if "torch" not in sys.modules and not any(os.path.exists(file) for file in GPU_DEVICE_FILES):
        return False
    import torch

    return torch.cuda.is_available()


def _wants_cuda(device: str | None) -> bool:
    if device is None:
        return _cuda_available()
    if device.startswith("cuda") and not _cuda_available():
        raise IndexSettingError(f"device {device!r} asked for, but torch sees no CUDA GPU")
    return device.startswith("cuda")


def _faiss_gpu(device: str | None) -> bool:
    return _wants_cuda(device) and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


@cache
def _gpu_resources() -> Any:
    return faiss.StandardGpuResources()


def _to_faiss_gpu(index: faiss.Index) -> faiss.Index | None:
    """A copy of ``index`` on GPU 0, or None for structures FAISS has no GPU version of."""
    try:
        return faiss.index_cpu_to_gpu(_gpu_resources(), 0, index)
    except RuntimeError:
        return None


def _accelerated(index: faiss.Index, vectors: np.ndarray, metric: Metric, device: str | None) -> _Searcher:
    """What unfiltered searches run on: a FAISS GPU copy, torch on CUDA for Flat, or the CPU index."""
    if not _wants_cuda(device):
        return index
    if _faiss_gpu(device):
        on_gpu = _to_faiss_gpu(index)
        return index if on_gpu is None else on_gpu
    if isinstance(faiss.downcast_index(index), faiss.IndexFlat):
        return TorchExact(vectors, metric, device or "cuda")
    return index


class TorchExact:
    """Exact search with torch matrix products on a CUDA device, the vectors held there."""

    QUERY_BYTES = 2**30  # bound on one block of query x vector scores

    def __init__(self, vectors: np.ndarray, metric: Metric, device: str):
        import torch

        self.metric = metric
        self.device = torch.device(device)
        self.data = torch.empty(vectors.shape, dtype=torch.float32, device=self.device)
        for first in range(0, len(vectors), CHUNK_ROWS):
            chunk = _prepared(vectors[first : first + CHUNK_ROWS], metric)
            self.data[first : first + len(chunk)] = torch.from_numpy(chunk).to(self.device)
        self.sq_norms = (self.data**2).sum(dim=1) if metric == "l2" else None

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Scores and rows (m, k) of the ``k`` nearest rows, best first; rows -1 past the end."""
        import torch

        n = len(self.data)
        block = max(1, self.QUERY_BYTES // (4 * max(n, 1)))
        scores = np.full((len(queries), k), -np.inf if self.metric == "cosine" else np.inf, np.float32)
        rows = np.full((len(queries), k), -1, np.int64)
        kept = min(k, n)
        for first in range(0, len(queries), block):
            q = torch.from_numpy(queries[first : first + block]).to(self.device)
            products = q @ self.data.T
            if self.metric == "cosine":
                top = products.topk(kept, dim=1)
            else:
                distances = (q**2).sum(dim=1, keepdim=True) - 2 * products + self.sq_norms
                top = distances.topk(kept, dim=1, largest=False)
            scores[first : first + len(q), :kept] = top.values.cpu().numpy()
            rows[first : first + len(q), :kept] = top.indices.cpu().numpy()
        return scores, rows
