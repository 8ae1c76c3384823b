"""k-NN distance anomaly scores: in memory (a scikit-learn estimator, on PCA features) and at survey scale
(every galaxy's nearest neighbours in the embedding space, found through the collection's FAISS index).

At scale the galaxies are scored in batches of rows, in one process or as tasks on a Dask cluster, and the
batches are committed in row order: each batch's scores are appended to ``cache/knn-scores-DIGEST.f32``,
then ``cache/knn-scores-DIGEST.json`` (rows done) is replaced atomically, so a killed run continues after
its last committed batch. ``DIGEST`` names the index's state and the scores' parameters: a rebuilt or
grown index starts over.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.neighbors import NearestNeighbors
from sklearn.utils.validation import check_array, check_is_fitted
from tqdm.auto import tqdm

from galsearch.embedder.collection import CACHE, Collection, open_collection
from galsearch.embedder.distributed import usable_cpus
from galsearch.embedder.storage import append_records, atomic_write_json, exclusive_lock

from .scores import NEIGHBOURS, ScoresError

if TYPE_CHECKING:
    from galsearch.index.store import IndexInfo, VectorIndex

STATISTICS = ("kth", "mean")  # distance to the k-th nearest other galaxy, or the mean over the k nearest
BATCH_ROWS = 16_384  # galaxies scored per batch (one Dask task, one commit): seconds of work
EXACT_BLOCK = 64  # queries whose shortlists are scored exactly at once (64 x 220 rows: 18 MB at dim 320)
SCORES_PREFIX = "knn-scores"

# The index this process (a Dask worker, or a run in one process) loaded: collection path -> its parts
_LOADED: dict[str, IndexParts] = {}


class KNNDistance(OutlierMixin, BaseEstimator):
    """Distance to the ``n_neighbors``-th nearest neighbour: far from everything means anomalous."""

    def __init__(self, n_neighbors: int = 10):
        self.n_neighbors = n_neighbors

    def fit(self, X: np.ndarray, y: None = None) -> KNNDistance:
        X = check_array(X, dtype=np.float32)
        self.neighbors_ = NearestNeighbors(n_neighbors=min(self.n_neighbors, len(X) - 1)).fit(X)
        # Each training point's own distance is measured to the others (itself excluded).
        self.negative_distance_ = -self.neighbors_.kneighbors()[0][:, -1]
        return self

    def score_samples(self, X: np.ndarray) -> np.ndarray:
        """Minus the distance of each row to its k-th nearest training point (higher = more normal)."""
        check_is_fitted(self)
        X = check_array(X, dtype=np.float32)
        return -self.neighbors_.kneighbors(X)[0][:, -1]


# ---- at survey scale, through the collection's index ----------------------------------------------


@dataclass(frozen=True)
class ScoreSettings:
    """What a row's index k-NN score depends on besides the embeddings: ``k`` and the ``statistic``."""

    k: int = NEIGHBOURS
    statistic: str = "kth"

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ScoresError(f"k must be at least 1, got {self.k}")
        if self.statistic not in STATISTICS:
            raise ScoresError(f"unknown statistic {self.statistic!r}: choose one of {', '.join(STATISTICS)}")


@dataclass
class IndexParts:
    """The files (shards) of a collection's index loaded in this process, each with its first row, and the
    collection's embeddings, as :func:`neighbour_distances` searches them."""

    parts: list[tuple[int, VectorIndex]]
    vectors: np.ndarray  # every embedding (a memmap)
    metric: str
    rerank: int
    state: str  # see index_state

    @classmethod
    def load(cls, collection: Collection) -> IndexParts:
        """The saved index of ``collection``, which must hold every embedded galaxy."""
        from galsearch.index.store import load_part, read_info

        info = read_info(collection)
        if info.ntotal != collection.counts["embedded"]:
            raise ScoresError(
                f"the index of {collection.path} holds {info.ntotal} of {collection.counts['embedded']} "
                f"embedded galaxies: run `galsearch index {collection.path}`"
            )
        parts = [(part.first, load_part(collection.path, info, part)) for part in info.parts]
        vectors = collection.embeddings
        if info.rerank:
            _read_ahead(vectors)
        return cls(parts, vectors, info.metric, info.rerank, index_state(info))


def _read_ahead(vectors: np.ndarray) -> None:
    """Ask the kernel to read a memory-mapped embeddings file into the page cache in the background, in
    order, when it fits in half the memory available: the shortlists of every galaxy read it all, at
    random, which from disk would cost a seek per row."""
    from galsearch.index.compressed import available_memory

    if not isinstance(vectors, np.memmap) or not hasattr(os, "posix_fadvise"):
        return
    if vectors.nbytes <= available_memory() // 2:
        with open(vectors.filename, "rb") as f:
            os.posix_fadvise(f.fileno(), vectors.offset, vectors.nbytes, os.POSIX_FADV_WILLNEED)


