"""After a hunt, does a classifier trained on its ratings find the rare galaxies it has not shown yet?

    python benchmarks/ratings_classifier.py [--work DIR] [--pools test,...] [--seeds N] [--hunt-seeds N]
        [--checkpoints 50,100] [--auto-budget S] [--background 200,500,1000] [--label-spreading]

The merger hunt of benchmarks/discovery.py: a simulated user rates what the active learner
(:class:`anomaly.Discovery`, seeded with each hunt seed) shows, in batches of 10, mergers 5 and everything
else 0. After each checkpoint's number of ratings every method ranks the galaxies not rated yet, and the
table counts the mergers among its top 100, out of the mergers the hunt has not found, against random
order (100 times the share of mergers among the unrated). Pools (``--pools``, each a collection of its own
under ``--work``):

- ``test``: the GZ1 *test* split (benchmarks/splits.py) with the default encoder, which never saw these
  galaxies' labels: the stated protocol;
- ``validation``: the GZ1 *train* split with ImageNet weights (``imagenet:efficientnet_lite0``): the
  default encoder learnt these labels, the ImageNet encoder did not; settings are chosen here, not on
  the test split;
- ``test-imagenet``: the GZ1 test split with ImageNet weights (the hunt finds fewer, so more remain).

Methods: ``train_classifier`` on ``labels_from_ratings`` (positive: rated 4 or more) with its defaults
(a linear head on the frozen embeddings, early stopping on a fifth of the labels, 5-fold cross-validated
metrics), the same with ``early_stopping=False`` (all labels, ``FIXED_EPOCHS`` epochs), seeds 0..N-1 of
the folds and heads; with ``--auto-budget``, its ``--auto`` settings search; scikit-learn's
``LogisticRegression`` (its defaults, ``max_iter`` raised to converge) on the same ratings' embeddings;
the active learner's own ranking (the GP's expected rating).

Positive-unlabelled variants (``--background SIZES``): the ratings' labels plus SIZE galaxies not rated,
drawn at random (seeded by the hunt seed; a smaller background is part of a larger one) as presumed
negatives, for both ``train_classifier`` settings and for ``LogisticRegression``. The background galaxies
stay candidates, since the user has not seen them: every galaxy not rated is ranked by the probability the
head (or regression) gives it, including the background it was trained to call negative, so a merger in
the background counts when it still reaches the top 100. With ``--label-spreading``: scikit-learn's
``LabelSpreading`` (kNN kernel, its 7 neighbours, ``max_iter`` raised to converge) over every galaxy's
embedding, the ratings as labels.
"""

from __future__ import annotations

import argparse
import os
import platform
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.semi_supervised import LabelSpreading
from splits import mean_range, split

from galsearch.anomaly import Discovery, ratings_store
from galsearch.anomaly.classifier import NEGATIVE, POSITIVE, labels_from_ratings, train_classifier
from galsearch.embedder import DEFAULT_ENCODER, embed, ingest, open_collection
from galsearch.embedder.training.finetune import FIXED_EPOCHS, FinetuneConfig
from galsearch.embedder.training.labels import Labels, read_labels

TARGET = "merger"
SESSION = "benchmark: simulated merger hunt"
USER = "simulated"
BATCH = 10
TOP = 100
IMAGENET = "imagenet:efficientnet_lite0"
HEADS = {  # method: early stopping
    "train_classifier (defaults: linear head, frozen, early stopping on a fifth of the labels)": True,
    f"train_classifier, early_stopping=False ({FIXED_EPOCHS} epochs on all labels)": False,
}
POOLS = {  # name: (collection folder, encoder, description)
    "test": ("gz1_test_hunt", DEFAULT_ENCODER, "GZ1 test split, default encoder (the stated protocol)"),
    "validation": ("gz1_train_lite0", IMAGENET, f"GZ1 train split (validation), {IMAGENET}"),
    "test-imagenet": ("gz1_test_lite0", IMAGENET, f"GZ1 test split, {IMAGENET}"),
}


def collection(work: Path, pool: str):
    """The pool's galaxies as a collection of their own (ratings, heads and predictions go into it)."""
    folder, encoder, _ = POOLS[pool]
    path = work / folder
    if not (path / "manifest.json").exists():
        ingest(split("gz1", work)[0 if pool == "validation" else 1], path, progress=False)
    embed(path, encoder, progress=False)
    return open_collection(path)


def found_in(ids, unrated_truth: dict[str, bool]) -> int:
    """Targets among ``ids`` (the first TOP of a ranking of unrated galaxies)."""
    return int(sum(unrated_truth[i] for i in list(ids)[:TOP]))


