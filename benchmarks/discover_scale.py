"""The active learner's sessions at survey scale: starting a discover session and one rate -> suggest step.

Writes a collection per size under ``--work``: 1-pixel images (a sparse file), 320-wide float32
embeddings drawn around 50 cluster centres (in chunks: 12.8 GB at ten million galaxies), a catalog, and
the compressed index galsearch builds at that size (set-up, made once). Then times, each in a fresh
process so that its peak resident memory is its own:

- anomaly scores: every galaxy's k-NN score through the index, stored as ``anomaly_knn`` (what
  ``galsearch anomalies`` and a first ``discover`` compute; see benchmarks/anomaly_scale.py for its
  throughput on Dask workers);
- first session: the reduced features computed and cached, the candidates' GP features computed and
  cached (see anomaly/features.py and anomaly/discover.py);
- session start: the same with both cached (what every later ``discover`` call and web session pays);
- rate -> suggest: one rating stored and refitted, then the next suggestion (median of 5).

    python benchmarks/discover_scale.py --rows 1000000 10000000 --work /tmp/discover-scale
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from fresh_process import arguments, in_process
from sparse_collection import made_once, write_sparse_collection

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

WIDTH = 320
CENTRES = 50
CHUNK = 250_000
STEPS = 5


def write_collection(path: Path, n: int, seed: int = 0) -> None:
    """``n`` galaxies with clustered embeddings, written in chunks, and their index."""
    import pyarrow as pa

    from galsearch.embedder.collection import open_collection
    from galsearch.index.compressed import compressed_factory
    from galsearch.index.store import build_index, ivf_lists

    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (CENTRES, WIDTH)).astype(np.float32)
    spread = rng.uniform(0.3, 1.0, CENTRES).astype(np.float32)
    schema = pa.schema([("id", pa.string()), ("source", pa.string())])

    def chunk(start: int, size: int) -> tuple[dict, np.ndarray]:
        cluster = rng.integers(0, CENTRES, size)
        offsets = rng.standard_normal((size, WIDTH), dtype=np.float32) * spread[cluster, None]
        columns = {
            "id": pa.array([f"g{i:08d}" for i in range(start, start + size)]),
            "source": pa.array(np.full(size, "synthetic")),
        }
        return columns, centres[cluster] + offsets

    write_sparse_collection(path, n, schema, chunk, CHUNK, dim=WIDTH)
    build_index(open_collection(path), compressed_factory(WIDTH, ivf_lists(n)), progress=False)


def measure(path: Path, what: str) -> dict[str, float]:
    """Run one measurement in this process; returns seconds (imports not counted)."""
    import pandas  # noqa: F401  (imports are not what is measured)
    import sklearn.decomposition  # noqa: F401

    import galsearch.index.store  # noqa: F401
    from galsearch.anomaly.discover import Discovery
    from galsearch.anomaly.scores import score_collection
    from galsearch.embedder.collection import open_collection

    if what == "anomaly scores":
        start = time.perf_counter()
        score_collection(open_collection(path), "knn", via="index", progress=False)
        return {"seconds": time.perf_counter() - start}
    session = f"bench-{os.getpid()}"
    start = time.perf_counter()
    hunt = Discovery(path, session, user="bench")
    out = {"seconds": time.perf_counter() - start}
    if what == "rate -> suggest":
        times = []
        for _ in range(STEPS):
            galaxy = str(hunt.suggest(1)["id"].iloc[0])
            start = time.perf_counter()
            hunt.rate(galaxy, 5.0)
            hunt.suggest(1)
            times.append(time.perf_counter() - start)
        out["seconds"] = float(np.median(times))
    return out


def main() -> None:
    args = arguments(__doc__, measure, "discover-scale-")
    if args is None:
        return
    work = args.work
    print("| galaxies | step | seconds | peak RSS (MB) |")
    print("|---:|---|---:|---:|")
    for n in args.rows:
        path = work / f"discover-{n}"
        made_once(path, n, write_collection, "collection and its index")
        shutil.rmtree(path / "cache", ignore_errors=True)
        steps = ("anomaly scores", "first session (features and GP features cached)", "session start")
        for what in (*steps, "rate -> suggest"):
            result = in_process(__file__, path, what)
            print(f"| {n:,} | {what} | {result['seconds']:.2f} | {result['peak_rss_mb']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
