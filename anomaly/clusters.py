"""Unsupervised morphology clusters: a Bayesian Gaussian mixture that picks its own number of components."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.mixture import BayesianGaussianMixture

from galsearch.embedder import Collection

from .features import collection_features

FIT_SAMPLE = 50_000  # the mixture is fitted on at most this many galaxies, then assigns all of them
DEFAULT_DIM = 10
MAX_CLUSTERS = 20


@dataclass
class ClusterReport:
    """Cluster sizes and most typical members (closest to the cluster centre), largest cluster first."""

    sizes: pd.Series
    typical: dict[int, list[str]]
    max_clusters: int

    def table(self) -> pd.DataFrame:
        """One row per cluster: cluster, galaxies, share and its typical members (ids, comma-separated)."""
        return pd.DataFrame(
            {
                "cluster": self.sizes.index.to_numpy(),
                "galaxies": self.sizes.to_numpy(),
                "share": self.sizes.to_numpy() / self.sizes.sum(),
                "typical": [",".join(self.typical[c]) for c in self.sizes.index],
            }
        )

    def summary(self) -> str:
        total = int(self.sizes.sum())
        lines = [
            f"{len(self.sizes)} clusters among {total} galaxies",
            "cluster  galaxies  share  typical members",
        ]
        if len(self.sizes) == self.max_clusters:
            lines[0] += f" (all {self.max_clusters} allowed were used: try a larger --max-clusters)"
        for cluster, size in self.sizes.items():
            members = ", ".join(self.typical[cluster])
            lines.append(f"{cluster:>7}  {size:>8}  {size / total:>5.1%}  {members}")
        return "\n".join(lines)


def fit_clusters(
    features: np.ndarray, max_clusters: int = MAX_CLUSTERS, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, BayesianGaussianMixture]:
    """Fit a Dirichlet-process Gaussian mixture; returns each row's cluster, its probability and the model.

    The stick-breaking prior with a small concentration leaves unneeded components empty, so
    ``max_clusters`` is an upper bound, not a choice. Clusters are renumbered 0.. by decreasing size.
    """
    rng = np.random.default_rng(seed)
    sample = (
        features[rng.choice(len(features), FIT_SAMPLE, replace=False)]
        if len(features) > FIT_SAMPLE
        else features
    )
    model = BayesianGaussianMixture(
        n_components=min(max_clusters, len(sample)),
        weight_concentration_prior_type="dirichlet_process",
        weight_concentration_prior=0.01,
        covariance_type="full",
        max_iter=500,
        n_init=1,
        random_state=seed,
    ).fit(sample)
    probabilities = model.predict_proba(features)
    raw = probabilities.argmax(1)
    by_size = np.argsort(-np.bincount(raw, minlength=probabilities.shape[1]), kind="stable")
    renumber = np.empty_like(by_size)
    renumber[by_size] = np.arange(len(by_size))
    return renumber[raw], probabilities.max(1), model


def cluster_collection(
    collection: Collection,
    dim: int = DEFAULT_DIM,
    max_clusters: int = MAX_CLUSTERS,
    seed: int = 0,
    show: int = 5,
) -> ClusterReport:
    """Cluster every embedded galaxy, store ``cluster`` and ``cluster_prob`` in the catalog, report them."""
    features = collection_features(collection, dim, seed)
    labels, probability, _ = fit_clusters(features, max_clusters, seed)
    n = len(collection)
    cluster = np.full(n, -1, dtype=np.int64)  # -1: not embedded yet
    prob = np.full(n, np.nan)
    cluster[: len(labels)], prob[: len(labels)] = labels, probability
    with collection.writing():
        collection.set_columns({"cluster": cluster, "cluster_prob": prob})
    ids = collection.catalog["id"].to_numpy()
    sizes = pd.Series(np.bincount(labels), name="galaxies")
    sizes = sizes[sizes > 0]
    typical = {}
    for c in sizes.index:
        members = np.flatnonzero(labels == c)
        distance = np.linalg.norm(features[members] - features[members].mean(0), axis=1)
        typical[int(c)] = ids[members[np.argsort(distance)[:show]]].tolist()
    return ClusterReport(sizes, typical, max_clusters)
