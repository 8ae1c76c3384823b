"""Does `galsearch suspects` find the ring labels that a second, independent opinion disputes?

    python benchmarks/suspects.py [--work DIR] [--seeds N] [--folds K]

Labels: GZ DECaLS ring / not_ring (../shared/data/gz_decals_rings_dev.npz). Second opinion:
desi_rings_second_opinion.csv (the GC-SWGAN training set), cross-matched within 3 arcsec by the IAU names
the rings npz uses as ids; a cross-matched galaxy whose two labels differ is *disputed*. Each setting runs
:func:`galsearch.anomaly.classifier.suspects` with the defaults (a frozen linear head, 5 folds, cleanlab's
self-confidence ranking), nothing tuned, for seeds 0..N-1 (fold split and head initialisation), and
counts the disputed labels among the top N suspects, against the random expectation: N times the
disputed fraction. Settings, on labels the encoder never saw unless marked:

- the rings *test* split (benchmarks/splits.py) embedded with the default encoder, trained on the train
  split only;
- all 306 dev rings embedded with ``imagenet:efficientnet_lite0`` (ImageNet weights, no ring label);
- all 306 dev rings with the default encoder, **flattering to the labels**: 214 of them trained it, so its
  embedding echoes them and they are hard to doubt (the caveat of anomaly/classifier.py).

Collections are built under ``--work`` when missing.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from astropy import units as u
from astropy.coordinates import SkyCoord
from splits import SHARED_DATA, mean_range, shared_file, split

from galsearch.anomaly.classifier import suspects
from galsearch.embedder import DEFAULT_ENCODER, embed, ingest, open_collection
from galsearch.embedder.training.finetune import FinetuneConfig
from galsearch.embedder.training.labels import read_labels

SECOND_OPINION = SHARED_DATA / "desi_rings_second_opinion.csv"
MATCH_ARCSEC = 3.0
TOPS = (10, 20, 50)
IMAGENET = "imagenet:efficientnet_lite0"
IAU = re.compile(r"J(\d{2})(\d{2})(\d{2}(?:\.\d+)?)([+-])(\d{2})(\d{2})(\d{2}(?:\.\d+)?)")


def iau_coordinates(ids: np.ndarray) -> SkyCoord:
    """Positions from IAU names Jhhmmss.ss+ddmmss.s."""
    parts = [IAU.fullmatch(str(name)) for name in ids]
    if not all(parts):
        raise ValueError(f"not an IAU name: {ids[[p is None for p in parts]][0]}")
    ra = [f"{p[1]}h{p[2]}m{p[3]}s" for p in parts]
    dec = [f"{p[4]}{p[5]}d{p[6]}m{p[7]}s" for p in parts]
    return SkyCoord(ra, dec, frame="icrs")


def second_opinion(ids: np.ndarray) -> np.ndarray:
    """The second opinion's ring flag (1 or 0) of each id, -1 where nothing lies within 3 arcsec."""
    table = pd.read_csv(SECOND_OPINION)
    theirs = SkyCoord(table["ra"].to_numpy() * u.deg, table["dec"].to_numpy() * u.deg)
    nearest, separation, _ = iau_coordinates(ids).match_to_catalog_sky(theirs)
    return np.where(separation < MATCH_ARCSEC * u.arcsec, table["ring"].to_numpy()[nearest], -1)


def collection(path: Path, source: Path, encoder: str):
    """The collection at ``path`` (ingested from ``source`` if missing) embedded by ``encoder``."""
    if not (path / "manifest.json").exists():
        ingest(source, path, progress=False)
    embed(path, encoder, progress=False)
    return open_collection(path)


