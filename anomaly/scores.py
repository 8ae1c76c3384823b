"""Unsupervised anomaly scores: isolation forest, local outlier factor and k-NN distance.

Each scorer is a scikit-learn outlier detector (``fit``/``score_samples``, higher = more normal, as in
scikit-learn); :func:`anomaly_scores` turns one into a score per galaxy where *higher is more anomalous*.
scikit-learn is imported only when a scorer is made.

k-NN scores of a collection come from one of two places (``via``): up to :data:`INDEX_KNN_ABOVE` embedded
galaxies, scikit-learn's exact neighbours among the PCA features held in memory; beyond, every galaxy's
neighbours in the embedding space found through the collection's FAISS index, in resumable batches, here
or on a Dask cluster (:func:`galsearch.anomaly.knn.index_knn_scores`). Either way the column is
``anomaly_knn``, higher = farther from its neighbours.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from galsearch.embedder.collection import Collection
from galsearch.embedder.errors import GalsearchError

from .features import DEFAULT_DIM, collection_features

if TYPE_CHECKING:
    from sklearn.base import OutlierMixin

METHODS = ("knn", "iforest", "lof")
DEFAULT_METHOD = "knn"
VIAS = ("features", "index")
INDEX_KNN_ABOVE = 100_000  # k-NN scores of collections with more embedded galaxies come from their index
NEIGHBOURS = 10  # the k of k-NN scores


class ScoresError(GalsearchError):
    """Anomaly scores that cannot be computed as asked."""


def make_scorer(method: str = DEFAULT_METHOD, seed: int = 0) -> OutlierMixin:
    """A fresh scikit-learn outlier detector for ``method`` (knn, iforest or lof)."""
    if method == "knn":
        from .knn import KNNDistance

        return KNNDistance(n_neighbors=NEIGHBOURS)
    if method == "iforest":
        from sklearn.ensemble import IsolationForest

        return IsolationForest(n_estimators=200, random_state=seed)
    if method == "lof":
        from sklearn.neighbors import LocalOutlierFactor

        return LocalOutlierFactor(n_neighbors=20)
    raise GalsearchError(f"unknown anomaly method {method!r}: choose one of {', '.join(METHODS)}")


def anomaly_scores(features: np.ndarray, method: str = DEFAULT_METHOD, seed: int = 0) -> np.ndarray:
    """Fit ``method`` on ``features`` and return each row's anomaly score (higher = more anomalous)."""
    scorer = make_scorer(method, seed).fit(features)
    if method == "knn":
        return -scorer.negative_distance_
    if method == "lof":
        return -scorer.negative_outlier_factor_
    return -scorer.score_samples(features)


def score_column(method: str) -> str:
    """The catalog column holding scores of ``method``."""
    return f"anomaly_{method}"


def knn_via(collection: Collection) -> str:
    """Where the k-NN scores of ``collection`` come from by default: ``features`` (in memory, exact) up to
    :data:`INDEX_KNN_ABOVE` embedded galaxies, else ``index`` (the collection's FAISS index)."""
    return "index" if collection.counts["embedded"] > INDEX_KNN_ABOVE else "features"


def score_collection(
    collection: Collection,
    method: str = DEFAULT_METHOD,
    dim: int = DEFAULT_DIM,
    seed: int = 0,
    *,
    via: str | None = None,
    neighbours: int = NEIGHBOURS,
    statistic: str = "kth",
    batch_rows: int | None = None,
    dask: str | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> pd.Series:
    """Score every embedded galaxy, store the scores in the catalog column ``anomaly_METHOD``, return them.

    ``via`` (k-NN only; default :func:`knn_via`): ``features`` fits ``method`` on the PCA features of
    ``dim`` dimensions in memory; ``index`` scores each galaxy by the distance to its ``neighbours``-th
    nearest other galaxy (``statistic`` ``mean``: the mean over them) in the embedding space through the
    collection's index, in batches of ``batch_rows`` (default :data:`galsearch.anomaly.knn.BATCH_ROWS`),
    resumably, on the Dask cluster at ``dask`` or of ``workers`` local processes if given.
    """
    make_scorer(method)  # rejects an unknown method before the work starts
    via = via or (knn_via(collection) if method == "knn" else "features")
    if via not in VIAS:
        raise ScoresError(f"unknown source of scores {via!r}: choose one of {', '.join(VIAS)}")
    if via == "features":
        index_only = {
            "neighbours": neighbours != NEIGHBOURS,
            "statistic": statistic != "kth",
            "batch_rows": batch_rows is not None,
            "dask": dask is not None,
            "workers": workers is not None,
        }
        if given := [name for name, chosen in index_only.items() if chosen]:
            raise ScoresError(f"{', '.join(given)} apply to k-NN scores through the index (via='index') only")
        return store_scores(
            collection, method, anomaly_scores(collection_features(collection, dim, seed), method, seed)
        )
    if method != "knn":
        raise ScoresError(f"only k-NN scores are computed through the index, not {method!r}")
    from .knn import BATCH_ROWS, ScoreSettings, index_knn_scores

    settings = ScoreSettings(neighbours, statistic)
    scores, cache = index_knn_scores(
        collection,
        settings,
        batch_rows=batch_rows or BATCH_ROWS,
        dask=dask,
        workers=workers,
        progress=progress,
    )
    stored = store_scores(collection, method, scores)
    cache.remove()
    return stored


def store_scores(collection: Collection, method: str, scores: np.ndarray) -> pd.Series:
    """Write one score per embedded galaxy to the catalog column ``anomaly_METHOD`` (NaN for the rest)."""
    column = np.full(len(collection), np.nan)
    column[: len(scores)] = scores
    with collection.writing():
        collection.set_columns({score_column(method): column})
    return collection.catalog_columns([score_column(method)])[score_column(method)]
