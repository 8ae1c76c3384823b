"""How fast the command line answers: start-up and per-command latency, against the targets of issue 15.

    python benchmarks/cli.py [--work DIR] [--runs 5] [--size 1000000] [--dim 256]

Runs each command as a user does (``galsearch ...`` in a fresh process, from this checkout) on
the demo collection (built with ``galsearch demo --no-serve`` when missing) and on a synthetic collection
of ``--size`` galaxies (clustered vectors of dimension ``--dim`` written as embeddings and 1-pixel images,
since these commands read no pixels; built once under ``--work``). Prints one table per collection: median
and min wall time of ``--runs`` runs, the median CPU time (user + sys) of the process, the target and
whether the median wall time meets it.
Targets: ``--help`` and ``info`` < 0.5 s; ``discover --rate`` and ``--next`` < 1.5 s on the demo and < 3 s
at 1M galaxies; ``search --id`` dominated by the search rather than by imports (no number given; the
start-up floor, importing the CLI and the query module alone, is printed beside it). The first ``discover`` of
a collection computes and caches its features: the cache is removed and that call timed once, apart. The
synthetic collection gets an IVF index (``--factory``), since the automatic HNSW takes minutes to build at
1M, and a stand-in ``anomaly_knn`` column (each galaxy's distance from the centre of the whitened PCA
features), since scikit-learn's exact k-NN scoring of 1M galaxies ran for over 10 minutes here; the
prior's values do not change what a ``discover`` call costs. On a shared machine wall time includes
waiting for a core; the load average is printed.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from synthetic import write_collection

from galsearch.anomaly.features import reduce_embeddings
from galsearch.anomaly.scores import score_column
from galsearch.embedder.cache import CACHE_DIR
from galsearch.embedder.collection import Collection, open_collection

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str) -> list[str]:
    """Python's arguments that run ``galsearch ARGS`` from this checkout."""
    return ["-m", "galsearch.ui.cli", *args]


def run(args: list[str]) -> tuple[float, float]:
    """Wall and CPU (user + sys) seconds of ``python ARGS`` run in a new process from this checkout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"python {' '.join(args)} failed:\n{done.stderr}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def synthetic(path: Path, n: int, dim: int) -> Collection:
    """A collection of ``n`` galaxies with clustered embeddings and a stand-in anomaly score (made once)."""
    if (path / "manifest.json").exists():
        coll = open_collection(path)
        if len(coll) == coll.counts["embedded"] == n:
            return coll
        raise SystemExit(f"{path} holds another collection: remove it or choose another --work")
    print(f"building a synthetic collection of {n} galaxies in {path} ...", flush=True)
    coll, _ = write_collection(path, n, dim, queries=0)
    with coll.writing():
        stand_in = np.linalg.norm(reduce_embeddings(coll.embeddings), axis=1)
        coll.set_columns({score_column("knn"): stand_in})
    return open_collection(path)


def demo(path: Path) -> Collection:
    """The demo collection at ``path``, built and embedded with the default encoder when missing."""
    if not (path / "manifest.json").exists():
        print(f"building the demo collection in {path} (a few minutes) ...", flush=True)
        run(cli("demo", "--no-serve", "--path", str(path)))
    return open_collection(path)


def measure(coll: Collection, runs: int, targets: dict[str, float], factory: str | None) -> None:
    """Time each command ``runs`` times on ``coll`` and print the table."""
    load = os.getloadavg()[0]
    path, ids = str(coll.path), coll.catalog["id"].iloc[:: max(1, len(coll) // (runs + 1))].tolist()
    hunt = ["discover", path, "--session", f"bench-{os.getpid()}", "--user", "bench"]
    shutil.rmtree(coll.path / CACHE_DIR, ignore_errors=True)
    first = run(cli(*hunt, "--next", "10"))
    if factory is not None:
        run(cli("index", path, "--factory", factory, "--quiet"))
    run(cli("search", path, "--id", ids[0]))  # builds the index if missing; reads it into the page cache
    commands = {
        "--help": lambda i: cli("--help"),
        "info": lambda i: cli("info", path),
        "start-up floor: import galsearch.ui.cli, galsearch.index.query": lambda i: [
            "-c",
            "import galsearch.ui.cli, galsearch.index.query",
        ],
        "search --id ID": lambda i: cli("search", path, "--id", ids[i]),
        "discover --rate ID=5": lambda i: cli(*hunt, "--rate", f"{ids[i + 1]}=5"),
        "discover --next 10": lambda i: cli(*hunt, "--next", "10"),
    }
    rows = []
    for name, args in commands.items():
        times = [run(args(i)) for i in range(runs)]
        walls, cpus = [w for w, _ in times], [c for _, c in times]
        target = targets.get(name)
        verdict = "" if target is None else ("met" if statistics.median(walls) < target else "missed")
        rows.append(
            (name, runs, statistics.median(walls), min(walls), statistics.median(cpus), target, verdict)
        )
    print(f"\n{coll.manifest['name']}: {len(coll):,} galaxies, embeddings of dim {coll.embedding_dim}")
    print(f"load average (1 min) before: {load:.1f}, after: {os.getloadavg()[0]:.1f}\n")
    print("| command | runs | median wall s | min wall s | median CPU s | target s | |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
    wall, cpu = first
    print(f"| first discover: features and GP basis computed and cached | 1 | {wall:.2f} | | {cpu:.2f} | | |")
    for name, n, median, low, cpu, target, verdict in rows:
        shown = "" if target is None else f"< {target:g}"
        print(f"| {name} | {n} | {median:.2f} | {low:.2f} | {cpu:.2f} | {shown} | {verdict} |")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path("work"), help="where collections are built")
    parser.add_argument("--demo", type=Path, help="the demo collection (default: WORK/demo)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--size", type=int, default=1_000_000, help="synthetic galaxies (0: none)")
    parser.add_argument("--dim", type=int, default=256, help="embedding dimension (the default encoder's)")
    parser.add_argument(
        "--factory", default="IVF1024,Flat", help="index of the synthetic collection (HNSW takes minutes)"
    )
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    print(f"{platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    demo_targets = {"--help": 0.5, "info": 0.5, "discover --rate ID=5": 1.5, "discover --next 10": 1.5}
    measure(demo(args.demo or args.work / "demo"), args.runs, demo_targets, None)
    if args.size:
        scale_targets = {**demo_targets, "discover --rate ID=5": 3.0, "discover --next 10": 3.0}
        coll = synthetic(args.work / f"synthetic-{args.size}", args.size, args.dim)
        measure(coll, args.runs, scale_targets, args.factory)


if __name__ == "__main__":
    main()
