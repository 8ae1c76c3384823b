"""The low-dimensional features that anomaly scores, the active learner and clustering work on."""

from __future__ import annotations

import numpy as np

from embedder.cache import cached_array
from embedder.collection import Collection
from embedder.errors import CollectionError

DEFAULT_DIM = 16
FIT_SAMPLE = 100_000  # PCA is fitted on at most this many galaxies, then applied to all
CHUNK = 262_144


def reduce_embeddings(embeddings: np.ndarray, dim: int = DEFAULT_DIM, seed: int = 0) -> np.ndarray:
    """Unit-normalise embeddings, then PCA-whiten them to ``dim`` dimensions (float32, one row each)."""
    from sklearn.decomposition import PCA

    from index.store import normalized

    embeddings = np.asarray(embeddings)
    n, width = embeddings.shape
    dim = min(dim, width, n)
    if dim < 1:
        raise CollectionError("no embeddings to reduce: embed the collection first (galsearch embed)")
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, FIT_SAMPLE, replace=False)) if n > FIT_SAMPLE else slice(None)
    pca = PCA(dim, whiten=True, svd_solver="randomized" if n > 10_000 else "full", random_state=seed)
    pca.fit(normalized(embeddings[sample]))
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, CHUNK):
        stop = min(start + CHUNK, n)
        out[start:stop] = pca.transform(normalized(embeddings[start:stop]))
    return out


def collection_features(collection: Collection, dim: int = DEFAULT_DIM, seed: int = 0) -> np.ndarray:
    """Reduced features of every embedded galaxy of ``collection`` (row i = catalog row i).

    They are computed once per state of the embeddings and cached in the collection (``cache/``), read
    back as a read-only memory map.
    """
    if collection.counts["embedded"] == 0:
        raise CollectionError(
            f"{collection.path} has no embeddings yet: run `galsearch embed {collection.path}`"
        )
    return cached_array(
        collection,
        f"features-d{dim}-s{seed}",
        {"dim": dim, "seed": seed, "fit_sample": FIT_SAMPLE},
        lambda: reduce_embeddings(collection.embeddings, dim, seed),
    )
