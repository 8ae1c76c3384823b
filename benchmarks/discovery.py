"""How fast does each method find rare galaxies for a simulated user, and how fast is one update at scale?

    python benchmarks/discovery.py [--work DIR] [--scale N] [--encoder SPEC] [--plot FILE]

A simulated user rates galaxies of one rare class 5 and everything else 0, in batches of 10 (the protocol
of Walmsley et al. 2022). For each data set and class the table gives the number found among the first
25/50/100/200 galaxies shown by: random order (expected value), each anomaly score alone, and the active
learner (GP with the k-NN anomaly prior); then the precision of the top 50 and 150 of the final ranking
(after 200 ratings, rated galaxies included). Data: the demo collection (rings, mergers, lenses, ~1% each)
and ../shared/data/gz1_sdss_dev.npz (mergers 1.7%, dont_know artefacts 0.8%), embedded with the default
encoder (or ``--encoder``). The default encoder was trained with the labels of the GZ1 *train* split, so
the GZ1 rows are also given for the test split alone, which it never saw. The last table times one
rating (refit) plus a new batch and ranking with N candidates and 500 ratings. ``--plot FILE`` also draws
the galaxies found against the number of ratings, one panel per data set and class, one line per method.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
from splits import shared_file, split

from galsearch.anomaly import ActiveLearner, anomaly_scores, reduce_embeddings
from galsearch.anomaly.scores import METHODS
from galsearch.embedder import DEFAULT_ENCODER, build_demo, embed, ingest, open_collection

COUNTS = (25, 50, 100, 200)
TOPS = (50, 150)
BATCH = 10
TARGETS = {"demo": ("ring", "merger", "lens"), "gz1": ("merger", "dont_know"), "gz1-test": ("merger",)}


class Result(NamedTuple):
    """One method on one class: galaxies found after each galaxy shown, precision of the top ``TOPS``."""

    found: np.ndarray
    top_precision: list[float]


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


def evaluate(embeddings: np.ndarray, classes: np.ndarray, target: str) -> dict[str, Result]:
    """Each method's count of ``target`` galaxies found after each galaxy shown, and its top precisions."""
    truth = classes == target
    shown_so_far = np.arange(1, COUNTS[-1] + 1)
    features = reduce_embeddings(embeddings)
    results = {"random (expected)": Result(truth.mean() * shown_so_far, [truth.mean() for _ in TOPS])}
    scores = {method: anomaly_scores(features, method) for method in METHODS}
    for method, score in scores.items():
        order = np.argsort(-score, kind="stable")
        results[f"anomaly: {method}"] = Result(
            np.cumsum(truth[order[: COUNTS[-1]]]), [truth[order[:top]].mean() for top in TOPS]
        )
    shown, ranking = active_order(features, scores["knn"], truth)
    results["active learner (GP)"] = Result(
        np.cumsum(truth[shown[: COUNTS[-1]]]), [truth[ranking[:top]].mean() for top in TOPS]
    )
    return results


def plot(panels: dict[str, dict[str, Result]], path: Path, caption: str) -> None:
    """Galaxies found against ratings, a panel per data set and class, a line per method, as a PNG
    captioned with ``caption`` (what was measured where and when)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.4 * rows), squeeze=False)
    for ax, (title, results) in zip(axes.flat, panels.items(), strict=False):
        for method, result in results.items():
            random = "random" in method
            style = {"ls": "--", "color": "grey"} if random else {"lw": 2 if "GP" in method else 1}
            ax.plot(np.arange(1, len(result.found) + 1), result.found, label=method, **style)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("ratings")
        ax.set_ylabel("found")
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(caption, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
    parser.add_argument("--plot", type=Path, help="also draw found against ratings as this PNG file")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    started = f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs, load {load}"
    print(
        f"{started}; machine: {platform.processor() or platform.machine()}, CPU only; encoder: {args.encoder}"
    )
    header = " | ".join([f"found in {n}" for n in COUNTS] + [f"top-{t} precision" for t in TOPS])
    print(f"\n| data | class (count) | method | {header} |")
    print("|" + "---|" * (3 + len(COUNTS) + len(TOPS)))
    panels = {}
    for name, (embeddings, classes) in datasets(args.work, args.encoder).items():
        for target in TARGETS[name]:
            label = f"{target} ({int((classes == target).sum())} of {len(classes)})"
            flattering = " (flattering: train split learnt)" if name == "gz1" else ""
            panels[f"{name}{flattering}: {label}"] = results = evaluate(embeddings, classes, target)
            for method, result in results.items():
                found = [result.found[n - 1] for n in COUNTS]
                cells = [f"{v:.1f}" if "random" in method else f"{v:.0f}" for v in found]
                cells += [f"{v:.2f}" for v in result.top_precision]
                print(f"| {name} | {label} | {method} | " + " | ".join(cells) + " |", flush=True)
    if args.plot:
        plot(panels, args.plot, f"benchmarks/discovery.py, encoder {args.encoder}; {started}")
        print(f"\nplot written to {args.plot}")
    if args.scale:
        print("\n| active learner at scale | value |\n|---|---|")
        for what, value in scale(args.scale):
            print(f"| {what} | {value:.3f} |" if isinstance(value, float) else f"| {what} | {value} |")


if __name__ == "__main__":
    main()