def neighbour_distances(
    index: IndexParts,
    queries: np.ndarray,
    rows: np.ndarray,
    settings: ScoreSettings,
    threads: int | None = None,
) -> np.ndarray:
    """The k-NN score of the indexed galaxies at catalog ``rows`` whose embeddings are ``queries``: the
    distance (Euclidean between unit vectors for cosine indexes, Euclidean for l2) to the k-th nearest
    other galaxy, or the mean over the k nearest; float32, +inf where the index found fewer than k.

    A compressed index's shortlists (``rerank`` x (k + 1) candidates from each shard) are scored exactly
    against the embeddings together, straight from the memory map (what
    :func:`galsearch.index.compressed.rerank_shortlist` does per shard, without its gathering by unique
    row, which costs more than it saves when every query has its own shortlist), in blocks of queries
    on ``threads`` threads (default: one per CPU this process may use).
    """
    from galsearch.index.store import normalized

    queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    k = settings.k
    if index.rerank:
        prepared = normalized(queries) if index.metric == "cosine" else np.ascontiguousarray(queries)
        shortlists = []
        for first, part in index.parts:
            found = part.index.search(prepared, (k + 1) * index.rerank)[1]
            shortlists.append(np.where(found >= 0, found + first, -1))
        found = np.concatenate(shortlists, axis=1)
        distances = np.empty((len(queries), k), np.float32)

        def exact(start: int) -> None:
            block = slice(start, start + EXACT_BLOCK)
            distances[block] = _exact_nearest(index, prepared[block], found[block], rows[block], k)

        with ThreadPoolExecutor(threads or usable_cpus(), thread_name_prefix="knn-exact") as pool:
            list(pool.map(exact, range(0, len(queries), EXACT_BLOCK)))  # numpy lets go of the GIL
    else:
        results = [(part.search(queries, k + 1), first) for first, part in index.parts]
        found = np.concatenate([np.where(r >= 0, r + first, -1) for (_, r), first in results], axis=1)
        squared = _squared(np.concatenate([scores for (scores, _), _ in results], axis=1), index.metric)
        squared[(found < 0) | (found == rows[:, None])] = np.inf  # a galaxy is not its own neighbour
        distances = _smallest(squared, k)
    return distances[:, -1] if settings.statistic == "kth" else distances.mean(axis=1)


def _exact_nearest(
    index: IndexParts, queries: np.ndarray, candidates: np.ndarray, rows: np.ndarray, k: int
) -> np.ndarray:
    """The ``k`` smallest exact distances (ascending) from each prepared query to its candidate rows,
    the query's own row and missing candidates (-1) left out (+inf where fewer than k remain)."""
    valid = (candidates >= 0) & (candidates != rows[:, None])
    gathered = index.vectors[np.where(valid, candidates, 0)]  # (queries, candidates, dim)
    dots = np.matmul(gathered, queries[:, :, None])[..., 0]
    norms = np.einsum("csd,csd->cs", gathered, gathered)
    if index.metric == "cosine":
        squared = 2 - 2 * dots / np.sqrt(np.maximum(norms, np.finfo(np.float32).tiny))
    else:
        squared = norms - 2 * dots + np.einsum("cd,cd->c", queries, queries)[:, None]
    return _smallest(np.where(valid, np.maximum(squared, 0), np.inf), k)


def _squared(scores: np.ndarray, metric: str) -> np.ndarray:
    """Squared distances from an index's scores: cosine similarity s -> 2 - 2s; squared L2 as it is."""
    squared = 2 - 2 * scores if metric == "cosine" else scores
    return np.maximum(np.nan_to_num(squared.astype(np.float32), nan=np.inf, posinf=np.inf), 0)


def _smallest(squared: np.ndarray, k: int) -> np.ndarray:
    """The roots of the ``k`` smallest squared distances of each row, ascending (+inf past the last)."""
    take = min(k, squared.shape[1])
    nearest = np.sort(np.partition(squared, take - 1, axis=1)[:, :take], axis=1)
    out = np.full((len(squared), k), np.inf, np.float32)
    out[:, :take] = np.sqrt(nearest)
    return out


def score_rows(
    path: str, state: str, first: int, stop: int, settings: ScoreSettings, threads: int | None = None
) -> np.ndarray:
    """The k-NN scores of rows ``first`` to ``stop`` of the collection at ``path`` (a Dask task, or a batch
    of a run in one process) through its index in ``state``, loaded once per process and state; raises
    when the index on disk is in another state (rebuilt or grown since the run started)."""
    import faiss

    if threads is not None:
        faiss.omp_set_num_threads(threads)
    collection = open_collection(path)
    if path not in _LOADED or _LOADED[path].state != state:
        _LOADED[path] = IndexParts.load(collection)
    if _LOADED[path].state != state:
        raise ScoresError(f"the index of {path} changed while its k-NN scores were computed: run again")
    rows = np.arange(first, stop)
    return neighbour_distances(_LOADED[path], collection.embedding_rows(first, stop), rows, settings, threads)


def _score_task(
    first: int, stop: int, path: str, state: str, settings: ScoreSettings, slots: dict
) -> np.ndarray:
    from galsearch.embedder.distributed import cpus_per_task

    return score_rows(path, state, first, stop, settings, cpus_per_task(slots))


