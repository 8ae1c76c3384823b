"""Synthetic embeddings for benchmarks: clustered vectors like a CNN's, and real collections holding them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import faiss
import numpy as np
import pandas as pd

from galsearch.embedder.collection import Collection, open_collection
from galsearch.embedder.stretch import Stretch

CHUNK = 100_000
FINGERPRINT = {
    "spec": "synthetic",
    "architecture": "clustered-vectors",
    "weights_sha256": "-",
    "input_size": [1, 1, 1],
    "mean": [0.5],
    "std": [0.25],
    "interpolation": "bilinear",
    "tta": False,
}


def clustered_chunks(
    n: int, dim: int, seed: int, clusters: int = 200, rank: int = 16
) -> Iterator[np.ndarray]:
    """Unit float32 vectors, CHUNK rows at a time: a Gaussian mixture whose clusters each spread in their
    own ``rank``-dim subspace, plus isotropic noise (like CNN embeddings: few directions of variation per
    kind of object)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    bases = rng.standard_normal((clusters, rank, dim), dtype=np.float32) / np.sqrt(rank)
    for first in range(0, n, CHUNK):
        members = rng.integers(clusters, size=min(CHUNK, n - first))
        part = 0.3 * rng.standard_normal((len(members), dim), dtype=np.float32)
        for c in np.unique(members):
            rows = np.flatnonzero(members == c)
            part[rows] += centres[c] + rng.standard_normal((len(rows), rank), dtype=np.float32) @ bases[c]
        faiss.normalize_L2(part)
        yield part


def clustered(n: int, dim: int, seed: int, clusters: int = 200, rank: int = 16) -> np.ndarray:
    """All of :func:`clustered_chunks` as one (n, dim) array."""
    return np.concatenate(list(clustered_chunks(n, dim, seed, clusters, rank)))


def write_collection(
    path: Path, n: int, dim: int, queries: int, seed: int = 0
) -> tuple[Collection, np.ndarray]:
    """A collection of ``n`` galaxies (ids, ra/dec, mag, 1-pixel images) with clustered embeddings written a
    chunk at a time, and ``queries`` more vectors from the same mixture that it does not hold."""
    rng = np.random.default_rng(seed + 1)
    coll = Collection.create(path, (1, 1, 1), {"size": 1, "channels": 1, "stretch": Stretch().to_dict()})
    catalog = pd.DataFrame(
        {
            "id": np.char.add("syn-", np.char.zfill(np.arange(n).astype(str), 9)),
            "source": "synthetic",
            "ra": rng.uniform(0, 360, n),
            "dec": np.degrees(np.arcsin(rng.uniform(-1, 1, n))),
            "mag": rng.normal(21, 1.5, n),
        }
    )
    held_out = []
    with coll.writing():
        coll.append_galaxies(np.zeros((n, 1, 1, 1), np.uint8), catalog)
        del catalog
        coll.start_embeddings({**FINGERPRINT, "dim": dim}, dim)
        written = 0
        for chunk in clustered_chunks(n + queries, dim, seed):
            keep = chunk[: max(0, n - written)]
            if len(keep):
                coll.append_embeddings(keep)
            written += len(keep)
            held_out.append(chunk[len(keep) :])
    return open_collection(path), np.concatenate(held_out)
