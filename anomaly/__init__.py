"""Scoring and ranking: anomaly scores, Gaussian-process active learning, ratings and clusters."""

from .clusters import ClusterReport, cluster_collection, fit_clusters
from .discover import Discovery
from .features import collection_features, reduce_embeddings
from .learner import ActiveLearner
from .ratings import Rating, RatingsError, RatingsStore, ratings_store
from .scores import KNNDistance, anomaly_scores, make_scorer, score_collection, score_column

__all__ = [
    "ActiveLearner",
    "ClusterReport",
    "Discovery",
    "KNNDistance",
    "Rating",
    "RatingsError",
    "RatingsStore",
    "anomaly_scores",
    "cluster_collection",
    "collection_features",
    "fit_clusters",
    "make_scorer",
    "ratings_store",
    "reduce_embeddings",
    "score_collection",
    "score_column",
]
