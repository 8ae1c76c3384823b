"""Unsupervised anomaly scores: isolation forest, local outlier factor and k-NN distance.

Each scorer is a scikit-learn outlier detector (``fit``/``score_samples``, higher = more normal, as in
scikit-learn); :func:`anomaly_scores` turns one into a score per galaxy where *higher is more anomalous*.
scikit-learn is imported only when a scorer is made.
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


def make_scorer(method: str = DEFAULT_METHOD, seed: int = 0) -> OutlierMixin:
    """A fresh scikit-learn outlier detector for ``method`` (knn, iforest or lof)."""
    if method == "knn":
        from .knn import KNNDistance

        return KNNDistance(n_neighbors=10)
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


def score_collection(
    collection: Collection, method: str = DEFAULT_METHOD, dim: int = DEFAULT_DIM, seed: int = 0
) -> pd.Series:
    """Score every embedded galaxy, store the scores in the catalog column ``anomaly_METHOD``, return them."""
    make_scorer(method)  # rejects an unknown method before the work starts
    return store_scores(
        collection, method, anomaly_scores(collection_features(collection, dim, seed), method, seed)
    )


def store_scores(collection: Collection, method: str, scores: np.ndarray) -> pd.Series:
    """Write one score per embedded galaxy to the catalog column ``anomaly_METHOD`` (NaN for the rest)."""
    column = np.full(len(collection), np.nan)
    column[: len(scores)] = scores
    with collection.writing():
        collection.set_columns({score_column(method): column})
    return collection.catalog[score_column(method)]
