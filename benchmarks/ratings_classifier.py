"""After a hunt, does a classifier trained on its ratings find the rare galaxies it has not shown yet?

    python benchmarks/ratings_classifier.py [--work DIR] [--seeds N] [--auto-budget S]

The merger hunt of benchmarks/discovery.py on the GZ1 *test* split (benchmarks/splits.py; the default
encoder never saw these galaxies' labels): a simulated user rates what the active learner
(:class:`anomaly.Discovery`) shows, in batches of 10, mergers 5 and everything else 0. After 50 and 100
ratings each method ranks the galaxies not rated yet, and the table counts the mergers among its top 100,
out of the mergers the hunt has not found, against random order (100 times the share of mergers among
the unrated). Methods:

- ``train_classifier`` on ``labels_from_ratings`` (positive: rated 4 or more), its defaults: a linear
  head on the frozen embeddings, 5-fold cross-validated metrics; seeds 0..N-1 of the folds and head;
- the same with ``--auto`` settings search (``--auto-budget`` seconds; 0 skips it);
- scikit-learn's ``LogisticRegression`` (its defaults, ``max_iter`` raised to converge) on the same
  ratings' embeddings;
- the active learner's own ranking (the GP's expected rating), for reference.

Nothing is tuned on the test split: every method runs with its defaults.
"""

from __future__ import annotations

import argparse
import os
import platform
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from splits import mean_range, split

from galsearch.anomaly import Discovery, ratings_store
from galsearch.anomaly.classifier import labels_from_ratings, train_classifier
from galsearch.embedder import DEFAULT_ENCODER, embed, ingest, open_collection
from galsearch.embedder.training.finetune import FinetuneConfig

TARGET = "merger"
SESSION = "benchmark: simulated merger hunt"
USER = "simulated"
BATCH = 10
CHECKPOINTS = (50, 100)
TOP = 100


def collection(work: Path):
    """The GZ1 test split as a collection of its own (ratings, heads and predictions go into it)."""
    path = work / "gz1_test_hunt"
    if not (path / "manifest.json").exists():
        ingest(split("gz1", work)[1], path, progress=False)
    embed(path, DEFAULT_ENCODER, progress=False)
    return open_collection(path)


def found_in(ids, unrated_truth: dict[str, bool]) -> int:
    """Targets among ``ids`` (the first TOP of a ranking of unrated galaxies)."""
    return int(sum(unrated_truth[i] for i in list(ids)[:TOP]))


@dataclass
class Checkpoint:
    """Where the hunt stands after some ratings, and the targets in each method's top 100 unrated."""

    ratings: int
    found: int  # targets rated so far
    remaining: int  # targets not rated yet
    unrated: int  # galaxies not rated yet
    methods: dict[str, list[int]]  # method: targets in its top 100 unrated (one per seed)


def evaluate(coll, hunt: Discovery, truth: np.ndarray, seeds: int, auto_budget: float) -> Checkpoint:
    """Targets in the top 100 unrated galaxies of each method, after the ratings made so far."""
    ids = coll.catalog["id"].to_numpy()
    unrated = ~np.isin(ids, hunt.ratings["galaxy"].to_numpy())
    unrated_truth = dict(zip(ids[unrated], truth[unrated], strict=True))
    labels = labels_from_ratings(coll, SESSION)
    name = f"hunt_{len(hunt.ratings)}"
    heads = [
        train_classifier(coll, labels, name, FinetuneConfig(seed=s), candidates=TOP) for s in range(seeds)
    ]
    methods = {
        "train_classifier (defaults: linear head, frozen)": [
            found_in(head.candidates["id"], unrated_truth) for head in heads
        ]
    }
    embeddings = np.asarray(coll.embeddings)
    logistic = LogisticRegression(max_iter=5000).fit(embeddings[labels.rows], labels.targets)
    probability = logistic.predict_proba(embeddings[unrated])[:, 1]
    order = ids[unrated][np.argsort(-probability, kind="stable")]
    methods["scikit-learn LogisticRegression (defaults)"] = [found_in(order, unrated_truth)]
    ranking = hunt.ranking(len(ids))
    methods["active learner's own ranking (GP)"] = [
        found_in(ranking.loc[ranking["rating"].isna(), "id"], unrated_truth)
    ]
    if auto_budget:
        result = train_classifier(coll, labels, f"{name}_auto", auto_budget_s=auto_budget, candidates=TOP)
        config = result.finetune.head.training["config"]
        chosen = f"{config['head']}, unfreeze {config['unfreeze']}, lr {config['lr']:g}"
        methods[f"train_classifier --auto ({auto_budget:g} s) -> {chosen}"] = [
            found_in(result.candidates["id"], unrated_truth)
        ]
    remaining = int(sum(unrated_truth.values()))
    found = int(truth.sum()) - remaining
    return Checkpoint(len(hunt.ratings), found, remaining, int(unrated.sum()), methods)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=Path("work"), help="where collections are built")
    parser.add_argument("--seeds", type=int, default=5, help="seeds of the head (default 5)")
    parser.add_argument("--auto-budget", type=float, default=120, help="--auto seconds (0: skip)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]
    coll = collection(args.work)
    truth = (coll.catalog["class_name"] == TARGET).to_numpy()
    store = ratings_store(coll.path)
    while store.undo(SESSION, USER) is not None:  # a fresh hunt each run
        pass
    hunt = Discovery(coll, SESSION, user=USER)
    checkpoints = []
    while len(hunt.ratings) < CHECKPOINTS[-1]:
        batch = hunt.suggest(BATCH)
        is_target = batch["class_name"] == TARGET
        hunt.rate_many([(i, 5.0 if t else 0.0) for i, t in zip(batch["id"], is_target, strict=True)])
        if len(hunt.ratings) in CHECKPOINTS:
            checkpoints.append(evaluate(coll, hunt, truth, args.seeds, args.auto_budget))
    machine = platform.processor() or platform.machine()
    print(
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {machine}, {os.cpu_count()} CPUs, load average {load:.1f} "
        f"then {os.getloadavg()[0]:.1f}; GZ1 test split: {int(truth.sum())} {TARGET}s of {len(truth)}; "
        f"default encoder; head seeds 0-{args.seeds - 1} (mean, min-max)\n"
    )
    print(f"| ratings | {TARGET}s found by the hunt | method | {TARGET}s in the top {TOP} unrated | of |")
    print("|---|---|---|---|---|")
    for point in checkpoints:
        expected = TOP * point.remaining / point.unrated
        random = f"random order (expected: {TOP} x {point.remaining} / {point.unrated})"
        rows = [(random, f"{expected:.1f}")] + [(m, mean_range(v)) for m, v in point.methods.items()]
        for method, cell in rows:
            print(f"| {point.ratings} | {point.found} | {method} | {cell} | {point.remaining} |")


if __name__ == "__main__":
    main()
