"""Exact cosine nearest neighbours over collection embeddings."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TINY_ENCODER

from embedder import CollectionError, embed, open_collection
from index import nearest, similar


def test_nearest_matches_brute_force():
    rng = np.random.default_rng(0)
    vectors, queries = rng.normal(size=(500, 16)), rng.normal(size=(7, 16))
    scores, rows = nearest(vectors, queries, 5)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    cosine = queries / np.linalg.norm(queries, axis=1, keepdims=True) @ unit.T
    np.testing.assert_array_equal(rows, np.argsort(-cosine, axis=1)[:, :5])
    np.testing.assert_allclose(scores, np.sort(cosine, axis=1)[:, ::-1][:, :5], rtol=1e-5)


def test_similar_finds_the_same_class_and_excludes_the_query(blob_collection):
    with pytest.raises(CollectionError, match="galsearch embed"):
        similar(blob_collection, "blob-0-0000")
    embed(blob_collection, TINY_ENCODER, device="cpu", progress=False)
    coll = open_collection(blob_collection.path)
    same_class = []
    for query in coll.catalog["id"][:10]:
        found = similar(coll, query, k=5)
        assert query not in set(found["id"]) and list(found["rank"]) == [1, 2, 3, 4, 5]
        assert np.all(np.diff(found["similarity"]) <= 1e-6)
        same_class.append((found["label"] == coll.catalog.set_index("id").loc[query, "label"]).mean())
    assert np.mean(same_class) > 0.8  # two balanced classes: chance is 0.5


def test_similar_to_several_and_unknown_ids(blob_collection):
    embed(blob_collection, TINY_ENCODER, device="cpu", progress=False)
    coll = open_collection(blob_collection.path)
    found = similar(coll, ["blob-0-0000", "blob-0-0002"], k=3)
    assert len(found) == 3 and not {"blob-0-0000", "blob-0-0002"} & set(found["id"])
    with pytest.raises(CollectionError, match="not in collection"):
        similar(coll, "no-such-galaxy")
