"""Embedding, ingest, sharded search and k-NN anomaly scores on a Dask cluster of four local processes:
the same results as one process gives, after a worker is killed (Dask runs its partition again) and after
the driver is killed (a re-run continues after the last committed partition). Everything listens on
127.0.0.1 only."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from conftest import TINY_ENCODER, blob_images, cli_killed_after_commits, write_blob_npz
from distributed import Client, LocalCluster
from distributed.diagnostics.plugin import WorkerPlugin
from PIL import Image
from test_bands_encoders import band_collection

from galsearch.anomaly import score_collection
from galsearch.embedder import EncoderError, embed, ingest, load_encoder, open_collection
from galsearch.embedder.band_mixer import recorded_mixer
from galsearch.embedder.distributed import dask_client, kept_environment
from galsearch.index import build_index, load_index

ROWS, PARTITION, BATCH = 64, 16, 16
WORKERS = 4


@pytest.fixture(scope="module")
def cluster() -> str:
    """The address of a four-process Dask cluster on 127.0.0.1, shared by this module's tests (the
    environment of the test process kept as it was, as galsearch's own local clusters keep it)."""
    with (
        kept_environment(),
        LocalCluster(
            n_workers=WORKERS, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
        ) as local,
    ):
        yield local.scheduler_address


@pytest.fixture
def two_copies(tmp_path: Path) -> tuple[Path, Path]:
    """Two identical unembedded collections of ROWS galaxies."""
    source = write_blob_npz(tmp_path / "blobs.npz", ROWS)
    ingest(source, tmp_path / "serial", progress=False)
    shutil.copytree(tmp_path / "serial", tmp_path / "dask")
    return tmp_path / "serial", tmp_path / "dask"


def assert_same_embeddings(serial: Path, distributed: Path) -> None:
    a, b = open_collection(serial), open_collection(distributed)
    assert a.encoder == b.encoder and b.counts["embedded"] == len(b)
    np.testing.assert_allclose(b.embeddings, a.embeddings, rtol=1e-5, atol=1e-5)


def embed_serially(path: Path) -> None:
    embed(path, TINY_ENCODER, batch_size=BATCH, device="cpu", progress=False)


def test_a_cluster_embeds_as_one_process_does(cluster, two_copies):
    serial, distributed = two_copies
    embed_serially(serial)
    with Client(cluster) as client:
        assert len(client.nthreads()) == WORKERS
    report = embed(
        distributed, TINY_ENCODER, batch_size=BATCH, device="cpu", progress=False, dask=cluster,
        partition_rows=PARTITION,
    )  # fmt: skip
    assert (report.embedded, report.resumed_from, report.encoder) == (ROWS, 0, TINY_ENCODER)
    assert_same_embeddings(serial, distributed)


def test_a_cluster_folds_the_band_mixer_measured_here(cluster, tmp_path):
    """An N-band collection: the workers adapt the encoder through the mixer this process measured."""
    serial, distributed = band_collection(tmp_path / "serial", n=32), band_collection(tmp_path / "dask", n=32)
    embed(serial.path, "default", batch_size=BATCH, device="cpu", progress=False)
    embed(distributed.path, "default", device="cpu", progress=False, dask=cluster, partition_rows=PARTITION)
    assert_same_embeddings(serial.path, distributed.path)
    assert recorded_mixer(open_collection(distributed.path).encoder) is not None


@pytest.fixture
def sharded(two_copies) -> Path:
    """An embedded collection with an index of four shards, one per worker."""
    path = two_copies[0]
    embed_serially(path)
    build_index(open_collection(path), shards=WORKERS, progress=False)
    return path


def test_shards_searched_on_the_workers_answer_as_threads_here_do(cluster, sharded):
    coll = open_collection(sharded)
    queries = coll.embedding_rows(0, 8)
    here, there = load_index(coll), load_index(coll, dask=cluster)
    try:
        for k in (1, 10, ROWS):
            expected, found = here.search(queries, k), there.search(queries, k)
            np.testing.assert_array_equal(found[1], expected[1])
            np.testing.assert_array_equal(found[0], expected[0])
    finally:
        here.close()
        there.close()


