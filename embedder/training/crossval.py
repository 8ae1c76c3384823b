"""Cross-validation of heads: every label predicted by a head that did not train on it (out of fold).

The labels are cut into ``folds`` stratified parts (plain parts for regression); each part is scored by a
head trained, as :func:`~embedder.training.finetune.fit_head` trains, on the other parts. A class with
fewer labels than folds lowers the fold count to its size (and says so); fewer than two is an error.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import KFold, StratifiedKFold
from tqdm.auto import tqdm

from ..collection import Collection
from ..errors import GalsearchError
from .finetune import DEFAULT_CONFIG, MIN_LABELS, FinetuneConfig, fit_head, head_scores, metrics
from .labels import Labels


@dataclass
class CrossValidation:
    """Out-of-fold predictions of labels and the metrics they give."""

    scores: np.ndarray  # (n, classes) probabilities, or (n, columns) fractions, in label order
    thresholds: np.ndarray | None  # binary: the decision threshold of the head that scored each label
    folds: int  # folds run (fewer than asked when a class is smaller)
    note: str | None  # why fewer folds ran than were asked for
    metrics: dict  # finetune.metrics of the out-of-fold scores, plus ``folds``


def fold_splits(
    labels: Labels, folds: int, seed: int = 0
) -> tuple[list[tuple[np.ndarray, np.ndarray]], str | None]:
    """(train, held-out) label positions of each fold, and a note when the fold count had to be lowered."""
    if folds < 2:
        raise GalsearchError(f"cross-validation needs at least 2 folds, got {folds}")
    note = None
    if labels.task == "regress":
        if len(labels) < folds:
            raise GalsearchError(f"{len(labels)} labels cannot be cut into {folds} folds")
        splitter = KFold
    else:
        counts = np.bincount(labels.targets, minlength=len(labels.classes))
        smallest = int(counts.argmin())
        members = int(counts[smallest])
        if members < 2:
            raise GalsearchError(
                f"cross-validation needs at least two labels of every class; class "
                f"{labels.classes[smallest]!r} has {members}"
            )
        if members < folds:
            note = (
                f"{folds} folds lowered to {members}: class {labels.classes[smallest]!r} has only "
                f"{members} labels"
            )
            folds = members
        splitter = StratifiedKFold
    parts = splitter(folds, shuffle=True, random_state=seed).split(labels.rows, labels.stratum)
    return list(parts), note


def cross_validate(
    collection: Collection,
    labels: Labels,
    config: FinetuneConfig = DEFAULT_CONFIG,
    folds: int = 5,
    progress: bool = False,
) -> CrossValidation:
    """Score each label with a head trained on the other folds; metrics of those out-of-fold scores.

    Binary labels are decided at the threshold of the head that scored them (each fold head sets its
    own, as :func:`~embedder.training.finetune.fit_head` does), so recall and false-discovery rate are
    those of the whole procedure; ROC AUC is measured on the pooled scores.
    """
    splits, note = fold_splits(labels, folds, config.seed)
    trained_on = min(len(train) for train, _ in splits)
    if trained_on < MIN_LABELS:
        raise GalsearchError(
            f"with {len(splits)} folds a head trains on {trained_on} of the {len(labels)} labels; "
            f"give at least {MIN_LABELS} per fold (more labels or fewer folds)"
        )
    scores, thresholds = None, None
    for train, held in tqdm(splits, desc="cross-validation", unit="fold", disable=not progress):
        head = fit_head(collection, labels.subset(train), config)
        fold_scores = head_scores(head, collection, labels.rows[held])
        if scores is None:
            scores = np.zeros((len(labels), fold_scores.shape[1]), dtype=np.float32)
            thresholds = np.zeros(len(labels)) if labels.task == "binary" else None
        scores[held] = fold_scores
        if thresholds is not None:
            thresholds[held] = head.threshold
    result = {**metrics(scores, labels, thresholds), "folds": len(splits)}
    return CrossValidation(scores, thresholds, len(splits), note, result)
