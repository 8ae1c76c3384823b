"""Scoring and ranking: anomaly scores, Gaussian-process active learning, ratings, labels and clusters.

Public names load their submodule on first use (scikit-learn only where a model is fitted).
"""

from typing import TYPE_CHECKING

from galsearch.embedder.lazy import lazy_package

if TYPE_CHECKING:
    from .classifier import ClassifierResult, labels_from_ratings, labels_from_set, suspects, train_classifier
    from .clusters import ClusterReport, cluster_collection, fit_clusters
    from .discover import Discovery
    from .features import collection_features, reduce_embeddings
    from .knn import KNNDistance
    from .labels import LabelError, LabelStore, check_ids, label_store
    from .learner import ActiveLearner
    from .ratings import Rating, RatingsError, RatingsStore, ratings_store
    from .scores import anomaly_scores, make_scorer, score_collection, score_column

__all__ = [
    "ActiveLearner",
    "ClassifierResult",
    "ClusterReport",
    "Discovery",
    "KNNDistance",
    "LabelError",
    "LabelStore",
    "Rating",
    "RatingsError",
    "RatingsStore",
    "anomaly_scores",
    "check_ids",
    "cluster_collection",
    "collection_features",
    "fit_clusters",
    "label_store",
    "labels_from_ratings",
    "labels_from_set",
    "make_scorer",
    "ratings_store",
    "reduce_embeddings",
    "score_collection",
    "score_column",
    "suspects",
    "train_classifier",
]

lazy_package(
    __name__,
    {
        "classifier": (
            "ClassifierResult",
            "labels_from_ratings",
            "labels_from_set",
            "suspects",
            "train_classifier",
        ),
        "clusters": ("ClusterReport", "cluster_collection", "fit_clusters"),
        "discover": ("Discovery",),
        "features": ("collection_features", "reduce_embeddings"),
        "knn": ("KNNDistance",),
        "labels": ("LabelError", "LabelStore", "check_ids", "label_store"),
        "learner": ("ActiveLearner",),
        "ratings": ("Rating", "RatingsError", "RatingsStore", "ratings_store"),
        "scores": ("anomaly_scores", "make_scorer", "score_collection", "score_column"),
    },
)
