"""One rating session's active-learning loop over a collection: suggest, rate, undo, rank."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from galsearch.embedder.cache import cached_array
from galsearch.embedder.collection import Collection, open_collection
from galsearch.embedder.errors import CollectionError

from .features import DEFAULT_DIM, FIT_SAMPLE, collection_features
from .learner import JITTER, LINEAR_WEIGHT, N_INDUCING, ActiveLearner, NystromBasis, gp_basis, prior_std
from .ratings import MAX_RATING, MIN_RATING, Rating, RatingsError, default_user, ratings_store
from .scores import DEFAULT_METHOD, score_collection, score_column

DEFAULT_SESSION = "interesting"  # the session a new user rates in
MAX_CANDIDATES = 1_000_000  # galaxies a loop ranks and suggests from; larger collections are sampled
TOP_ANOMALIES = 100_000  # of which the most anomalous are always candidates


def own_session(user: str) -> str:
    """The session a logged-in ``user`` rates in unless they choose another (a shared one, say)."""
    return f"{DEFAULT_SESSION} ({user})"


class Discovery:
    """The loop of one session ("mergers", "lenses") of one user over the embedded galaxies of a collection.

    The anomaly scores (``anomaly_METHOD`` in the catalog, computed and stored by
    :func:`~galsearch.anomaly.scores.score_collection` when missing: k-NN scores of a collection of over
    100,000 galaxies through its index, as ``galsearch anomalies`` stores them) give the GP its prior;
    every rating goes to the collection's ratings store at once, and the model is refitted from the store,
    so ratings made by other processes in the same session count too. The GP features of the galaxies
    depend on the embeddings only, so they are computed once and cached in the collection (``cache/``):
    a new loop reads them, refits on the session's ratings and answers.

    A collection of more than :data:`MAX_CANDIDATES` galaxies is searched through that many candidates
    (see :func:`candidate_rows`), which keeps the GP features and a refit the size they are at a million
    galaxies; a rated galaxy that is not a candidate still counts in the fit.
    """

    def __init__(
        self,
        collection: Collection | str | Path,
        session: str,
        *,
        user: str | None = None,
        anomaly_method: str = DEFAULT_METHOD,
        dim: int = DEFAULT_DIM,
        seed: int = 0,
    ):
        self.collection = collection if isinstance(collection, Collection) else open_collection(collection)
        self.session, self.user = session, user or default_user()
        self.store = ratings_store(self.collection.path)
        self.store.ensure_session(session)
        n = self.collection.counts["embedded"]
        column = score_column(anomaly_method)
        stored = self.collection.catalog_columns([column]) if column in self.collection.columns else None
        if n == 0 or stored is None or stored[column].iloc[:n].isna().any():
            # none: raises, saying what to run; k-NN scores of a large collection come through its index
            stored = score_collection(self.collection, anomaly_method, dim, seed).to_frame()
        self.anomaly = stored[column].to_numpy(dtype=np.float64)[:n]
        self.features, self.seed = collection_features(self.collection, dim, seed), seed
        self.candidates = candidate_rows(self.anomaly, MAX_CANDIDATES, seed)
        basis, std = _gp_basis(self.collection, self._candidate_features(), self.candidates, dim, seed)
        self.learner = ActiveLearner.from_basis(basis, self.anomaly[self.candidates], std=std)
        self.refresh()

    @property
    def catalog(self) -> pd.DataFrame:
        """The whole catalog of the collection (the loop itself reads only the rows it shows)."""
        return self.collection.catalog

    def _candidate_features(self) -> np.ndarray:
        if len(self.candidates) == len(self.features):
            return self.features
        return self.features[self.candidates]

    @cached_property
    def nystrom(self) -> NystromBasis:
        """The map from features to GP features that made the candidates' (drawn again: it is seeded)."""
        return NystromBasis.draw(self._candidate_features(), seed=self.seed)

    def _candidate_of(self, rows: np.ndarray) -> np.ndarray:
        """The learner's row of each catalog row, -1 for galaxies that are not candidates."""
        at = np.minimum(np.searchsorted(self.candidates, rows), len(self.candidates) - 1)
        return np.where(self.candidates[at] == rows, at, -1)

    def refresh(self) -> pd.DataFrame:
        """Re-read this session's ratings from the store and refit; returns them (latest per galaxy)."""
        latest = self.store.latest(self.session)
        rows = self.collection.find_rows(latest["galaxy"].tolist())
        ratings = latest["rating"].to_numpy(dtype=np.float64)
        usable = (rows >= 0) & (rows < len(self.anomaly))  # galaxies removed or not embedded yet are skipped
        rows, ratings = rows[usable], ratings[usable]
        at = self._candidate_of(rows)
        outside = rows[at < 0]
        others = None
        if len(outside):  # rated galaxies that are not candidates (in collections of over a million)
            others = (self.nystrom(self.features[outside]), self.anomaly[outside], ratings[at < 0])
        self.learner.fit(at[at >= 0], ratings[at >= 0], outside=others)
        self.ratings = latest
        return latest

    def _table(self, learner_rows: np.ndarray, columns: list[str] | None) -> pd.DataFrame:
        mean, std = self.learner.predict(learner_rows)
        rows = self.candidates[learner_rows]
        if columns is None:
            table = self.collection.catalog_rows(rows)
        elif extra := [c for c in columns if c != "id"]:
            table = self.collection.catalog_rows(rows, ["id", *extra])
        else:  # ids only: from the id index, without reading the catalog
            table = pd.DataFrame({"id": self.collection.ids_at(rows)})
        table.insert(1, "row", rows)
        table.insert(2, "interest", mean)
        table.insert(3, "uncertainty", std)
        table.insert(4, "anomaly", self.anomaly[rows])
        return table

    def suggest(
        self, n: int = 1, skip: list[str] | tuple[str, ...] = (), columns: list[str] | None = None
    ) -> pd.DataFrame:
        """The ``n`` galaxies to rate next: their ids and catalog ``columns`` (default: all) with GP interest,
        uncertainty and anomaly score."""
        exclude = None
        if skip:
            at = self._candidate_of(self.collection.rows_of(list(skip)))
            exclude = at[at >= 0]
        return self._table(self.learner.suggest(n, exclude), columns)

    def rate(self, galaxy: str, rating: float) -> Rating:
        """Store ``rating`` (0-5) of ``galaxy`` in this session and refit."""
        return self.rate_many([(galaxy, rating)])[0]

    def rate_many(self, ratings: Iterable[tuple[str, float]]) -> list[Rating]:
        """Store several (galaxy, rating 0-5) in this session, in order, then refit once.

        Unknown or unembedded galaxies and ratings outside 0-5 are refused before any is stored.
        """
        ratings = [(str(galaxy), float(rating)) for galaxy, rating in ratings]
        rows = self.collection.rows_of([galaxy for galaxy, _ in ratings])
        for (galaxy, rating), row in zip(ratings, rows, strict=True):
            if row >= len(self.anomaly):
                raise CollectionError(
                    f"{galaxy} has no embedding yet: run `galsearch embed {self.collection.path}`"
                )
            if not MIN_RATING <= rating <= MAX_RATING:
                raise RatingsError(f"a rating is a number from 0 to 5, got {rating:g} for {galaxy}")
        stored = [self.store.rate(self.session, galaxy, rating, self.user) for galaxy, rating in ratings]
        self.refresh()
        return stored

    def undo(self) -> Rating | None:
        """Remove this user's latest rating in the session and refit; returns it (None if there was none)."""
        undone = self.store.undo(self.session, self.user)
        self.refresh()
        return undone

    def ranking(self, top: int = 50, columns: list[str] | None = None) -> pd.DataFrame:
        """The ``top`` most interesting galaxies by GP mean (with uncertainty and any rating given), with
        their ids and catalog ``columns`` (default: all)."""
        ranked = self.learner.ranking(top)
        table = self._table(ranked["row"].to_numpy(), columns)
        rated = dict(zip(self.ratings["galaxy"], self.ratings["rating"], strict=True))
        table.insert(5, "rating", table["id"].map(rated).astype(float))
        return table


