"""Anomaly scores, the Gaussian-process active learner, clusters and the discovery loop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import TINY_ENCODER
from sklearn.metrics import adjusted_rand_score

from galsearch.anomaly import (
    ActiveLearner,
    Discovery,
    KNNDistance,
    anomaly_scores,
    cluster_collection,
    collection_features,
    fit_clusters,
    ratings_store,
    reduce_embeddings,
    score_collection,
)
from galsearch.anomaly.features import Reduction, fit_rows
from galsearch.anomaly.learner import LINEAR_WEIGHT, average_ranks
from galsearch.embedder import Collection, CollectionError, GalsearchError, embed, open_collection


def blobs(
    sizes: list[int], dim: int = 8, spread: float = 8.0, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian clusters of the given sizes with well-separated centres; returns points and cluster ids."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, spread, (len(sizes), dim))
    labels = np.repeat(np.arange(len(sizes)), sizes)
    return (centres[labels] + rng.normal(0, 1, (len(labels), dim))).astype(np.float32), labels


@pytest.mark.parametrize("method", ["knn", "iforest", "lof"])
def test_scorers_rank_planted_outliers_first(method):
    rng = np.random.default_rng(1)
    inliers = rng.normal(0, 1, (500, 6))
    outliers = rng.normal(0, 1, (5, 6)) + 12 * rng.choice([-1, 1], (5, 6))
    scores = anomaly_scores(np.vstack([inliers, outliers]).astype(np.float32), method)
    assert set(np.argsort(-scores)[:5]) == set(range(500, 505))


def test_knn_distance_scores_new_points_like_scikit_learn_detectors():
    features, _ = blobs([300])
    detector = KNNDistance(n_neighbors=5).fit(features)
    near, far = detector.score_samples(np.vstack([features[:1] + 0.01, features[:1] + 50]))
    assert far < near  # scikit-learn convention: lower score = more abnormal


def test_reduced_features_are_whitened_and_row_aligned():
    embeddings = np.random.default_rng(0).normal(size=(400, 64)).astype(np.float32)
    features = reduce_embeddings(embeddings, dim=8)
    assert features.shape == (400, 8) and features.dtype == np.float32
    assert np.allclose(features.std(0), 1, atol=0.05)


def simulated_hunt(learner: ActiveLearner, truth: np.ndarray, ratings: int) -> list[int]:
    shown: list[int] = []
    while len(shown) < ratings:
        shown.extend(learner.suggest(10).tolist())
        learner.fit(shown, 5.0 * truth[shown])
    return shown


def test_the_learner_finds_a_users_rare_class_and_ranks_it_better_with_ratings():
    # A rare class (2%) that is not anomalous: a small cluster among large ones.
    features, labels = blobs([900, 700, 30], seed=3)
    truth = labels == 2
    learner = ActiveLearner(features, prior=anomaly_scores(features, "knn"))
    before = truth[learner.ranking(30)["row"]].mean()
    shown = simulated_hunt(learner, truth, 60)
    assert len(set(shown)) == 60  # nothing is shown twice
    assert truth[shown].sum() >= 10 * truth.mean() * 60  # ten times random order
    after = truth[learner.ranking(30)["row"]].mean()
    assert after > max(before, 0.8)


def test_fit_predict_ranking_and_suggestions_are_consistent():
    features, _ = blobs([200, 200])
    learner = ActiveLearner(features, n_inducing=64).fit([0, 1, 300], [5.0, 5.0, 0.0])
    mean, std = learner.predict(np.array([0, 300]))
    assert mean[0] > 3.5 and mean[1] < 1.5 and (std > 0).all()
    ranking = learner.ranking(10)
    assert ranking["mean"].is_monotonic_decreasing and (ranking["row"] < 200).all()  # the liked cluster
    assert ranking.loc[ranking["row"].isin([0, 1]), "rated"].all()
    suggested = learner.suggest(5, exclude=[2, 3])
    assert not set(suggested) & {0, 1, 2, 3, 300} and len(set(suggested)) == 5
    with pytest.raises(GalsearchError, match="one per rated row"):
        learner.fit([0, 999], [1.0, 2.0])


def test_predicted_ratings_stay_on_the_rating_scale():
    features, _ = blobs([200, 200])
    learner = ActiveLearner(features, prior=anomaly_scores(features, "knn"), n_inducing=64)
    for rows, ratings in (([], []), ([0], [5.0]), ([0, 300], [5.0, 0.0])):
        mean, _ = learner.fit(rows, ratings).predict()
        assert mean.min() >= 0 and mean.max() <= 5


def test_a_batch_skips_near_duplicates():
    features, _ = blobs([100, 100])
    features = np.vstack([features, features])  # every galaxy twice
    learner = ActiveLearner(features, prior=np.r_[np.arange(200), np.arange(200)])
    batch = learner.suggest(10)
    assert len({row % 200 for row in batch}) == 10


def test_clusters_recover_separated_groups_and_choose_their_number():
    features, labels = blobs([300, 200, 100], dim=5, spread=10)
    found, probability, _ = fit_clusters(features, max_clusters=10)
    assert adjusted_rand_score(labels, found) > 0.95
    assert len(np.unique(found)) == 3 and (probability > 0.5).all()
    assert np.bincount(found).tolist() == [300, 200, 100]  # numbered by size


@pytest.fixture
def embedded_blobs(blob_collection):
    embed(blob_collection, TINY_ENCODER, progress=False)
    return open_collection(blob_collection.path)


def test_scores_and_clusters_are_stored_in_the_catalog(embedded_blobs):
    scores = score_collection(embedded_blobs, "iforest")
    report = cluster_collection(embedded_blobs, max_clusters=6)
    catalog = open_collection(embedded_blobs.path).catalog
    assert np.allclose(catalog["anomaly_iforest"], scores)
    assert catalog["cluster"].between(0, 5).all() and report.sizes.sum() == len(catalog)
    assert "clusters among 64 galaxies" in report.summary()


def test_discovery_rates_undoes_ranks_and_sees_other_processes(embedded_blobs):
    hunt = Discovery(embedded_blobs, "extended", user="ann")
    assert "anomaly_knn" in open_collection(embedded_blobs.path).catalog  # the prior was stored
    catalog = hunt.catalog
    extended = catalog.loc[catalog["label"] == 1, "id"].tolist()
    compact = catalog.loc[catalog["label"] == 0, "id"].tolist()
    for galaxy in extended[:3]:
        hunt.rate(galaxy, 5)
    for galaxy in compact[:3]:
        hunt.rate(galaxy, 0)
    ranking = hunt.ranking(20)
    assert set(ranking["id"]) <= set(extended)  # the model learned what this user likes
    assert hunt.suggest(3)["id"].isin(extended[3:]).all()
    assert hunt.undo().galaxy == compact[2]
    ratings_store(embedded_blobs.path).rate("extended", compact[5], 1, user="bob")  # elsewhere
    assert compact[5] in set(hunt.refresh()["galaxy"])
    with pytest.raises(CollectionError, match="not in collection"):
        hunt.rate("no-such-galaxy", 3)


def test_discovery_needs_embeddings(blob_collection):
    with pytest.raises(CollectionError, match="galsearch embed"):
        Discovery(blob_collection, "s")


def test_average_ranks_are_scipys_rankdata():
    from scipy.stats import rankdata

    values = np.random.default_rng(0).integers(0, 20, 500).astype(float)  # many ties
    assert np.array_equal(average_ranks(values), rankdata(values))


def cache_files(collection) -> list[str]:
    """The files in the collection's cache/ folder, but for the catalog's id index."""
    return sorted(p.name for p in (collection.path / "cache").glob("*") if not p.name.startswith("ids-"))


def test_the_cached_gp_features_give_todays_ranking_cold_and_warm(embedded_blobs):
    features = reduce_embeddings(embedded_blobs.embeddings)
    today = ActiveLearner(features, anomaly_scores(features))  # as the loop was built before the cache
    cold = Discovery(embedded_blobs, "s", user="ann")
    cached = cache_files(embedded_blobs)
    assert [name.rsplit("-", 1)[0] + Path(name).suffix for name in cached] == [
        "features-d16-s0.f32",
        "features-d16-s0.npz",
        "gp-basis-d16-s0.npy",
        "gp-std-d16-s0.npy",
    ]
    warm = Discovery(open_collection(embedded_blobs.path), "s", user="ann")
    assert cache_files(embedded_blobs) == cached
    assert np.array_equal(warm.learner.basis_, cold.learner.basis_)
    assert np.array_equal(warm.learner.prior_std_, today.prior_std_)
    assert np.allclose(cold.learner.basis_, today.basis_, atol=1e-6)
    rated = cold.catalog["id"].iloc[[3, 8, 20]].tolist()
    cold.rate_many(zip(rated, [5, 0, 4], strict=True))
    warm.refresh()  # sees the ratings stored by the other loop
    today.fit(cold.collection.rows_of(rated), [5, 0, 4])
    for hunt in (cold, warm):
        assert hunt.ranking(30)["id"].tolist() == cold.catalog["id"].iloc[today.ranking(30)["row"]].tolist()
        assert hunt.suggest(5)["id"].tolist() == cold.catalog["id"].iloc[today.suggest(5)].tolist()


def test_a_new_embedding_replaces_the_cached_features(embedded_blobs):
    Discovery(embedded_blobs, "s")
    before = set(cache_files(embedded_blobs))
    embed(embedded_blobs, "random:test_vit", replace=True, progress=False)  # another encoder
    hunt = Discovery(open_collection(embedded_blobs.path), "s")
    after = set(cache_files(embedded_blobs))
    assert len(after) == 4 and not before & after  # recomputed, and the stale files removed
    linear_part = LINEAR_WEIGHT * reduce_embeddings(hunt.collection.embeddings) / np.sqrt(16)
    assert np.allclose(hunt.learner.basis_[:, :16], linear_part)


def test_an_unwritable_collection_computes_without_caching(embedded_blobs, monkeypatch):
    import galsearch.anomaly.features
    import galsearch.embedder.cache

    def refuse(*args):
        raise PermissionError("read-only")

    for module, writer in (
        (galsearch.embedder.cache, "atomic_write"),
        (galsearch.anomaly.features, "append_records"),
    ):
        monkeypatch.setattr(module, writer, refuse)
    hunt = Discovery(embedded_blobs, "s")
    assert not cache_files(embedded_blobs)
    assert len(hunt.suggest(2)) == 2


def test_rating_several_refuses_all_before_storing_any(embedded_blobs):
    hunt = Discovery(embedded_blobs, "s", user="ann")
    ids = hunt.catalog["id"].tolist()
    with pytest.raises(CollectionError, match="no-such"):
        hunt.rate_many([(ids[0], 5), ("no-such", 3)])
    with pytest.raises(GalsearchError, match="from 0 to 5"):
        hunt.rate_many([(ids[0], 5), (ids[1], 7)])
    assert hunt.store.latest("s").empty
    hunt.rate_many([(ids[0], 5), (ids[1], 2)])
    assert dict(zip(hunt.ratings["galaxy"], hunt.ratings["rating"], strict=True)) == {ids[0]: 5, ids[1]: 2}


def test_suggestions_equal_those_from_scoring_every_candidate(monkeypatch):
    import galsearch.anomaly.learner

    sorts = []
    best_first = galsearch.anomaly.learner._best_first
    monkeypatch.setattr(galsearch.anomaly.learner, "FIRST_CHUNK", 8)  # small chunks, then the full order
    monkeypatch.setattr(galsearch.anomaly.learner, "CHUNK", 64)
    monkeypatch.setattr(
        galsearch.anomaly.learner,
        "_best_first",
        lambda b, head=None: sorts.append(head) or best_first(b, head),
    )
    features, _ = blobs([300, 200, 8])
    features = np.vstack([features, features[:30]])  # duplicates: tied bounds and scores
    learner = ActiveLearner(features, anomaly_scores(features), n_inducing=64)
    rng = np.random.default_rng(1)
    learner.fit(rng.choice(len(features), 200, replace=False), rng.integers(0, 6, 200))  # loose bounds
    for n, exclude in ((1, None), (10, [0, 1, 2]), (40, None)):
        blocked = np.zeros(len(learner), dtype=bool)
        blocked[learner.rated_] = True
        blocked[exclude or []] = True
        bound = np.where(blocked, -np.inf, learner.mean_ + learner.kappa * learner.prior_std_)
        order = np.argsort(-bound, kind="stable")[: (~blocked).sum()]
        scores = learner.mean_[order] + learner.kappa * learner._std(order)
        pool = order[np.argsort(-scores, kind="stable")[: max(4 * n, 64)]]
        assert learner.suggest(n, exclude).tolist() == learner._diverse(pool, n).tolist()
    assert None in sorts  # some suggestion went past the first candidates and sorted them all


def test_ratings_outside_the_candidates_count_as_the_candidates_own():
    features, _ = blobs([200, 100, 8])
    learner = ActiveLearner(features, anomaly_scores(features), n_inducing=64)
    rows, ratings = np.array([3, 250, 301, 120]), np.array([5.0, 1.0, 4.0, 0.0])
    inside = learner.fit(rows, ratings).mean_.copy()
    scores = anomaly_scores(features)
    outside = (learner.basis_[rows[2:]], scores[rows[2:]], ratings[2:])
    assert np.allclose(learner.fit(rows[:2], ratings[:2], outside=outside).mean_, inside, atol=1e-5)
    assert learner.rated_.tolist() == [3, 250]  # only candidates are marked rated


def test_a_loop_over_a_large_collection_chooses_among_candidates(embedded_blobs, monkeypatch):
    import galsearch.anomaly.discover

    monkeypatch.setattr(galsearch.anomaly.discover, "MAX_CANDIDATES", 40)
    monkeypatch.setattr(galsearch.anomaly.discover, "TOP_ANOMALIES", 10)
    hunt = Discovery(embedded_blobs, "s", user="ann")
    top = np.argsort(-hunt.anomaly, kind="stable")[:10]
    assert len(hunt.learner) == 40 and np.isin(top, hunt.candidates).all()
    assert np.isin(hunt.suggest(5)["row"], hunt.candidates).all()
    assert np.isin(hunt.ranking(40)["row"], hunt.candidates).all()
    outside = np.setdiff1d(np.arange(64), hunt.candidates)[:2]
    ids = hunt.catalog["id"].iloc[outside].tolist()
    before = hunt.learner.mean_.copy()
    hunt.rate_many([(ids[0], 5), (ids[1], 5)])
    assert len(hunt.ratings) == 2 and not np.allclose(hunt.learner.mean_, before)  # they count
    assert not len(hunt.learner.rated_)


def vectors_collection(path: Path, n: int, width: int = 24) -> Collection:
    """A collection of ``n`` 1-pixel galaxies with random embeddings (no encoder run)."""
    coll = Collection.create(path, (1, 1, 1), {})
    with coll.writing():
        coll.start_embeddings({"architecture": "random-vectors", "dim": width}, width)
    add_vectors(coll, n)
    return coll


def add_vectors(coll: Collection, n: int) -> None:
    start = len(coll)
    rows = pd.DataFrame({"id": [f"g{start + i}" for i in range(n)], "source": "test"})
    vectors = np.random.default_rng(start).normal(0, 1, (n, coll.embedding_dim)) + np.arange(
        coll.embedding_dim
    )
    with coll.writing():
        coll.append_galaxies(np.zeros((n, 1, 1, 1), np.uint8), rows)
        coll.append_embeddings(vectors)


def test_cached_features_are_extended_as_galaxies_are_embedded(tmp_path):
    coll = vectors_collection(tmp_path / "c", 300)
    assert np.array_equal(collection_features(coll), reduce_embeddings(coll.embeddings))
    add_vectors(coll, 100)  # while under FIT_SAMPLE galaxies, the reduction is fitted on all again
    assert np.array_equal(collection_features(coll), reduce_embeddings(coll.embeddings))
    assert len(cache_files(coll)) == 2


def test_past_the_fit_sample_appended_galaxies_are_reduced_as_the_earlier_were(tmp_path, monkeypatch):
    import galsearch.anomaly.features

    monkeypatch.setattr(galsearch.anomaly.features, "FIT_SAMPLE", 100)
    coll = vectors_collection(tmp_path / "c", 300)
    first = np.array(collection_features(coll))
    stamp = next((coll.path / "cache").glob("*.npz")).stat().st_mtime_ns
    assert np.array_equal(collection_features(open_collection(coll.path)), first)  # reused
    assert next((coll.path / "cache").glob("*.npz")).stat().st_mtime_ns == stamp
    add_vectors(coll, 200)  # 500 galaxies: reduced with the reduction fitted at 300
    extended = collection_features(coll)
    assert np.array_equal(extended[:300], first)
    fitted = Reduction.fit(coll.embeddings[fit_rows(300)], 300)
    assert np.allclose(extended[300:], fitted(coll.embeddings[300:]), atol=1e-6)
    add_vectors(coll, 200)  # 700 > REFIT_GROWTH x 300: fitted again, every row recomputed
    assert np.array_equal(collection_features(coll), reduce_embeddings(coll.embeddings))
    assert len(cache_files(coll)) == 2
