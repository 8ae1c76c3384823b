"""The k-NN distance outlier detector, a scikit-learn estimator like its own isolation forest and LOF."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.neighbors import NearestNeighbors
from sklearn.utils.validation import check_array, check_is_fitted


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
