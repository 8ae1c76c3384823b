"""One rating session's active-learning loop over a collection: suggest, rate, undo, rank."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from embedder.cache import cached_array
from embedder.collection import Collection, open_collection
from embedder.errors import CollectionError

from .features import DEFAULT_DIM, FIT_SAMPLE, collection_features
from .learner import JITTER, LINEAR_WEIGHT, N_INDUCING, ActiveLearner, gp_basis, prior_std
from .ratings import MAX_RATING, MIN_RATING, Rating, RatingsError, default_user, ratings_store
from .scores import DEFAULT_METHOD, anomaly_scores, score_column, store_scores


class Discovery:
    """The loop of one session ("mergers", "lenses") of one user over the embedded galaxies of a collection.

    The anomaly scores (``anomaly_METHOD`` in the catalog, computed and stored when missing) give the GP
    its prior; every rating goes to the collection's ratings store at once, and the model is refitted
    from the store, so ratings made by other processes in the same session count too. The GP features of
    the galaxies depend on the embeddings only, so they are computed once and cached in the collection
    (``cache/``): a new loop reads them, refits on the session's ratings and answers.
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
            features = collection_features(self.collection, dim, seed)  # none: raises, saying what to run
            store_scores(self.collection, anomaly_method, anomaly_scores(features, anomaly_method, seed))
            stored = self.collection.catalog_columns([column])
        self.anomaly = stored[column].to_numpy(dtype=np.float64)[:n]
        basis, std = _gp_basis(self.collection, dim, seed)
        self.learner = ActiveLearner.from_basis(basis, self.anomaly, std=std)
        self.refresh()

    @property
    def catalog(self) -> pd.DataFrame:
        """The whole catalog of the collection (the loop itself reads only the rows it shows)."""
        return self.collection.catalog

    def refresh(self) -> pd.DataFrame:
        """Re-read this session's ratings from the store and refit; returns them (latest per galaxy)."""
        latest = self.store.latest(self.session)
        rows = self.collection.find_rows(latest["galaxy"].tolist())
        usable = (rows >= 0) & (rows < len(self.learner))  # galaxies removed or not embedded yet are skipped
        self.learner.fit(rows[usable], latest["rating"].to_numpy()[usable])
        self.ratings = latest
        return latest

    def _table(self, rows: np.ndarray) -> pd.DataFrame:
        mean, std = self.learner.predict(rows)
        table = self.collection.catalog_rows(rows)
        table.insert(1, "row", rows)
        table.insert(2, "interest", mean)
        table.insert(3, "uncertainty", std)
        table.insert(4, "anomaly", self.anomaly[rows])
        return table

    def suggest(self, n: int = 1, skip: list[str] | tuple[str, ...] = ()) -> pd.DataFrame:
        """The ``n`` galaxies to rate next (catalog rows with GP interest, uncertainty and anomaly score)."""
        exclude = self.collection.rows_of(list(skip)) if skip else None
        return self._table(self.learner.suggest(n, exclude))

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
            if row >= len(self.learner):
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

    def ranking(self, top: int = 50) -> pd.DataFrame:
        """The ``top`` most interesting galaxies by GP mean (with uncertainty and any rating given)."""
        ranked = self.learner.ranking(top)
        table = self._table(ranked["row"].to_numpy())
        rated = dict(zip(self.ratings["galaxy"], self.ratings["rating"], strict=True))
        table.insert(5, "rating", table["id"].map(rated).astype(float))
        return table


def _gp_basis(collection: Collection, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The learner's GP features of every embedded galaxy and their prior std, computed once per state of
    the embeddings."""
    params = {
        "dim": dim,
        "seed": seed,
        "fit_sample": FIT_SAMPLE,
        "n_inducing": N_INDUCING,
        "linear_weight": LINEAR_WEIGHT,
        "jitter": JITTER,
    }
    basis = cached_array(
        collection,
        f"gp-basis-d{dim}-s{seed}",
        params,
        lambda: gp_basis(collection_features(collection, dim, seed), seed=seed),
    )
    return basis, cached_array(collection, f"gp-std-d{dim}-s{seed}", params, lambda: prior_std(basis))
