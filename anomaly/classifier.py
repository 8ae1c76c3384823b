"""Ratings or label sets to a classifier in one call, and the labels a classifier doubts.

:func:`train_classifier` turns labels (:func:`labels_from_ratings`, :func:`labels_from_set`, or any
:class:`~galsearch.embedder.training.Labels`) into cross-validated metrics, a head saved in the collection,
predictions for every galaxy and the most probable galaxies not yet labelled. :func:`suspects` ranks the
labels by how much out-of-fold predictions disagree with them (confident learning, with cleanlab).

Caveat: an encoder echoes the labels it was trained with. The default encoder was trained with the GZ1,
GZ2 and rings *train* splits and separates its 214 training rings almost perfectly, so a head on its
embeddings agrees with those labels, right or wrong, and cannot doubt them. To find doubtful labels among
galaxies an encoder learnt from, embed the collection with one that never saw them, e.g.
``galsearch embed COLLECTION --encoder imagenet:efficientnet_lite0 --replace`` (ImageNet weights).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from galsearch.embedder.collection import Collection
from galsearch.embedder.errors import GalsearchError
from galsearch.embedder.training.finetune import (
    DEFAULT_CONFIG,
    FinetuneConfig,
    FinetuneResult,
    finetune,
    predict,
)
from galsearch.embedder.training.labels import Labels, read_labels

from .labels import label_store
from .ratings import RatingsError, ratings_store

POSITIVE, NEGATIVE = "interesting", "not_interesting"  # the classes of labels made from ratings


def labels_from_ratings(collection: Collection, session: str, positive_at: float = 4.0) -> Labels:
    """Binary labels from the ratings of ``session``: a galaxy whose latest rating is ``positive_at`` or
    more is ``interesting`` (the positive class), any other rated galaxy ``not_interesting``.

    Rated galaxies that are not embedded (or no longer in the collection) are left out, as the
    active learner leaves them out.
    """
    latest = ratings_store(collection.path).latest(session)
    rows = collection.find_rows(latest["galaxy"].tolist())
    latest = latest[(rows >= 0) & (rows < collection.counts["embedded"])]
    if latest.empty:
        raise RatingsError(f"session {session!r} has no ratings of embedded galaxies in {collection.path}")
    positive = latest["rating"].to_numpy(dtype=np.float64) >= positive_at
    if not positive.any():
        raise RatingsError(f"no rating of {positive_at:g} or more in session {session!r} yet")
    if positive.all():
        raise RatingsError(
            f"every rating in session {session!r} is {positive_at:g} or more: a classifier also needs "
            "galaxies rated lower"
        )
    table = pd.DataFrame({"id": latest["galaxy"], "label": np.where(positive, POSITIVE, NEGATIVE)})
    return read_labels(table, collection, "binary", positive=POSITIVE)


def labels_from_set(
    collection: Collection, set_name: str, task: str = "classify", positive: str | None = None
) -> Labels:
    """The current labels of the label set ``set_name`` (``classify``, or ``binary`` with two classes,
    the positive one ``positive`` or else the later in sorted order)."""
    current = label_store(collection.path).current(set_name)
    if current.empty:
        raise GalsearchError(f"label set {set_name!r} has no labels in {collection.path}")
    return read_labels(current[["id", "label"]], collection, task, positive=positive)


@dataclass
class ClassifierResult:
    """A classifier trained on labels: cross-validated metrics, saved head, predictions and candidates."""

    finetune: FinetuneResult  # the head, its cross-validated metrics, folder, seconds, --auto trials
    columns: list[str]  # catalog columns of the predictions for every galaxy
    target: str  # the class whose probability ranks the candidates
    probability_column: str  # the catalog column holding every galaxy's probability of ``target``
    candidates: pd.DataFrame  # id, probability (of target) and catalog columns, most probable first

    @property
    def metrics(self) -> dict:
        """Cross-validated metrics with the confusion matrix of the out-of-fold predictions."""
        return self.finetune.metrics


def train_classifier(
    collection: Collection,
    labels: Labels,
    name: str,
    config: FinetuneConfig = DEFAULT_CONFIG,
    *,
    folds: int = 5,
    auto_budget_s: float | None = None,
    candidates: int = 100,
    target: str | None = None,
    progress: bool = False,
) -> ClassifierResult:
    """Cross-validate a head on ``labels``, train it on all of them, save it as COLLECTION/heads/NAME,
    write its predictions for every galaxy to the catalog and list the ``candidates`` galaxies most
    probably of class ``target`` among those not labelled.

    ``target`` defaults to the positive class (binary) or the class with the fewest labels (classify).
    With ``auto_budget_s``, settings are searched as ``galsearch finetune --auto`` does.
    """
    classes = labels.classes
    if labels.task == "regress":
        raise GalsearchError("train_classifier needs class labels (classify or binary), not regress")
    if target is None:
        counts = np.bincount(labels.targets, minlength=len(classes))
        target = classes[-1] if labels.task == "binary" else classes[int(counts.argmin())]
    if target not in classes:
        raise GalsearchError(f"class {target!r} is not one of {classes}")
    if labels.task == "binary" and target != classes[-1]:
        raise GalsearchError(
            f"binary candidates are ranked by the positive class {classes[-1]!r}, not {target!r}: make "
            f"{target!r} the positive class of the labels"
        )
    missing = len(collection) - collection.counts["embedded"]
    if missing:
        raise GalsearchError(
            f"{collection.path} has {missing} galaxies not embedded yet: run galsearch embed first "
            "(the classifier predicts every galaxy)"
        )
    result = finetune(
        collection,
        labels,
        config,
        name=name,
        folds=folds,
        auto_budget_s=auto_budget_s,
        progress=progress,
    )
    columns = predict(collection, result.folder, device=config.device, progress=progress)
    column = f"{name}_prob" if labels.task == "binary" else f"{name}_prob_{target}"
    probability = collection.catalog_columns([column])[column].to_numpy(dtype=np.float64)
    probability[labels.rows] = -np.inf  # labelled galaxies are not candidates
    order = np.argsort(-probability, kind="stable")[: min(candidates, len(probability) - len(labels))]
    table = pd.DataFrame({"probability": probability[order]})
    return ClassifierResult(result, columns, target, column, _with_catalog(table, collection, order))


def suspects(
    collection: Collection,
    labels: Labels,
    n: int = 20,
    config: FinetuneConfig = DEFAULT_CONFIG,
    folds: int = 5,
    progress: bool = False,
) -> pd.DataFrame:
    """The ``n`` labels most in doubt, most doubtful first: ``id``, ``label`` (given), ``predicted``,
    ``probability`` (of the predicted class), ``given_probability``, ``quality`` (cleanlab's label
    quality, the out-of-fold probability of the given class), ``issue`` (cleanlab's confident learning
    flags it) and the catalog columns.

    Every label is scored by a head that did not train on it (:func:`~embedder.training.crossval.
    cross_validate`); all labels are ranked, so ``n`` rows come back whenever there are ``n`` labels.
    Doubts need an encoder that did not learn these labels (see the module's caveat). ``attrs`` holds
    ``issues`` (how many of all the labels cleanlab flags) and ``notes`` (e.g. fewer folds than asked).
    """
    if labels.task == "regress":
        raise GalsearchError("suspects needs class labels (classify or binary), not regress")
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    from galsearch.embedder.training.crossval import cross_validate

    validation = cross_validate(collection, labels, config, folds, progress)
    scores, given = validation.scores.astype(np.float64), labels.targets
    quality = get_label_quality_scores(given, scores, method="self_confidence")
    issue = find_label_issues(given, scores, n_jobs=1)
    order = np.argsort(quality, kind="stable")[:n]
    predicted = scores.argmax(1)
    classes = np.array(labels.classes, dtype=object)
    table = pd.DataFrame(
        {
            "label": classes[given[order]],
            "predicted": classes[predicted[order]],
            "probability": scores[order, predicted[order]],
            "given_probability": scores[order, given[order]],
            "quality": quality[order],
            "issue": issue[order],
        }
    )
    table = _with_catalog(table, collection, labels.rows[order])
    table.attrs["notes"] = [validation.note] if validation.note else []
    table.attrs["issues"] = int(issue.sum())
    return table


def _with_catalog(table: pd.DataFrame, collection: Collection, rows: np.ndarray) -> pd.DataFrame:
    """``table`` after the ``id`` of each of ``rows`` and before their other catalog columns (a catalog
    column of the same name as one of ``table`` is left out)."""
    catalog = collection.catalog_rows(rows)
    others = catalog.drop(columns=["id", *(c for c in table.columns if c in catalog)])
    return pd.concat([catalog[["id"]], table, others], axis=1)
