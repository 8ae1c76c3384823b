"""Exact nearest-neighbour search over a collection's embeddings (cosine similarity)."""

from __future__ import annotations

import faiss
import numpy as np
import pandas as pd

from embedder.collection import Collection
from embedder.errors import CollectionError


def normalized(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, as contiguous float32 (zero rows stay zero)."""
    vectors = np.array(vectors, dtype=np.float32, order="C")
    faiss.normalize_L2(vectors)
    return vectors


def nearest(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarities and row numbers of the ``k`` rows of ``vectors`` nearest each query, best first."""
    k = min(k, len(vectors))
    return faiss.knn(normalized(queries), normalized(vectors), k, metric=faiss.METRIC_INNER_PRODUCT)


def similar(collection: Collection, ids: str | list[str], k: int = 10) -> pd.DataFrame:
    """The ``k`` galaxies most like the given one(s) (mean of their embeddings), the queries excluded.

    Returns the catalog rows of the neighbours with ``similarity`` (cosine) and ``rank`` columns.
    """
    embeddings = collection.embeddings
    rows = collection.rows_of(ids)
    if len(embeddings) < len(collection):
        raise CollectionError(
            f"{collection.path} has {len(embeddings)} of {len(collection)} galaxies embedded; "
            f"run `galsearch embed {collection.path}` first"
        )
    query = normalized(embeddings[rows]).mean(axis=0, keepdims=True)
    scores, found = nearest(embeddings, query, k + len(rows))
    keep = ~np.isin(found[0], rows)
    found, scores = found[0][keep][:k], scores[0][keep][:k]
    result = collection.catalog.iloc[found].reset_index(drop=True)
    result.insert(1, "similarity", scores)
    result.insert(0, "rank", np.arange(1, len(result) + 1))
    return result