def candidate_rows(anomaly: np.ndarray, limit: int, seed: int = 0) -> np.ndarray:
    """The sorted catalog rows a loop chooses among: every embedded galaxy while there are at most
    ``limit``; else the :data:`TOP_ANOMALIES` most anomalous and a sample (drawn with ``seed``) of the
    others, ``limit`` in all."""
    n = len(anomaly)
    if n <= limit:
        return np.arange(n)
    top = min(TOP_ANOMALIES, limit)
    anomalous = np.argpartition(-anomaly, top - 1)[:top]
    others = np.setdiff1d(np.arange(n), anomalous, assume_unique=True)
    sample = np.random.default_rng(seed).choice(others, limit - top, replace=False)
    return np.sort(np.concatenate([anomalous, sample]))


def _gp_basis(
    collection: Collection, features: np.ndarray, candidates: np.ndarray, dim: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """The learner's GP features of the candidates (``features`` are theirs) and their prior std,
    computed once per state of the embeddings and set of candidates."""
    params = {
        "dim": dim,
        "seed": seed,
        "fit_sample": FIT_SAMPLE,
        "n_inducing": N_INDUCING,
        "linear_weight": LINEAR_WEIGHT,
        "jitter": JITTER,
        "candidates": hashlib.sha256(np.ascontiguousarray(candidates, dtype=np.int64)).hexdigest()[:16],
    }
    basis = cached_array(
        collection, f"gp-basis-d{dim}-s{seed}", params, lambda: gp_basis(features, seed=seed)
    )
    std = cached_array(collection, f"gp-std-d{dim}-s{seed}", params, lambda: prior_std(basis))
    return basis, std
