"""The low-dimensional features that anomaly scores, the active learner and clustering work on.

A collection's features are cached in it per encoder and are extended, not recomputed, as galaxies are
embedded::

    cache/features-dDIM-sSEED-DIGEST.f32   float32 (rows, DIM), row i = catalog row i
    cache/features-dDIM-sSEED-DIGEST.npz   the fitted reduction and how many rows of the .f32 are done

``DIGEST`` names the encoder (its identity) and the reduction's parameters. The .npz is the commit point,
as a collection's manifest is: rows are appended first, then the .npz is replaced atomically. The
reduction is fitted again (and every row recomputed) while it was fitted on fewer than
:data:`FIT_SAMPLE` galaxies, and when the collection has grown :data:`REFIT_GROWTH` times since, so a
collection of up to FIT_SAMPLE galaxies gets exactly what :func:`reduce_embeddings` computes.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from galsearch.embedder.collection import CACHE, EMBEDDINGS, Collection
from galsearch.embedder.embed import IDENTITY_KEYS
from galsearch.embedder.errors import CollectionError
from galsearch.embedder.storage import append_records, atomic_write

DEFAULT_DIM = 16
FIT_SAMPLE = 100_000  # PCA is fitted on at most this many galaxies, then applied to all
REFIT_GROWTH = 2  # a cached reduction is fitted again once the collection is this many times larger
CHUNK = 262_144


@dataclass(frozen=True)
class Reduction:
    """Unit-normalisation, then a whitened PCA to ``len(scale)`` dimensions, fitted on ``fitted`` galaxies."""

    mean: np.ndarray
    components: np.ndarray
    scale: np.ndarray  # the square roots of the explained variances
    fitted: int

    @classmethod
    def fit(cls, sample: np.ndarray, n: int, dim: int = DEFAULT_DIM, seed: int = 0) -> Reduction:
        """Fit on ``sample``, the rows :func:`fit_rows` (``n``, ``seed``) of ``n`` embeddings."""
        from sklearn.decomposition import PCA

        from galsearch.index.store import normalized

        dim = min(dim, sample.shape[1], n)
        if dim < 1:
            raise CollectionError("no embeddings to reduce: embed the collection first (galsearch embed)")
        pca = PCA(dim, whiten=True, svd_solver="randomized" if n > 10_000 else "full", random_state=seed)
        pca.fit(normalized(sample))
        return cls(pca.mean_, pca.components_, np.sqrt(pca.explained_variance_), n)

    def __call__(self, embeddings: np.ndarray) -> np.ndarray:
        """The reduced features (float32) of rows of embeddings."""
        from galsearch.index.store import normalized

        return ((normalized(embeddings) - self.mean) @ self.components.T / self.scale).astype(np.float32)


def fit_rows(n: int, seed: int = 0) -> np.ndarray:
    """The rows of ``n`` embeddings that a reduction is fitted on: all, or a seeded sample of
    :data:`FIT_SAMPLE` when more."""
    if n <= FIT_SAMPLE:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, FIT_SAMPLE, replace=False))


def reduce_embeddings(embeddings: np.ndarray, dim: int = DEFAULT_DIM, seed: int = 0) -> np.ndarray:
    """Unit-normalise embeddings, then PCA-whiten them to ``dim`` dimensions (float32, one row each)."""
    embeddings = np.asarray(embeddings)
    reduction = Reduction.fit(embeddings[fit_rows(len(embeddings), seed)], len(embeddings), dim, seed)
    out = np.empty((len(embeddings), len(reduction.scale)), dtype=np.float32)
    for start in range(0, len(embeddings), CHUNK):
        out[start : start + CHUNK] = reduction(embeddings[start : start + CHUNK])
    return out


def collection_features(collection: Collection, dim: int = DEFAULT_DIM, seed: int = 0) -> np.ndarray:
    """Reduced features of every embedded galaxy of ``collection`` (row i = catalog row i).

    They are cached in the collection and extended as galaxies are embedded (see the module's
    description), and read back as a read-only memory map; a collection that cannot be written to
    computes them each time.
    """
    n = collection.counts["embedded"]
    if n == 0:
        raise CollectionError(
            f"{collection.path} has no embeddings yet: run `galsearch embed {collection.path}`"
        )
    stem = _stem(collection, dim, seed)
    state = _read_state(stem)
    try:
        if state is None or _refit_due(state[0], state[1], n):
            stem.parent.mkdir(exist_ok=True)
            stem.with_suffix(".npz").unlink(missing_ok=True)  # its rows are about to be overwritten
            sample = _read_rows(collection, fit_rows(n, seed))
            state = (Reduction.fit(sample, n, dim, seed), 0)
        reduction, done = state
        width = len(reduction.scale)
        for start in tqdm(range(done, n, CHUNK), desc="reducing embeddings", disable=n - done <= CHUNK):
            rows = reduction(collection.embedding_rows(start, min(start + CHUNK, n)))
            append_records(stem.with_suffix(".f32"), start * width * 4, rows.tobytes())
        if done < n:
            _write_state(stem, reduction, n)
    except OSError:  # a read-only collection: compute them, uncached
        return reduce_embeddings(collection.embeddings, dim, seed)
    return np.memmap(stem.with_suffix(".f32"), dtype=np.float32, mode="r", shape=(n, width))


def _read_rows(collection: Collection, rows: np.ndarray) -> np.ndarray:
    """Embeddings at sorted ``rows``, read through a mapping that fetches only the pages touched (a
    random sample of a large file, read-ahead, would bring in most of it)."""
    n, width = collection.counts["embedded"], collection.embedding_dim
    with (
        open(collection.path / EMBEDDINGS, "rb") as f,
        mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m,
    ):
        m.madvise(mmap.MADV_RANDOM)
        array = np.frombuffer(m, dtype=np.float32, count=n * width).reshape(n, width)
        sample = array[rows]
        del array  # the mapping closes only when no array views it
    return sample


def _stem(collection: Collection, dim: int, seed: int) -> Path:
    """The cache files' path without suffix, named by what the features depend on besides the rows."""
    encoder = collection.encoder or {}
    key = {
        "encoder": {key: encoder.get(key) for key in IDENTITY_KEYS},
        "file": EMBEDDINGS,
        "fit_sample": FIT_SAMPLE,
        "refit_growth": REFIT_GROWTH,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return collection.path / CACHE / f"features-d{dim}-s{seed}-{digest}"


def _refit_due(reduction: Reduction, done: int, n: int) -> bool:
    """Whether the cached reduction is to be fitted again for ``n`` embedded galaxies."""
    fitted = reduction.fitted
    return done > n or (n > fitted and (fitted < FIT_SAMPLE or n > REFIT_GROWTH * fitted))


def _read_state(stem: Path) -> tuple[Reduction, int] | None:
    """The cached reduction and rows done, or None when absent or damaged."""
    try:
        with np.load(stem.with_suffix(".npz"), allow_pickle=False) as saved:
            reduction = Reduction(saved["mean"], saved["components"], saved["scale"], int(saved["fitted"]))
            done = int(saved["done"])
        if stem.with_suffix(".f32").stat().st_size < done * len(reduction.scale) * 4:
            return None
        return reduction, done
    except (OSError, ValueError, KeyError):
        return None


def _write_state(stem: Path, reduction: Reduction, done: int) -> None:
    """Commit ``done`` rows of features made by ``reduction``; remove the files of other encoders and
    parameters (and the whole-array .npy files that caches of earlier versions held)."""
    arrays = {"mean": reduction.mean, "components": reduction.components, "scale": reduction.scale}
    arrays |= {"fitted": np.int64(reduction.fitted), "done": np.int64(done)}
    atomic_write(stem.with_suffix(".npz"), lambda f: np.savez(f, **arrays))
    prefix = stem.name.rsplit("-", 1)[0]
    for older in stem.parent.glob(f"{prefix}-*"):
        if older.stem != stem.name and re.fullmatch(
            rf"{re.escape(prefix)}-[0-9a-f]{{16}}\.(f32|npz|npy)", older.name
        ):
            older.unlink(missing_ok=True)
