"""Ratings and label sets to classifiers, cross-validation out of fold, and doubtful labels (suspects)."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import TINY_ENCODER, write_blob_npz

from galsearch.anomaly import label_store, ratings_store
from galsearch.anomaly.classifier import labels_from_ratings, labels_from_set, suspects, train_classifier
from galsearch.embedder import GalsearchError, embed, ingest, open_collection
from galsearch.embedder.training.crossval import cross_validate, fold_splits
from galsearch.embedder.training.finetune import FinetuneConfig
from galsearch.embedder.training.labels import read_labels
from galsearch.ui.cli import main

CPU = FinetuneConfig(device="cpu")
FLIPPED = [3, 10, 21]  # catalog rows whose labels the tests give the other class


@pytest.fixture(scope="module")
def embedded_blobs(tmp_path_factory) -> Path:
    """64 blob galaxies of two classes (compact, extended) embedded with the tiny encoder, built once."""
    folder = tmp_path_factory.mktemp("blobs")
    ingest(write_blob_npz(folder / "blobs.npz", 64), folder / "blobs", progress=False)
    embed(folder / "blobs", TINY_ENCODER, device="cpu", progress=False)
    return folder / "blobs"


@pytest.fixture
def coll(embedded_blobs, tmp_path):
    """A fresh copy of the embedded blob collection (tests write ratings, labels, heads and columns)."""
    return open_collection(shutil.copytree(embedded_blobs, tmp_path / "blobs"))


def shape_table(coll, flipped=()) -> pd.DataFrame:
    """id and true class of every galaxy, with the classes of catalog rows ``flipped`` swapped."""
    table = pd.DataFrame({"id": coll.catalog["id"], "label": coll.catalog["class_name"]})
    swap = {"compact": "extended", "extended": "compact"}
    table.loc[list(flipped), "label"] = table.loc[list(flipped), "label"].map(swap)
    return table


def rate_compacts(coll, session: str, count: int = 30) -> list[str]:
    """Rate the first ``count`` galaxies in ``session``: compact ones 5, extended ones 1; their ids."""
    store = ratings_store(coll.path)
    rated = coll.catalog.iloc[:count]
    for galaxy, shape in zip(rated["id"], rated["class_name"], strict=True):
        store.rate(session, galaxy, 5 if shape == "compact" else 1, user="tester")
    return rated["id"].tolist()


def test_ratings_become_a_classifier_with_predictions_and_unrated_candidates(coll):
    rated = rate_compacts(coll, "round ones")
    ratings_store(coll.path).rate("round ones", rated[0], 0, user="tester")  # the latest rating counts
    labels = labels_from_ratings(coll, "round ones")
    assert labels.task == "binary" and labels.classes == ["not_interesting", "interesting"]
    assert len(labels) == 30 and labels.targets.sum() == 14  # 15 compact, the first re-rated 0
    result = train_classifier(coll, labels, "round", CPU, folds=3, candidates=10)
    metrics = result.metrics
    assert metrics["folds"] == 3 and metrics["n"] == 30 and metrics["balanced_accuracy"] > 0.7  # chance 0.5
    assert np.sum(metrics["confusion_matrix"]) == 30 and 0 < metrics["threshold"] < 1
    assert (result.finetune.folder / "head.safetensors").is_file()
    assert (result.finetune.folder / "confusion.png").is_file()
    catalog = open_collection(coll.path).catalog
    assert result.columns == ["round_prob", "round"] and catalog["round_prob"].notna().all()
    candidates = result.candidates
    assert result.target == "interesting" and len(candidates) == 10
    assert list(candidates.columns[:2]) == ["id", "probability"] and "class_name" in candidates
    assert not set(candidates["id"]) & set(rated)
    assert candidates["probability"].is_monotonic_decreasing
    assert (candidates["class_name"] == "compact").sum() >= 9  # 17 unrated compact blobs to find


def test_ratings_without_both_classes_are_refused_by_name(coll):
    with pytest.raises(GalsearchError, match="session 'nothing' has no ratings"):
        labels_from_ratings(coll, "nothing")
    rate_compacts(coll, "mergers")
    with pytest.raises(GalsearchError, match=r"no rating of 5\.5 or more in session 'mergers' yet"):
        labels_from_ratings(coll, "mergers", positive_at=5.5)
    with pytest.raises(GalsearchError, match="every rating in session 'mergers' is 1 or more"):
        labels_from_ratings(coll, "mergers", positive_at=1)


def test_a_label_set_becomes_a_classifier_of_a_chosen_class(coll):
    store = label_store(coll.path)
    table = shape_table(coll).iloc[:40]
    for shape in ("compact", "extended"):
        store.label("shapes", table.loc[table["label"] == shape, "id"], shape, user="tester")
    labels = labels_from_set(coll, "shapes")
    assert labels.task == "classify" and labels.classes == ["compact", "extended"] and len(labels) == 40
    result = train_classifier(coll, labels, "shapes", CPU, folds=4, candidates=8, target="extended")
    assert result.metrics["folds"] == 4 and result.metrics["balanced_accuracy"] > 0.8
    assert result.probability_column == "shapes_prob_extended" and result.probability_column in result.columns
    assert len(result.candidates) == 8 and not set(result.candidates["id"]) & set(table["id"])
    assert (result.candidates["class_name"] == "extended").sum() >= 7  # 12 unlabelled extended blobs
    with pytest.raises(GalsearchError, match="'ring' is not one of"):
        train_classifier(coll, labels, "rings", CPU, target="ring")
    binary = labels_from_set(coll, "shapes", "binary", positive="compact")
    assert binary.classes == ["extended", "compact"]


def test_out_of_fold_scores_come_from_heads_that_never_saw_the_label(coll):
    labels = read_labels(shape_table(coll, FLIPPED), coll)
    scores = cross_validate(coll, labels, CPU).scores
    assert scores.shape == (64, 2) and np.allclose(scores.sum(1), 1, atol=1e-5)
    given = scores[np.arange(64), labels.targets]
    # a head that had learnt a flipped label would lean to it; heads trained on the other folds do not
    assert (given[FLIPPED] < 0.5).all()
    assert np.median(np.delete(given, FLIPPED)) > 0.8


def test_folds_are_stratified_and_lowered_to_the_smallest_class(coll):
    table = shape_table(coll)
    table = pd.concat([table[table["label"] == "compact"], table[table["label"] == "extended"].iloc[:3]])
    labels = read_labels(table, coll)
    splits, note = fold_splits(labels, 5)
    assert note == "5 folds lowered to 3: class 'extended' has only 3 labels" and len(splits) == 3
    for train, held in splits:
        assert len(np.intersect1d(train, held)) == 0 and (labels.targets[held] == 1).sum() == 1
    validation = cross_validate(coll, labels, CPU, folds=5)
    assert validation.folds == 3 and validation.note == note and validation.metrics["n"] == 35
    with pytest.raises(GalsearchError, match="class 'extended' has 1"):
        fold_splits(read_labels(table.iloc[:-2], coll), 5)


def test_suspects_rank_flipped_labels_first_and_flag_them(coll):
    labels = read_labels(shape_table(coll, FLIPPED), coll)
    table = suspects(coll, labels, n=5, config=CPU)
    assert len(table) == 5
    assert list(table.columns[:8]) == [
        "id",
        "label",
        "predicted",
        "probability",
        "given_probability",
        "quality",
        "issue",
        "source",
    ]
    flipped_ids = set(coll.catalog["id"].iloc[FLIPPED])
    assert set(table["id"].iloc[:3]) == flipped_ids
    top = table.iloc[:3]
    assert top["issue"].all() and (top["label"] != top["predicted"]).all()
    assert (top["label"] != top["class_name"]).all() and table["quality"].is_monotonic_increasing
    assert table.attrs["issues"] >= 3 and table.attrs["notes"] == []
    assert len(suspects(coll, labels, n=500, config=CPU)) == 64  # every label, ranked


def test_finetune_and_suspects_commands(coll, tmp_path, capsys):
    rate_compacts(coll, "round ones")
    path = str(coll.path)
    assert main(["finetune", path, "--from-ratings", "round ones", "--quiet", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "cross-validated metrics on all 30 labels (5 folds" in out
    assert f"galsearch predict {path} --head round_ones" in out
    assert (coll.path / "heads" / "round_ones" / "head.safetensors").is_file()

    flipped = shape_table(coll, FLIPPED)
    for shape in ("compact", "extended"):
        label_store(coll.path).label("shapes", flipped.loc[flipped["label"] == shape, "id"], shape)
    command = ["finetune", path, "--from-labels", "shapes", "--folds", "3", "--name", "s", "--quiet"]
    assert main([*command, "--device", "cpu"]) == 0
    assert "(3 folds" in capsys.readouterr().out

    flipped.to_csv(tmp_path / "shapes.csv", index=False)
    command = ["suspects", path, "--labels", str(tmp_path / "shapes.csv"), "-n", "4", "--format", "csv"]
    assert main([*command, "--quiet", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    listed = pd.read_csv(io.StringIO(captured.out))
    assert len(listed) == 4 and set(listed["id"].iloc[:3]) == set(coll.catalog["id"].iloc[FLIPPED])
    assert {"label", "predicted", "probability", "issue"} <= set(listed.columns)
    assert "most in doubt" in captured.err

    assert main(["suspects", path, "--from-labels", "shapes", "-n", "2", "--quiet", "--device", "cpu"]) == 0
    assert "predicted" in capsys.readouterr().out
    assert main(["finetune", path, "--from-ratings", "none yet", "--quiet"]) == 1
    assert "has no ratings" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["finetune", path, "--labels", "x.csv", "--from-labels", "shapes"])
