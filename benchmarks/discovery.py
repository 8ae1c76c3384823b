"""How fast does each method find rare galaxies for a simulated user, and how fast is one update at scale?

    python benchmarks/discovery.py [--work DIR] [--scale N] [--encoder SPEC]

A simulated user rates galaxies of one rare class 5 and everything else 0, in batches of 10 (the protocol
of Walmsley et al. 2022). For each data set and class the table gives the number found among the first
25/50/100/200 galaxies shown by: random order (expected value), each anomaly score alone, and the active
learner (GP with the k-NN anomaly prior); then the precision of the top 50 and 150 of the final ranking
(after 200 ratings, rated galaxies included). Data: the demo collection (rings, mergers, lenses, ~1% each)
and ../shared/data/gz1_sdss_dev.npz (mergers 1.7%, dont_know artefacts 0.8%), embedded with the default
encoder (or ``--encoder``). The default encoder was trained with the labels of the GZ1 *train* split, so
the GZ1 rows are also given for the test split alone, which it never saw. The last table times one
rating (refit) plus a new batch and ranking with N candidates and 500 ratings.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
from splits import shared_file, split

from galsearch.anomaly import ActiveLearner, anomaly_scores, reduce_embeddings
from galsearch.anomaly.scores import METHODS
from galsearch.embedder import DEFAULT_ENCODER, build_demo, embed, ingest, open_collection

COUNTS = (25, 50, 100, 200)
TOPS = (50, 150)
BATCH = 10
TARGETS = {"demo": ("ring", "merger", "lens"), "gz1": ("merger", "dont_know"), "gz1-test": ("merger",)}


def embedded(path: Path, make, encoder: str) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings by ``encoder`` and class names of the collection at ``path``, made by ``make(path)`` if
    missing."""
    if not (path / "manifest.json").exists():
        make(path)
    coll = open_collection(path)
    embed(coll, encoder, replace=True, progress=False)
    coll = open_collection(path)
    return np.asarray(coll.embeddings), coll.catalog["class_name"].to_numpy()


def datasets(work: Path, encoder: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    _, gz1_test = split("gz1", work)
    return {
        "demo": embedded(work / "demo", lambda p: build_demo(p, seed=0), encoder),
        "gz1": embedded(work / "gz1_full", lambda p: ingest(shared_file("gz1"), p, progress=False), encoder),
        "gz1-test": embedded(work / "gz1_test", lambda p: ingest(gz1_test, p, progress=False), encoder),
    }


def active_order(features: np.ndarray, prior: np.ndarray, truth: np.ndarray) -> tuple[list[int], np.ndarray]:
    """Rows in the order the learner shows them to the simulated user, and its final ranking."""
    learner = ActiveLearner(features, prior)
    shown: list[int] = []
    while len(shown) < COUNTS[-1]:
        shown.extend(learner.suggest(BATCH).tolist())
        learner.fit(shown, 5.0 * truth[shown])
    return shown, learner.ranking(TOPS[-1])["row"].to_numpy()


def evaluate(embeddings: np.ndarray, classes: np.ndarray, target: str) -> dict[str, list[float]]:
    truth = classes == target
    features = reduce_embeddings(embeddings)
    rows = {"random (expected)": [truth.mean() * n for n in COUNTS] + [truth.mean() for _ in TOPS]}
    scores = {method: anomaly_scores(features, method) for method in METHODS}
    for method, score in scores.items():
        order = np.argsort(-score, kind="stable")
        rows[f"anomaly: {method}"] = [int(truth[order[:n]].sum()) for n in COUNTS] + [
            truth[order[:top]].mean() for top in TOPS
        ]
    shown, ranking = active_order(features, scores["knn"], truth)
    rows["active learner (GP)"] = [int(truth[shown[:n]].sum()) for n in COUNTS] + [
        truth[ranking[:top]].mean() for top in TOPS
    ]
    return rows


def scale(n: int, ratings: int = 500, dim: int = 16) -> list[tuple[str, float]]:
    rng = np.random.default_rng(0)
    features = rng.standard_normal((n, dim)).astype(np.float32)
    start = time.perf_counter()
    learner = ActiveLearner(features, rng.random(n))
    setup = time.perf_counter() - start
    rated = rng.choice(n, ratings, replace=False)
    scores = rng.integers(0, 6, ratings).astype(float)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        learner.fit(rated, scores)
        learner.suggest(BATCH)
        learner.ranking(50)
        times.append(time.perf_counter() - start)
    return [
        ("candidates", n),
        ("ratings", ratings),
        ("set-up (features of all candidates, once) s", setup),
        ("update + next 10 + top 50, median s", float(np.median(times))),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=Path("work"), help="where collections are built")
    parser.add_argument("--scale", type=int, default=1_000_000, help="candidates in the timing (0: skip)")
    parser.add_argument("--encoder", default=DEFAULT_ENCODER, help="encoder spec (default: the shipped one)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    print(f"machine: {platform.processor() or platform.machine()}, CPU only; encoder: {args.encoder}")
    header = " | ".join([f"found in {n}" for n in COUNTS] + [f"top-{t} precision" for t in TOPS])
    print(f"\n| data | class (count) | method | {header} |")
    print("|" + "---|" * (3 + len(COUNTS) + len(TOPS)))
    for name, (embeddings, classes) in datasets(args.work, args.encoder).items():
        for target in TARGETS[name]:
            label = f"{target} ({int((classes == target).sum())} of {len(classes)})"
            for method, values in evaluate(embeddings, classes, target).items():
                cells = [f"{v:.1f}" if "random" in method else f"{v:.0f}" for v in values[: len(COUNTS)]]
                cells += [f"{v:.2f}" for v in values[len(COUNTS) :]]
                print(f"| {name} | {label} | {method} | " + " | ".join(cells) + " |", flush=True)
    if args.scale:
        print("\n| active learner at scale | value |\n|---|---|")
        for what, value in scale(args.scale):
            print(f"| {what} | {value:.3f} |" if isinstance(value, float) else f"| {what} | {value} |")


if __name__ == "__main__":
    main()