def evaluate(coll, source: Path, seeds: int, folds: int) -> dict:
    """Disputed labels among the top suspects, per seed, with the counts that set random expectation."""
    data = np.load(source)
    ids = data["ids"].astype(str)
    given = data["class_names"][data["labels"]]
    labels = read_labels(pd.DataFrame({"id": ids, "label": given}), coll)
    opinion = pd.Series(second_opinion(ids), index=ids)
    matched = opinion[opinion >= 0]
    disputed = matched[matched.to_numpy() != (pd.Series(given, index=ids)[matched.index] == "ring")]
    found = {("matched", n): [] for n in TOPS} | {("all", n): [] for n in TOPS}
    flagged, flagged_matched, flagged_disputed = [], [], []
    for seed in range(seeds):
        ranked = suspects(coll, labels, n=len(labels), config=FinetuneConfig(seed=seed), folds=folds)
        in_matched = ranked[ranked["id"].isin(matched.index)]
        for n in TOPS:
            found["matched", n].append(int(in_matched["id"].iloc[:n].isin(disputed.index).sum()))
            found["all", n].append(int(ranked["id"].iloc[:n].isin(disputed.index).sum()))
        issues = ranked[ranked["issue"]]
        flagged.append(len(issues))
        flagged_matched.append(int(issues["id"].isin(matched.index).sum()))
        flagged_disputed.append(int(issues["id"].isin(disputed.index).sum()))
    return {
        "labels": len(labels),
        "matched": len(matched),
        "disputed": len(disputed),
        "found": found,
        "flagged": (flagged, flagged_matched, flagged_disputed),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=Path("work"), help="where collections are built")
    parser.add_argument("--seeds", type=int, default=5, help="seeds of folds and heads (default 5)")
    parser.add_argument("--folds", type=int, default=5, help="cross-validation folds (default 5)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]
    _, rings_test = split("rings", args.work)
    dev = shared_file("rings")
    flattering = "all dev rings, default encoder (**flattering**: it trained on 214)"
    settings = [
        ("rings test split, default encoder", args.work / "rings_test_default", rings_test, DEFAULT_ENCODER),
        (f"all dev rings, {IMAGENET}", args.work / "rings_dev_lite0", dev, IMAGENET),
        (flattering, args.work / "rings_dev_default", dev, DEFAULT_ENCODER),
    ]
    results = []
    for name, path, source, encoder in settings:
        results.append((name, evaluate(collection(path, source, encoder), source, args.seeds, args.folds)))
    machine = platform.processor() or platform.machine()
    print(
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {machine}, {os.cpu_count()} CPUs, load average {load:.1f} "
        f"then {os.getloadavg()[0]:.1f}; seeds 0-{args.seeds - 1} (mean, min-max), {args.folds} folds\n"
    )
    print("| labels | ranked among | top N | disputed found | random expectation | ratio |")
    print("|---|---|---|---|---|---|")
    for name, r in results:
        fraction = {"matched": r["disputed"] / r["matched"], "all": r["disputed"] / r["labels"]}
        pool = {"matched": r["matched"], "all": r["labels"]}
        for among in ("matched", "all"):
            for n in TOPS:
                top = min(n, pool[among])
                expected = top * fraction[among]
                found = r["found"][among, n]
                what = (
                    f"the {r['matched']} cross-matched ({r['disputed']} disputed)"
                    if among == "matched"
                    else f"all {r['labels']} labels"
                )
                shown = f"{n}" if top == n else f"{n} (all {top})"
                print(
                    f"| {name} | {what} | {shown} | {mean_range(found)} | {expected:.1f} | "
                    f"{np.mean(found) / expected:.1f}x |"
                )
    print("\n| labels | flagged by cleanlab | of them cross-matched | of them disputed | disputed fraction |")
    print("|---|---|---|---|---|")
    for name, r in results:
        flagged, flagged_matched, flagged_disputed = r["flagged"]
        print(
            f"| {name} | {mean_range(flagged)} of {r['labels']} | {mean_range(flagged_matched)} | "
            f"{mean_range(flagged_disputed)} | {r['disputed']} of {r['matched']} cross-matched |"
        )


if __name__ == "__main__":
    main()