def index_state(info: IndexInfo) -> str:
    """A digest of what a loaded index answers with: its build, size, structure and search parameters."""
    parts = [(part.file, part.first, part.ntotal, part.lists, part.search_params) for part in info.parts]
    key = [info.built, info.ntotal, info.factory, info.metric, info.rerank, parts]
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ScoresCache:
    """The partial scores of one run: ``.f32`` scores of rows 0 to ``done`` (committed by the ``.json``)."""

    stem: Path

    @classmethod
    def of(cls, collection: Collection, state: str, settings: ScoreSettings) -> ScoresCache:
        key = {"index": state, "k": settings.k, "statistic": settings.statistic}
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        return cls(collection.path / CACHE / f"{SCORES_PREFIX}-{digest}")

    def done(self) -> int:
        """Rows committed (0 when absent, damaged or shorter than it claims)."""
        try:
            done = int(json.loads(self.stem.with_suffix(".json").read_text())["done"])
            return done if self.stem.with_suffix(".f32").stat().st_size >= 4 * done else 0
        except (OSError, ValueError, KeyError, TypeError):
            return 0

    def commit(self, first: int, scores: np.ndarray) -> None:
        """Append the scores of rows ``first``... and commit them (the commit point of a batch)."""
        append_records(self.stem.with_suffix(".f32"), 4 * first, scores.astype(np.float32).tobytes())
        atomic_write_json(self.stem.with_suffix(".json"), {"done": first + len(scores)})

    def read(self, n: int) -> np.ndarray:
        """The committed scores of rows 0 to ``n``."""
        return np.fromfile(self.stem.with_suffix(".f32"), dtype=np.float32, count=n)

    def start(self) -> None:
        """Remove the files of other runs (other index states or settings)."""
        for older in self.stem.parent.glob(f"{SCORES_PREFIX}-*"):
            if older.stem != self.stem.name:
                older.unlink(missing_ok=True)

    def remove(self) -> None:
        """Remove the files (once the scores are stored elsewhere)."""
        for suffix in (".json", ".f32"):
            self.stem.with_suffix(suffix).unlink(missing_ok=True)


def index_knn_scores(
    collection: Collection,
    settings: ScoreSettings = ScoreSettings(),
    *,
    batch_rows: int = BATCH_ROWS,
    dask: str | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> tuple[np.ndarray, ScoresCache]:
    """Every embedded galaxy's k-NN score (see :func:`neighbour_distances`) through the collection's index,
    in batches of ``batch_rows`` here or on a Dask cluster (``dask``: a scheduler address; ``workers``: that
    many local processes). Continues after the batches a killed run committed. Returns the scores (row i =
    catalog row i; galaxies the index found fewer than k neighbours for get the highest score found) and
    the cache holding them, to be removed once they are stored.
    """
    from galsearch.index.store import load_index, read_info

    if batch_rows < 1:
        raise ScoresError(f"a batch needs at least 1 row, got {batch_rows}")
    load_index(collection)  # adds the galaxies embedded since the index was saved, as every search does
    info = read_info(collection)
    n = info.ntotal
    if n < 2:
        raise ScoresError(f"{collection.path} has {n} indexed galaxies: k-NN scores need at least 2")
    settings = ScoreSettings(min(settings.k, n - 1), settings.statistic)
    state = index_state(info)
    cache = ScoresCache.of(collection, state, settings)
    path = str(collection.path)
    cache.stem.parent.mkdir(exist_ok=True)
    with exclusive_lock(cache.stem.parent / f"{SCORES_PREFIX}.lock", f"the k-NN scores of {path}"):
        cache.start()
        done = cache.done()
        batches = [(first, min(first + batch_rows, n)) for first in range(done, n, batch_rows)]
        with tqdm(total=n, initial=done, desc="k-NN scores", unit="galaxy", disable=not progress) as bar:
            for (first, stop), scores in zip(
                batches, batch_scores(batches, path, state, settings, dask, workers), strict=True
            ):
                cache.commit(first, scores)
                bar.update(stop - first)
        scores = cache.read(n)
    finite = np.isfinite(scores)
    if not finite.all():
        scores[~finite] = scores[finite].max() if finite.any() else 0.0
    return scores, cache


def batch_scores(
    batches: list[tuple[int, int]],
    path: str,
    state: str,
    settings: ScoreSettings,
    dask: str | None = None,
    workers: int | None = None,
) -> Iterator[np.ndarray]:
    """The scores of each batch (first, stop) of rows of the collection at ``path`` whose index is in
    ``state`` (:func:`index_state`), in order: here, or on a Dask cluster (as :func:`index_knn_scores`)."""
    if not batches:
        return
    if dask is None and workers is None:
        for first, stop in batches:
            yield score_rows(path, state, first, stop, settings)
        return
    from galsearch.embedder.distributed import dask_client, in_order, slots_per_host

    with dask_client(dask, workers) as client:
        slots = slots_per_host(client)
        yield from in_order(
            client, _score_task, batches, path=path, state=state, settings=settings, slots=slots
        )
