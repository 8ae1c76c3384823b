"""Shared fixtures: small generated collections and tiny encoders (no network, no shared data needed)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

import socket
import tempfile
from pathlib import Path

import numpy as np
import pytest

from galsearch.embedder import Collection, ingest, open_collection

TINY_ENCODER = "random:test_convnext"


def blob_images(n: int, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Float images of one Gaussian blob plus noise: label 0 compact and round, 1 extended and elongated."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    labels = np.arange(n) % 2
    images = np.empty((n, size, size, 3), np.float32)
    for i, label in enumerate(labels):
        sigma = rng.uniform(1.5, 2.5) if label == 0 else rng.uniform(5, 7)
        q = 1.0 if label == 0 else rng.uniform(0.25, 0.4)
        theta = rng.uniform(0, np.pi)
        u = xx * np.cos(theta) + yy * np.sin(theta)
        v = -xx * np.sin(theta) + yy * np.cos(theta)
        blob = np.exp(-0.5 * ((u / sigma) ** 2 + (v / (sigma * q)) ** 2))
        colour = np.array([0.6, 0.8, 1.0]) if label == 0 else np.array([1.0, 0.8, 0.5])
        images[i] = blob[..., None] * colour * 100 + rng.normal(0, 1, (size, size, 3))
    return images, labels


def write_blob_npz(path: Path, n: int, size: int = 32, seed: int = 0) -> Path:
    """An .npz source in the shared-data layout with ``n`` blob galaxies."""
    images, labels = blob_images(n, size, seed)
    ids = np.array([f"blob-{seed}-{i:04d}" for i in range(n)])
    np.savez(path, images=images, labels=labels, ids=ids, class_names=np.array(["compact", "extended"]))
    return path


@pytest.fixture(autouse=True, scope="session")
def temporary_files_in_pytests_folder(tmp_path_factory: pytest.TempPathFactory):
    """Temporary files of this process and the servers it starts go in a folder of their own in pytest's,
    which pytest prunes: gradio_client leaves an empty folder in the temporary directory for every file it
    downloads. Collections are made beside it, outside it, as a user's are: Gradio refuses to serve their
    files unless the app copies them out."""
    scratch = str(tmp_path_factory.mktemp("tmp"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tempfile, "tempdir", scratch)
        patch.setenv("TMPDIR", scratch)
        yield


@pytest.fixture
def blob_collection(tmp_path: Path) -> Collection:
    """A fresh 64-galaxy collection of two learnable classes (not embedded)."""
    ingest(write_blob_npz(tmp_path / "blobs.npz", 64), tmp_path / "blobs", progress=False)
    return open_collection(tmp_path / "blobs")


def cli_killed_after_commits(commits: int, setup: str = "") -> str:
    """Python source of the galsearch CLI that SIGKILLs its own process (no cleanup runs) right after its
    ``commits``-th commit of embeddings: a hard kill at the same point however fast or busy the machine
    is. ``setup`` runs first (e.g. to commit after every batch); run it as ``python -c SOURCE ARGS...``."""
    return f"""
import os, signal, sys
import galsearch.ui.cli
from galsearch.embedder.collection import Collection
{setup}
append, commits = Collection.append_embeddings, []
def append_then_die(self, rows):
    append(self, rows)
    commits.append(len(rows))
    if len(commits) == {commits}:
        os.kill(os.getpid(), signal.SIGKILL)
Collection.append_embeddings = append_then_die
sys.exit(galsearch.ui.cli.main())
"""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
