"""Embedding a collection: fingerprints, the one-encoder rule, incremental and resumed runs, TTA."""

from __future__ import annotations

import signal
import subprocess
import sys

import numpy as np
import pytest
from conftest import TINY_ENCODER, blob_images, cli_killed_after_commits, write_blob_npz

from galsearch.embedder import EncoderError, embed, encoder_of, ingest, load_encoder, open_collection


def test_embed_stores_vectors_and_fingerprint(blob_collection):
    report = embed(blob_collection, TINY_ENCODER, batch_size=16, device="cpu", progress=False)
    coll = open_collection(blob_collection.path)
    assert report.embedded == len(coll) == coll.counts["embedded"] == 64
    fingerprint = coll.encoder
    assert fingerprint["spec"] == TINY_ENCODER and fingerprint["input_size"] == [3, 32, 32]
    assert coll.embeddings.shape == (64, fingerprint["dim"])
    assert np.isfinite(coll.embeddings).all()
    expected = load_encoder(TINY_ENCODER, "cpu").embed(coll.images[:5])
    np.testing.assert_allclose(coll.embeddings[:5], expected, rtol=1e-4, atol=1e-5)


def test_rerun_and_newly_ingested_galaxies(tmp_path, blob_collection):
    embed(blob_collection, TINY_ENCODER, device="cpu", progress=False)
    assert embed(blob_collection, TINY_ENCODER, device="cpu", progress=False).embedded == 0
    ingest(write_blob_npz(tmp_path / "more.npz", 10, seed=1), blob_collection.path, progress=False)
    report = embed(blob_collection.path, TINY_ENCODER, device="cpu", progress=False)
    assert (report.embedded, report.resumed_from) == (10, 64)
    coll = open_collection(blob_collection.path)
    expected = load_encoder(TINY_ENCODER, "cpu").embed(coll.images[64:])
    np.testing.assert_allclose(coll.embeddings[64:], expected, rtol=1e-4, atol=1e-5)


def test_other_encoder_is_refused_unless_replacing(blob_collection):
    embed(blob_collection, TINY_ENCODER, device="cpu", progress=False)
    with pytest.raises(EncoderError, match="never mixed"):
        embed(blob_collection.path, "random:test_vit", device="cpu", progress=False)
    with pytest.raises(EncoderError, match="never mixed"):  # the same weights with TTA embed differently
        embed(blob_collection.path, TINY_ENCODER, tta=True, device="cpu", progress=False)
    report = embed(blob_collection.path, "random:test_vit", replace=True, device="cpu", progress=False)
    coll = open_collection(blob_collection.path)
    assert report.embedded == 64 and coll.encoder["architecture"] == "test_vit"
    assert coll.embeddings.shape[1] == load_encoder("random:test_vit", "cpu").dim


def test_tta_embeddings_ignore_rotation(tmp_path):
    images, _ = blob_images(6, size=32, seed=4)
    rotated = np.rot90(images, 1, axes=(1, 2))
    np.savez(
        tmp_path / "rot.npz",
        images=np.concatenate([images, rotated]),
        ids=np.array([f"g{i}" for i in range(6)] + [f"g{i}-rot90" for i in range(6)]),
    )
    ingest(tmp_path / "rot.npz", tmp_path / "coll", progress=False)
    embed(tmp_path / "coll", TINY_ENCODER, tta=True, device="cpu", progress=False)
    vectors = open_collection(tmp_path / "coll").embeddings
    a, b = vectors[:6], vectors[6:]
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.min() >= 0.99


def _assert_rows_match_a_fresh_run(coll, rows: slice) -> None:
    reference = load_encoder(TINY_ENCODER, "cpu").embed(coll.images[rows])
    np.testing.assert_allclose(coll.embeddings[rows], reference, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_interrupted_embed_resumes_where_it_stopped(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules["galsearch.embedder.embed"], "COMMIT_SECONDS", 0.0)  # commit every batch
    ingest(write_blob_npz(tmp_path / "c.npz", 160, size=64), tmp_path / "c", progress=False)
    encoder = load_encoder(TINY_ENCODER, "cpu")
    batches = []

    def embed_until_ctrl_c(images, tta=False):  # Ctrl-C while the fourth batch is being embedded
        batches.append(len(images))
        if len(batches) == 4:
            raise KeyboardInterrupt
        return type(encoder).embed(encoder, images, tta=tta)

    monkeypatch.setattr(encoder, "embed", embed_until_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        embed(tmp_path / "c", encoder, batch_size=16, progress=False)
    monkeypatch.undo()
    done = open_collection(tmp_path / "c").counts["embedded"]
    assert done == 3 * 16  # the batches finished before Ctrl-C were kept
    report = embed(tmp_path / "c", encoder, batch_size=16, progress=False)
    assert report.resumed_from == done and report.embedded == 160 - done
    _assert_rows_match_a_fresh_run(open_collection(tmp_path / "c"), slice(done - 8, done + 8))


# The CLI in a child process that commits after every batch and kills itself right after its third commit.
KILLED_AFTER_THREE_COMMITS = cli_killed_after_commits(
    3,
    setup="import galsearch.embedder.embed\n"
    'sys.modules["galsearch.embedder.embed"].COMMIT_SECONDS = 0.0  # the module, not the function',
)


@pytest.mark.slow
def test_killed_embed_process_resumes(tmp_path):
    n, batch = 160, 16
    ingest(write_blob_npz(tmp_path / "c.npz", n, size=64), tmp_path / "c", progress=False)
    arguments = ["embed", str(tmp_path / "c"), "--encoder", TINY_ENCODER]
    arguments += ["--device", "cpu", "--batch-size", str(batch), "--quiet"]
    killed = subprocess.run([sys.executable, "-c", KILLED_AFTER_THREE_COMMITS, *arguments], timeout=300)
    assert killed.returncode == -signal.SIGKILL
    done = open_collection(tmp_path / "c").counts["embedded"]
    assert done == 3 * batch  # what was committed before the kill, and nothing half-written
    resumed = [sys.executable, "-m", "galsearch.ui.cli", *arguments]
    assert subprocess.run(resumed, timeout=300).returncode == 0
    coll = open_collection(tmp_path / "c")
    assert coll.counts["embedded"] == n
    _assert_rows_match_a_fresh_run(coll, slice(done - 8, done + 8))


def test_encoder_of_reloads_the_collections_encoder(blob_collection):
    embed(blob_collection, TINY_ENCODER, device="cpu", progress=False)
    encoder = encoder_of(open_collection(blob_collection.path), "cpu")
    np.testing.assert_allclose(
        encoder.embed(blob_collection.images[:3]),
        open_collection(blob_collection.path).embeddings[:3],
        rtol=1e-4,
        atol=1e-5,
    )