def ranked(ids: np.ndarray, score: np.ndarray, unrated: np.ndarray) -> np.ndarray:
    """The ids of the galaxies not rated, highest ``score`` first."""
    return ids[unrated][np.argsort(-score[unrated], kind="stable")]


def with_background(coll, labels: Labels, size: int, seed: int) -> Labels:
    """``labels`` and ``size`` galaxies not labelled, drawn at random (``seed``), as ``not_interesting``."""
    ids = coll.catalog["id"].to_numpy()
    order = np.random.default_rng(seed).permutation(len(ids))
    drawn = order[~np.isin(order, labels.rows)][:size]
    given = np.asarray(labels.classes, dtype=object)[labels.targets]
    table = pd.DataFrame(
        {
            "id": np.concatenate([ids[labels.rows], ids[drawn]]),
            "label": np.concatenate([given, np.full(len(drawn), NEGATIVE, dtype=object)]),
        }
    )
    return read_labels(table, coll, "binary", positive=POSITIVE)


@dataclass
class Checkpoint:
    """Where a hunt stands after some ratings, and the targets in each method's top 100 unrated."""

    hunt_seed: int
    ratings: int
    found: int  # targets rated so far
    remaining: int  # targets not rated yet
    unrated: int  # galaxies not rated yet
    methods: dict[str, str]  # method: targets in its top 100 unrated (mean and range over seeds)


@dataclass
class Options:
    """Which methods run, beyond the defaults."""

    seeds: int  # head seeds 0..N-1
    auto_budget: float  # --auto seconds (0: skip)
    backgrounds: list[int]  # sizes of the background of presumed negatives (empty: skip)
    spreading: bool  # LabelSpreading over every embedding


def head_rows(coll, labels: Labels, name: str, options: Options, unrated, unrated_truth) -> dict[str, str]:
    """Targets in the top 100 unrated of each ``train_classifier`` setting on ``labels``, over head seeds;
    every galaxy not rated is ranked, labelled (the background) or not."""
    ids = coll.catalog["id"].to_numpy()
    rows = {}
    for method, early_stopping in HEADS.items():
        counts = []
        for seed in range(options.seeds):
            config = FinetuneConfig(seed=seed, early_stopping=early_stopping)
            result = train_classifier(coll, labels, name, config, candidates=TOP)
            column = result.probability_column
            probability = coll.catalog_columns([column])[column].to_numpy(dtype=np.float64)
            counts.append(found_in(ranked(ids, probability, unrated), unrated_truth))
        rows[method] = mean_range(counts)
    return rows


def logistic_row(embeddings: np.ndarray, labels: Labels, ids, unrated, unrated_truth) -> str:
    """Targets in the top 100 unrated of ``LogisticRegression`` on ``labels``."""
    logistic = LogisticRegression(max_iter=5000).fit(embeddings[labels.rows], labels.targets)
    return str(found_in(ranked(ids, logistic.decision_function(embeddings), unrated), unrated_truth))


def evaluate(coll, hunt: Discovery, hunt_seed: int, truth: np.ndarray, options: Options) -> Checkpoint:
    """Targets in the top 100 unrated galaxies of each method, after the ratings made so far."""
    ids = coll.catalog["id"].to_numpy()
    unrated = ~np.isin(ids, hunt.ratings["galaxy"].to_numpy())
    unrated_truth = dict(zip(ids[unrated], truth[unrated], strict=True))
    ranking = hunt.ranking(len(ids))
    methods = {
        "active learner's own ranking (GP)": str(
            found_in(ranking.loc[ranking["rating"].isna(), "id"], unrated_truth)
        )
    }
    remaining = int(sum(unrated_truth.values()))
    found = int(truth.sum()) - remaining
    point = Checkpoint(hunt_seed, len(hunt.ratings), found, remaining, int(unrated.sum()), methods)
    if found < 2:  # cross-validation needs two labels of each class
        methods["the classifiers"] = f"none: {found} {TARGET}s rated, cross-validation needs 2"
        return point
    labels = labels_from_ratings(coll, SESSION)
    name = f"hunt_{len(hunt.ratings)}"
    methods.update(head_rows(coll, labels, name, options, unrated, unrated_truth))
    embeddings = np.asarray(coll.embeddings)
    methods["scikit-learn LogisticRegression (defaults)"] = logistic_row(
        embeddings, labels, ids, unrated, unrated_truth
    )
    for size in options.backgrounds:
        background = with_background(coll, labels, size, hunt_seed)
        rows = head_rows(coll, background, f"{name}_bg{size}", options, unrated, unrated_truth)
        methods.update({f"{method}, + {size} background": cell for method, cell in rows.items()})
        methods[f"scikit-learn LogisticRegression (defaults), + {size} background"] = logistic_row(
            embeddings, background, ids, unrated, unrated_truth
        )
    if options.spreading:
        given = np.full(len(ids), -1)
        given[labels.rows] = labels.targets
        spread = LabelSpreading(kernel="knn", max_iter=1000).fit(embeddings, given)
        score = spread.label_distributions_[:, 1]  # 0 where no label reaches
        methods["scikit-learn LabelSpreading (kNN kernel, 7 neighbours)"] = str(
            found_in(ranked(ids, score, unrated), unrated_truth)
        )
    if options.auto_budget:
        budget = options.auto_budget
        result = train_classifier(coll, labels, f"{name}_auto", auto_budget_s=budget, candidates=TOP)
        config = result.finetune.head.training["config"]
        chosen = f"{config['head']}, unfreeze {config['unfreeze']}, lr {config['lr']:g}"
        methods[f"train_classifier --auto ({budget:g} s) -> {chosen}"] = str(
            found_in(result.candidates["id"], unrated_truth)
        )
    return point