def test_knn_scores_on_the_workers_equal_those_of_one_process(cluster, sharded, tmp_path):
    shutil.copytree(sharded, tmp_path / "copy")
    serial = score_collection(open_collection(sharded), via="index", batch_rows=PARTITION, progress=False)
    options = dict(via="index", batch_rows=PARTITION // 2, progress=False)  # 8 tasks over 4 workers
    distributed = score_collection(open_collection(tmp_path / "copy"), dask=cluster, **options)
    np.testing.assert_array_equal(distributed.to_numpy(), serial.to_numpy())


def test_nothing_left_to_embed_returns_before_any_cluster_is_reached(blob_collection):
    embed(blob_collection, TINY_ENCODER, device="cpu", progress=False)
    nobody = "tcp://127.0.0.1:9"  # no scheduler listens there: reaching for one would fail
    report = embed(blob_collection, TINY_ENCODER, dask=nobody, progress=False)
    assert (report.embedded, report.total) == (0, 64) and "already embedded" in report.summary()


def test_a_local_cluster_leaves_this_process_environment_as_it_was():
    before = dict(os.environ)
    with dask_client(workers=1) as client:
        assert dict(os.environ) == before  # Dask's nanny set OMP_NUM_THREADS=1 here to spawn its worker
        assert client.submit(os.environ.get, "OMP_NUM_THREADS").result() == "1"  # the worker keeps it
    assert dict(os.environ) == before


def test_a_cluster_takes_an_encoder_spec_not_an_object(blob_collection):
    with pytest.raises(EncoderError, match="spec"):
        embed(blob_collection, load_encoder(TINY_ENCODER, "cpu"), workers=2, progress=False)


# The CLI in a child process that kills itself right after committing its second partition.
KILLED_AFTER_TWO_PARTITIONS = cli_killed_after_commits(2)


@pytest.mark.slow
def test_a_killed_driver_resumes_after_its_last_committed_partition(cluster, two_copies):
    serial, distributed = two_copies
    embed_serially(serial)
    arguments = ["embed", str(distributed), "--encoder", TINY_ENCODER, "--device", "cpu", "--quiet"]
    arguments += ["--batch-size", str(BATCH), "--dask", cluster, "--partition-rows", str(PARTITION)]
    killed = subprocess.run([sys.executable, "-c", KILLED_AFTER_TWO_PARTITIONS, *arguments], timeout=300)
    assert killed.returncode == -signal.SIGKILL
    assert open_collection(distributed).counts["embedded"] == 2 * PARTITION  # a valid prefix, no more
    report = embed(
        distributed, TINY_ENCODER, batch_size=BATCH, device="cpu", progress=False, dask=cluster,
        partition_rows=PARTITION,
    )  # fmt: skip
    assert (report.resumed_from, report.embedded) == (2 * PARTITION, ROWS - 2 * PARTITION)
    assert_same_embeddings(serial, distributed)


def _killer(key_prefix: str, marker: Path) -> WorkerPlugin:
    """A worker plugin that SIGKILLs its worker process when the task ``key_prefix...`` starts, once."""

    class KillOnce(WorkerPlugin):
        name = "kill-once"

        def transition(self, key, start, finish, **kwargs):
            if finish == "executing" and str(key).startswith(key_prefix) and not marker.exists():
                marker.touch()
                os.kill(os.getpid(), signal.SIGKILL)

    return KillOnce()


@pytest.mark.slow
def test_a_killed_worker_costs_only_its_partition(cluster, two_copies, tmp_path):
    serial, distributed = two_copies
    embed_serially(serial)
    marker = tmp_path / "killed"
    with Client(cluster) as client:
        assert all(address.startswith("tcp://127.0.0.1:") for address in client.nthreads())
        client.register_plugin(_killer("_embed_partition-2-", marker))
        try:
            report = embed(
                distributed, TINY_ENCODER, batch_size=BATCH, device="cpu", progress=False, dask=cluster,
                partition_rows=PARTITION,
            )  # fmt: skip
        finally:
            client.unregister_worker_plugin("kill-once")
    assert marker.exists()  # a worker did die running the third partition
    assert report.embedded == ROWS
    assert_same_embeddings(serial, distributed)


def write_cutout_folder(folder: Path) -> Path:
    """FITS and PNG cutouts of blob galaxies, with a text file first, a duplicate id, a corrupt PNG
    and a blank image among them."""
    images, _ = blob_images(12, size=24, seed=3)
    (folder / "sub").mkdir(parents=True)
    (folder / "0-readme.txt").write_text("not an image")  # first: a new collection is shaped by the next
    for i, image in enumerate(images[:8]):
        fits.PrimaryHDU(np.moveaxis(image, -1, 0)).writeto(folder / f"g{i}.fits")
    for i, image in enumerate(images[8:], start=8):
        Image.fromarray(np.clip(image * 2, 0, 255).astype(np.uint8)).save(folder / "sub" / f"g{i}.png")
    Image.fromarray(np.zeros((24, 24, 3), np.uint8) + 7).save(folder / "sub" / "blank.png")
    Image.fromarray(images[0].astype(np.uint8)).save(folder / "g0.png")  # the id g0 again
    (folder / "sub" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return folder


def test_ingest_on_local_workers_stores_what_one_process_does(cluster, tmp_path):
    folder = write_cutout_folder(tmp_path / "cutouts")
    serial = ingest(folder, tmp_path / "serial", progress=False)
    distributed = ingest(folder, tmp_path / "dask", progress=False, workers=2, partition_rows=3)
    assert (distributed.stored, distributed.already_present) == (serial.stored, 0) == (12, 0)
    assert distributed.skipped == serial.skipped and len(serial.skipped) == 4
    a, b = open_collection(tmp_path / "serial"), open_collection(tmp_path / "dask")
    assert a.preprocessing == b.preprocessing
    np.testing.assert_array_equal(b.images, a.images)
    assert b.catalog.equals(a.catalog)
    again = ingest(folder, tmp_path / "dask", progress=False, dask=cluster, partition_rows=3)
    assert (again.stored, again.already_present) == (0, 13)  # g0.png's id is present too
    assert again.skipped == ingest(folder, tmp_path / "serial", progress=False).skipped
