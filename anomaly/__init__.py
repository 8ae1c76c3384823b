"""Scoring and ranking: anomaly scores, Gaussian-process active learning, ratings and clusters.

Public names load their submodule on first use (scikit-learn only where a model is fitted).
"""

from typing import TYPE_CHECKING

from embedder.lazy import lazy_package

if TYPE_CHECKING:
    from .clusters import ClusterReport, cluster_collection, fit_clusters
    from .discover import Discovery
    from .features import collection_features, reduce_embeddings
    from .knn import KNNDistance
    from .learner import ActiveLearner
    from .ratings import Rating, RatingsError, RatingsStore, ratings_store
    from .scores import anomaly_scores, make_scorer, score_collection, score_column

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

lazy_package(
    __name__,
    {
        "clusters": ("ClusterReport", "cluster_collection", "fit_clusters"),
        "discover": ("Discovery",),
        "features": ("collection_features", "reduce_embeddings"),
        "knn": ("KNNDistance",),
        "learner": ("ActiveLearner",),
        "ratings": ("Rating", "RatingsError", "RatingsStore", "ratings_store"),
        "scores": ("anomaly_scores", "make_scorer", "score_collection", "score_column"),
    },
)