def hunt_checkpoints(coll, hunt_seed: int, checkpoints: list[int], options: Options):
    """A fresh simulated merger hunt on ``coll``, evaluated at each checkpoint."""
    truth = (coll.catalog["class_name"] == TARGET).to_numpy()
    store = ratings_store(coll.path)
    while store.undo(SESSION, USER) is not None:  # a fresh hunt each run
        pass
    hunt = Discovery(coll, SESSION, user=USER, seed=hunt_seed)
    points = []
    while len(hunt.ratings) < checkpoints[-1]:
        batch = hunt.suggest(BATCH)
        is_target = batch["class_name"] == TARGET
        hunt.rate_many([(i, 5.0 if t else 0.0) for i, t in zip(batch["id"], is_target, strict=True)])
        if len(hunt.ratings) in checkpoints:
            points.append(evaluate(coll, hunt, hunt_seed, truth, options))
    return points


def print_table(pool: str, coll, points: list[Checkpoint], seeds: int, load: float) -> None:
    """The pool's table, headed by date, machine and load."""
    truth = (coll.catalog["class_name"] == TARGET).to_numpy()
    machine = platform.processor() or platform.machine()
    print(
        f"\n{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {machine}, {os.cpu_count()} CPUs, load average "
        f"{load:.1f} then {os.getloadavg()[0]:.1f}; {POOLS[pool][2]}: {int(truth.sum())} {TARGET}s of "
        f"{len(truth)}; head seeds 0-{seeds - 1} (mean, min-max)\n"
    )
    top = f"{TARGET}s in the top {TOP} unrated"
    print(f"| hunt seed | ratings | {TARGET}s found by the hunt | method | {top} | of |")
    print("|---|---|---|---|---|---|")
    for point in points:
        expected = TOP * point.remaining / point.unrated
        random = f"random order (expected: {TOP} x {point.remaining} / {point.unrated})"
        rows = [(random, f"{expected:.1f}"), *point.methods.items()]
        for method, cell in rows:
            where = f"| {point.hunt_seed} | {point.ratings} | {point.found} |"
            print(f"{where} {method} | {cell} | {point.remaining} |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=Path("work"), help="where collections are built")
    parser.add_argument("--pools", default="test", help=f"comma-separated, of {', '.join(POOLS)} (test)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds of the heads (default 5)")
    parser.add_argument("--hunt-seeds", type=int, default=1, help="hunts, seeded 0..N-1 (default 1)")
    parser.add_argument("--checkpoints", default="50,100", help="ratings to evaluate after (50,100)")
    parser.add_argument("--auto-budget", type=float, default=0, help="--auto seconds (default 0: skip)")
    parser.add_argument(
        "--background", default="", help="sizes of the background of presumed negatives (default: none)"
    )
    parser.add_argument("--label-spreading", action="store_true", help="add LabelSpreading (kNN kernel)")
    args = parser.parse_args()
    pools = args.pools.split(",")
    unknown = sorted(set(pools) - set(POOLS))
    if unknown:
        parser.error(f"unknown pools {unknown}: choose from {', '.join(POOLS)}")
    checkpoints = sorted(int(c) for c in args.checkpoints.split(","))
    backgrounds = [int(b) for b in args.background.split(",") if b]
    options = Options(args.seeds, args.auto_budget, backgrounds, args.label_spreading)
    args.work.mkdir(parents=True, exist_ok=True)
    for pool in pools:
        load = os.getloadavg()[0]
        coll = collection(args.work, pool)
        points = [
            point
            for hunt_seed in range(args.hunt_seeds)
            for point in hunt_checkpoints(coll, hunt_seed, checkpoints, options)
        ]
        print_table(pool, coll, points, args.seeds, load)


if __name__ == "__main__":
    main()
