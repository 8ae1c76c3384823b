"""Training encoders: augmentations, falling loss, self-describing checkpoints, resume after a kill."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import write_blob_npz
from safetensors import safe_open

from embedder import GalsearchError, ingest, load_encoder, open_collection
from embedder.augment import Augment
from embedder.pretrain import pretrain

TINY = {
    "architecture": "test_convnext",
    "input_size": 32,
    "batch_size": 32,
    "device": "cpu",
    "progress": False,
}


@pytest.fixture
def collection(tmp_path):
    ingest(write_blob_npz(tmp_path / "b.npz", 128), tmp_path / "c", progress=False)
    return tmp_path / "c"


def test_augment_keeps_colour_range_and_is_reproducible():
    grey = torch.rand(6, 1, 32, 32).expand(-1, 3, -1, -1).contiguous()
    noiseless = Augment(max_noise=0.0)(grey, torch.Generator().manual_seed(1))
    torch.testing.assert_close(noiseless[:, 0], noiseless[:, 1])  # no hue change: grey stays grey
    torch.testing.assert_close(noiseless[:, 0], noiseless[:, 2])  # (noise alone is independent per band)
    views = Augment()(grey, torch.Generator().manual_seed(1))
    assert views.shape == grey.shape and views.min() >= 0 and views.max() <= 1
    again = Augment()(grey, torch.Generator().manual_seed(1))
    torch.testing.assert_close(views, again)
    assert not torch.allclose(views, Augment()(grey, torch.Generator().manual_seed(2)))


@pytest.mark.parametrize("method", ["ssl", "supervised", "both"])
def test_loss_falls_and_checkpoint_reloads_identically(tmp_path, collection, method):
    report = pretrain([collection], tmp_path / "enc.safetensors", method=method, epochs=6, **TINY)
    first, last = report.log[0]["loss"], report.log[-1]["loss"]
    assert last < 0.8 * first, f"{method}: loss {first:.3f} -> {last:.3f}"
    encoder = load_encoder(str(tmp_path / "enc.safetensors"), "cpu")
    assert (encoder.architecture, encoder.input_size) == ("test_convnext", 32)
    images = open_collection(collection).images[:8]
    np.testing.assert_array_equal(encoder.embed(images), report.encoder.embed(images))
    with safe_open(str(tmp_path / "enc.safetensors"), framework="pt") as f:
        assert f'"method": "{method}"' in f.metadata()["galsearch"]
    assert (tmp_path / "enc.safetensors.log.csv").read_text().startswith("epoch,step,loss")


def test_supervised_training_separates_the_classes(tmp_path, collection):
    report = pretrain([collection], tmp_path / "enc.safetensors", method="supervised", epochs=6, **TINY)
    coll = open_collection(collection)
    features = report.encoder.embed(coll.images)
    labels = coll.catalog["label"].to_numpy()
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    assert (labels[similarity.argmax(axis=1)] == labels).mean() > 0.9


def test_bad_requests_are_refused(tmp_path, collection):
    with pytest.raises(GalsearchError, match="needs labels"):
        pretrain([collection], tmp_path / "e.safetensors", method="supervised", label_column="nope", **TINY)
    with pytest.raises(GalsearchError, match="safetensors"):
        pretrain([collection], tmp_path / "e.pt", **TINY)
    pretrain([collection], tmp_path / "e.safetensors", epochs=1, **TINY)
    with pytest.raises(GalsearchError, match="--restart"):
        pretrain([collection], tmp_path / "e.safetensors", epochs=2, **TINY)
    assert pretrain([collection], tmp_path / "e.safetensors", epochs=2, restart=True, **TINY).steps == 8


@pytest.mark.slow
def test_killed_training_resumes_to_the_same_weights(tmp_path, collection):
    out = tmp_path / "killed.safetensors"
    command = [
        sys.executable,
        "-m",
        "ui.cli",
        "pretrain",
        str(collection),
        "--out",
        str(out),
        "--arch",
        "test_convnext",
        "--input-size",
        "32",
        "--batch-size",
        "32",
        "--epochs",
        "20",
        "--device",
        "cpu",
        "--quiet",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    state = out.with_name(out.name + ".state.pt")
    deadline = time.monotonic() + 120
    while not state.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not out.exists(), "killed before the end"
    resumed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed at epoch" in resumed.stdout
    reference = pretrain([collection], tmp_path / "straight.safetensors", epochs=20, **TINY)
    images = open_collection(collection).images[:16]
    np.testing.assert_allclose(
        load_encoder(str(out), "cpu").embed(images), reference.encoder.embed(images), rtol=1e-4, atol=1e-5
    )
